// Add and Mul for training, with numpy broadcasting: the gradient of a broadcast operand is summed
// over its broadcast dimensions (a oneDNN reduction); Mul's gradients multiply by the other
// operand.
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

// Add / Mul with numpy broadcasting.
class BinaryOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const memory a = net.ViewOf(net.V(in[0]).mem, dims[0]);
    const memory b = net.ViewOf(net.V(in[1]).mem, dims[1]);
    const memory y = net.V(out).mem;
    if (dims[0] == out_dims) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    } else if (dims[1] == out_dims) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, b}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, y}});
    } else {  // both operands broadcast: expand a first (0 + a)
      net.Exec(expand, {{DNNL_ARG_SRC_0, zeros}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, expanded}});
      net.Exec(fwd, {{DNNL_ARG_SRC_0, expanded}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    }
  }
  void BuildBackward(Impl& net) override {
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      const bool full = dims[i] == out_dims;
      s.target = net.ViewOf(grads[i].mem, dims[i]);
      if (mul) {
        s.product = full ? s.target : net.NewMem(out_dims);
        dnnl::binary::desc d(dnnl::algorithm::binary_mul, PlainDesc(out_dims),
                             PlainDesc(dims[1 - i]), PlainDesc(out_dims));
        s.multiply = dnnl::binary({d, net.engine_});
      }
      if (!full) {
        dnnl::reduction::desc d(dnnl::algorithm::reduction_sum, PlainDesc(out_dims),
                                PlainDesc(dims[i]), 0.0f, 0.0f);
        s.reduce = dnnl::reduction({d, net.engine_});
      }
    }
  }
  void Backward(Impl& net) override {
    const memory dy = net.V(out).diff;
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      memory g = dy;
      if (mul) {
        net.Exec(s.multiply, {{DNNL_ARG_SRC_0, dy},
                              {DNNL_ARG_SRC_1, net.ViewOf(net.V(in[1 - i]).mem, dims[1 - i])},
                              {DNNL_ARG_DST, s.product}});
        g = s.product;
      }
      if (s.reduce) {
        net.Exec(s.reduce, {{DNNL_ARG_SRC, g}, {DNNL_ARG_DST, s.target}});
      } else if (!mul) {
        net.Copy(dy, s.target);
      }
    }
  }

  struct Slot {
    memory target, product;
    dnnl::binary multiply;
    dnnl::reduction reduce;
  };
  bool mul = false;
  Dims dims[2], out_dims;  // operand dims aligned to the output rank
  dnnl::binary fwd, expand;
  memory zeros, expanded;
  Slot slots[2];
};

}  // namespace

absl::Status Impl::CompileBinary(const Node& n) {
  if (n.op == OpKind::kSub || n.op == OpKind::kDiv) return NotTrainable(n);
  ASSIGN_OR_RETURN(int a_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(int b_id, Get(n.inputs[1], n));
  Shape as, bs;
  ASSIGN_OR_RETURN(const Shape out,
                   BroadcastShapes(n, vals_[a_id].shape, vals_[b_id].shape, &as, &bs));
  auto op = std::make_unique<BinaryOp>(n);
  op->mul = n.op == OpKind::kMul;
  op->dims[0] = DnnlDims(as);
  op->dims[1] = DnnlDims(bs);
  op->out_dims = DnnlDims(out);
  const dnnl::algorithm alg =
      op->mul ? dnnl::algorithm::binary_mul : dnnl::algorithm::binary_add;
  const memory::desc od = PlainDesc(op->out_dims);
  if (op->dims[0] == op->out_dims) {
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[1]), od}, engine_});
  } else if (op->dims[1] == op->out_dims) {
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[0]), od}, engine_});
  } else {
    op->zeros = NewMem(op->out_dims);
    std::memset(op->zeros.get_data_handle(), 0, od.get_size());
    op->expanded = NewMem(op->out_dims);
    op->expand = dnnl::binary(
        {{dnnl::algorithm::binary_add, od, PlainDesc(op->dims[0]), od}, engine_});
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[1]), od}, engine_});
  }
  op->in = {a_id, b_id};
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
