// Add, Sub, Mul and Div for training, with numpy broadcasting: the gradient of a broadcast operand
// is summed over its broadcast dimensions (a oneDNN reduction); each operation's local derivative
// is one oneDNN binary or eltwise primitive over the output gradient.
#include <cstdint>
#include <cstring>
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

// Add, Sub, Mul and Div with numpy broadcasting. Forward: one oneDNN binary with the full-size
// operand first (Add and Mul may swap theirs; otherwise the first operand is expanded to the
// output shape). Backward, per operand i that needs it: dy, -dy (Sub's second), dy * other (Mul),
// dy / b (Div's first) or -dy * y / b (Div's second), summed over the dimensions operand i was
// broadcast along.
class BinaryOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const memory a = net.ViewOf(net.V(in[0]).mem, dims[0]);
    const memory b = net.ViewOf(net.V(in[1]).mem, dims[1]);
    const memory y = net.V(out).mem;
    if (dims[0] == out_dims) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    } else if (dims[1] == out_dims && commutes()) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, b}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, y}});
    } else {  // a is broadcast: expand it first (0 + a)
      net.Exec(expand, {{DNNL_ARG_SRC_0, zeros}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, expanded}});
      net.Exec(fwd, {{DNNL_ARG_SRC_0, expanded}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    }
  }
  void BuildBackward(Impl& net) override {
    const memory dy = net.V(out).diff;
    const memory::desc od = PlainDesc(out_dims);
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      const bool full = dims[i] == out_dims;
      s.target = net.ViewOf(grads[i].mem, dims[i]);
      const memory scratch = full ? s.target : net.NewMem(out_dims);
      const memory other = net.ViewOf(net.V(in[1 - i]).mem, dims[1 - i]);
      // scratch = dy (alg) src1, with optional post-ops.
      auto binary = [&](dnnl::algorithm alg, const memory& src1, const dnnl::primitive_attr& attr) {
        s.compute = dnnl::binary({{alg, od, src1.get_desc(), od}, attr, net.engine_});
        s.args = {{DNNL_ARG_SRC_0, dy}, {DNNL_ARG_SRC_1, src1}, {DNNL_ARG_DST, scratch}};
      };
      if (alg == dnnl::algorithm::binary_mul) {
        binary(dnnl::algorithm::binary_mul, other, {});
      } else if (alg == dnnl::algorithm::binary_sub && i == 1) {
        dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference,
                                      dnnl::algorithm::eltwise_linear, od, -1.0f, 0.0f);
        s.compute = dnnl::eltwise_forward({d, net.engine_});
        s.args = {{DNNL_ARG_SRC, dy}, {DNNL_ARG_DST, scratch}};
      } else if (alg == dnnl::algorithm::binary_div && i == 0) {
        binary(dnnl::algorithm::binary_div, other, {});
      } else if (alg == dnnl::algorithm::binary_div) {  // d(a / b) / db = -y / b
        const memory b = net.ViewOf(net.V(in[1]).mem, dims[1]);
        dnnl::post_ops ops;
        ops.append_binary(dnnl::algorithm::binary_div, b.get_desc());
        AppendEltwise(&ops, dnnl::algorithm::eltwise_linear, -1.0f, 0.0f);
        dnnl::primitive_attr attr;
        attr.set_post_ops(ops);
        binary(dnnl::algorithm::binary_mul, net.V(out).mem, attr);
        s.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = b;
      }
      s.gradient = s.compute ? scratch : dy;
      if (!full) {
        dnnl::reduction::desc d(dnnl::algorithm::reduction_sum, od, PlainDesc(dims[i]), 0.0f,
                                0.0f);
        s.reduce = dnnl::reduction({d, net.engine_});
      }
    }
  }
  void Backward(Impl& net) override {
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      if (s.compute) net.Exec(s.compute, s.args);
      if (s.reduce) {
        net.Exec(s.reduce, {{DNNL_ARG_SRC, s.gradient}, {DNNL_ARG_DST, s.target}});
      } else if (!s.compute) {
        net.Copy(s.gradient, s.target);
      }
    }
  }
  bool commutes() const {
    return alg == dnnl::algorithm::binary_add || alg == dnnl::algorithm::binary_mul;
  }

  struct Slot {
    memory target;    // the gradient of operand i, with its (aligned) dims
    memory gradient;  // the output-size gradient before the broadcast sum
    dnnl::primitive compute;  // dy -> gradient, none when it is dy itself
    Args args;
    dnnl::reduction reduce;
  };
  dnnl::algorithm alg = dnnl::algorithm::binary_add;
  Dims dims[2], out_dims;  // operand dims aligned to the output rank
  dnnl::binary fwd, expand;
  memory zeros, expanded;
  Slot slots[2];
};

}  // namespace

absl::Status Impl::CompileBinary(const Node& n) {
  ASSIGN_OR_RETURN(int a_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(int b_id, Get(n.inputs[1], n));
  Shape as, bs;
  ASSIGN_OR_RETURN(const Shape out,
                   BroadcastShapes(n, vals_[a_id].shape, vals_[b_id].shape, &as, &bs));
  auto op = std::make_unique<BinaryOp>(n);
  switch (n.op) {
    case OpKind::kMul: op->alg = dnnl::algorithm::binary_mul; break;
    case OpKind::kSub: op->alg = dnnl::algorithm::binary_sub; break;
    case OpKind::kDiv: op->alg = dnnl::algorithm::binary_div; break;
    default: op->alg = dnnl::algorithm::binary_add; break;
  }
  op->dims[0] = DnnlDims(as);
  op->dims[1] = DnnlDims(bs);
  op->out_dims = DnnlDims(out);
  const memory::desc od = PlainDesc(op->out_dims);
  if (op->dims[0] == op->out_dims) {
    op->fwd = dnnl::binary({{op->alg, od, PlainDesc(op->dims[1]), od}, engine_});
  } else if (op->dims[1] == op->out_dims && op->commutes()) {
    op->fwd = dnnl::binary({{op->alg, od, PlainDesc(op->dims[0]), od}, engine_});
  } else {
    op->zeros = NewMem(op->out_dims);
    std::memset(op->zeros.get_data_handle(), 0, od.get_size());
    op->expanded = NewMem(op->out_dims);
    op->expand = dnnl::binary(
        {{dnnl::algorithm::binary_add, od, PlainDesc(op->dims[0]), od}, engine_});
    op->fwd = dnnl::binary({{op->alg, od, PlainDesc(op->dims[1]), od}, engine_});
  }
  op->in = {a_id, b_id};
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
