// Activations for training: standalone Relu, LeakyRelu, Clip, Sigmoid, ... nodes and the
// activations fused into a Conv/Gemm/MatMul layer (its "tail", followed by the output
// quantization hook), each a oneDNN eltwise forward_training / backward pair.
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

// ---------------------------------------------------------------------------------------------

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

}  // namespace

void Impl::AddLayerTail(const Node& n, int pre) {
  int cur = pre;
  for (size_t i = 0; i < n.post_ops.size(); ++i) {
    const PostOp& p = n.post_ops[i];
    auto op = std::make_unique<EltwiseOp>(p.source_node, std::string(OpKindName(p.op)));
    op->alg = PostOpAlgorithm(p.op);
    std::tie(op->alpha, op->beta) = EltwiseParams(p.op, p.alpha, p.beta);
    const Val& x = vals_[cur];
    const std::string name =
        i + 1 == n.post_ops.size() ? n.outputs[0] : absl::StrCat(n.name, "/post_op", i);
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, op->alg, x.mem.get_desc(),
                                  op->alpha, op->beta);
    op->fwd_pd = dnnl::eltwise_forward::primitive_desc(d, engine_);
    op->fwd = dnnl::eltwise_forward(op->fwd_pd);
    op->in = {cur};
    const Shape shape = x.shape;
    op->out = AddVal(name, shape);
    cur = op->out;
    ops_.push_back(std::move(op));
  }
  if (options_.quant.outputs) AddOutputHook(n, cur);
}

absl::Status Impl::CompileEltwise(const Node& n) {
  if (n.op == OpKind::kHardSigmoid) return NotTrainable(n);
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  auto op = std::make_unique<EltwiseOp>(n);
  op->alg = PostOpAlgorithm(n.op);
  std::tie(op->alpha, op->beta) = EltwiseParams(n.op, n.alpha, n.beta);
  dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, op->alg,
                                vals_[x_id].mem.get_desc(), op->alpha, op->beta);
  op->fwd_pd = dnnl::eltwise_forward::primitive_desc(d, engine_);
  op->fwd = dnnl::eltwise_forward(op->fwd_pd);
  op->in = {x_id};
  const Shape shape = vals_[x_id].shape;
  op->out = AddVal(n.outputs[0], shape);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
