// Operations that move data without arithmetic, for training: Concat (backward copies each
// input's part of the output gradient) and the views Flatten, Reshape, Squeeze, Unsqueeze and
// Identity (the output aliases the input; backward copies the gradient).
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

class ConcatOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    Args args = {{DNNL_ARG_DST, net.V(out).mem}};
    for (size_t i = 0; i < in.size(); ++i) {
      args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] = net.V(in[i]).mem;
    }
    net.Exec(fwd, args);
  }
  void BuildBackward(Impl& net) override {
    const memory::desc out_desc = net.V(out).mem.get_desc();
    int64_t offset = 0;
    parts.resize(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const Dims d = net.V(in[i]).mem.get_desc().dims();
      if (grads[i].needed()) {
        Dims offsets(d.size(), 0);
        offsets[axis] = offset;
        parts[i] = memory(out_desc.submemory_desc(d, offsets), net.engine_,
                          net.V(out).diff.get_data_handle());
        copies.push_back({dnnl::reorder(parts[i], grads[i].mem), i});
      }
      offset += d[axis];
    }
  }
  void Backward(Impl& net) override {
    for (auto& [reorder, i] : copies) {
      net.Exec(reorder, {{DNNL_ARG_FROM, parts[i]}, {DNNL_ARG_TO, grads[i].mem}});
    }
  }

  int axis = 0;
  dnnl::concat fwd;
  std::vector<memory> parts;
  std::vector<std::pair<dnnl::reorder, size_t>> copies;
};

// Flatten, Reshape, Squeeze, Unsqueeze, Identity: the output aliases the input's data.
class ViewOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {}
  void Backward(Impl& net) override { net.Copy(net.V(out).diff, grads[0].mem); }
};

}  // namespace

absl::Status Impl::CompileConcat(const Node& n) {
  std::vector<int> ids;
  for (const std::string& name : n.inputs) {
    ASSIGN_OR_RETURN(int id, Get(name, n));
    ids.push_back(id);
  }
  std::vector<Shape> shapes;
  std::vector<memory::desc> descs;
  for (int id : ids) {
    shapes.push_back(vals_[id].shape);
    descs.push_back(vals_[id].mem.get_desc());
  }
  int64_t axis = 0;
  ASSIGN_OR_RETURN(const Shape out, ConcatOutputShape(n, shapes, &axis));
  auto op = std::make_unique<ConcatOp>(n);
  op->axis = static_cast<int>(axis);
  op->fwd = dnnl::concat(dnnl::concat::primitive_desc(PlainDesc(DnnlDims(out)),
                                                      static_cast<int>(axis), descs, engine_));
  op->in = ids;
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompileView(const Node& n) {
  // The importer maps Dropout to Identity; training applies it.
  if (n.op == OpKind::kIdentity && n.onnx_op == "Dropout") return CompileDropout(n);
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(const Shape out, ViewOutputShape(n, vals_[x_id].shape));
  auto op = std::make_unique<ViewOp>(n);
  op->in = {x_id};
  op->out = AddVal(n.outputs[0], out, ViewOf(vals_[x_id].mem, DnnlDims(out)));
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
