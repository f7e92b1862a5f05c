// Activations for training: standalone Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid (linear then
// clip), HardSwish and Tanh nodes, and the activations fused into a Conv/Gemm/MatMul layer (its
// "tail"), each a oneDNN eltwise forward_training / backward pair.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

class EltwiseOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    net.Exec(fwd, {{DNNL_ARG_SRC, net.V(in[0]).mem}, {DNNL_ARG_DST, net.V(out).mem}});
  }
  void BuildBackward(Impl& net) override {
    const memory::desc d = net.V(in[0]).mem.get_desc();
    dnnl::eltwise_backward::desc bd(alg, d, d, alpha, beta);
    bwd = dnnl::eltwise_backward({bd, net.engine_, fwd_pd});
  }
  void Backward(Impl& net) override {
    net.Exec(bwd, {{DNNL_ARG_SRC, net.V(in[0]).mem}, {DNNL_ARG_DIFF_DST, net.V(out).diff},
                   {DNNL_ARG_DIFF_SRC, grads[0].mem}});
  }

  dnnl::algorithm alg = dnnl::algorithm::eltwise_relu;
  float alpha = 0, beta = 0;
  dnnl::eltwise_forward::primitive_desc fwd_pd;
  dnnl::eltwise_forward fwd;
  dnnl::eltwise_backward bwd;
};

// Appends an eltwise step `alg` reading value `x` and writing a new value `name`; returns its id.
int AddEltwise(Impl& net, const std::string& node, const std::string& onnx_op,
               dnnl::algorithm alg, float alpha, float beta, int x, const std::string& name) {
  auto op = std::make_unique<EltwiseOp>(node, onnx_op);
  op->alg = alg;
  op->alpha = alpha;
  op->beta = beta;
  dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, alg, net.V(x).mem.get_desc(),
                                alpha, beta);
  op->fwd_pd = dnnl::eltwise_forward::primitive_desc(d, net.engine_);
  op->fwd = dnnl::eltwise_forward(op->fwd_pd);
  op->in = {x};
  const Shape shape = net.V(x).shape;
  op->out = net.AddVal(name, shape);
  const int out = op->out;
  net.ops_.push_back(std::move(op));
  return out;
}

}  // namespace

void Impl::AddLayerTail(const Node& n, int pre) {
  int cur = pre;
  for (size_t i = 0; i < n.post_ops.size(); ++i) {
    const PostOp& p = n.post_ops[i];
    const auto [alpha, beta] = EltwiseParams(p.op, p.alpha, p.beta);
    const std::string name =
        i + 1 == n.post_ops.size() ? n.outputs[0] : absl::StrCat(n.name, "/post_op", i);
    cur = AddEltwise(*this, p.source_node, std::string(OpKindName(p.op)), PostOpAlgorithm(p.op),
                     alpha, beta, cur, name);
  }
}

absl::Status Impl::CompileEltwise(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  if (n.op == OpKind::kHardSigmoid) {  // clip(alpha * x + beta, 0, 1): two steps
    const int linear = AddEltwise(*this, n.name, n.onnx_op, dnnl::algorithm::eltwise_linear,
                                  n.alpha, n.beta, x_id, n.name + "/linear");
    AddEltwise(*this, n.name, n.onnx_op, dnnl::algorithm::eltwise_clip, 0.0f, 1.0f, linear,
               n.outputs[0]);
    return absl::OkStatus();
  }
  const auto [alpha, beta] = EltwiseParams(n.op, n.alpha, n.beta);
  AddEltwise(*this, n.name, n.onnx_op, PostOpAlgorithm(n.op), alpha, beta, x_id, n.outputs[0]);
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
