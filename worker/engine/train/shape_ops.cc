// Operations that move data without arithmetic, for training: Concat (backward copies each
// input's part of the output gradient), the views Flatten, Reshape, Squeeze, Unsqueeze and
// Identity (the output aliases the input; backward copies the gradient), and Pad, Slice (also
// Split's parts) and Transpose as gathers through an index map built at compile time (backward
// adds each output gradient to the input element it came from).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/constant_folding.h"
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

// Pad, Slice and Transpose: output element j is input element index[j], or `fill` where index[j]
// is -1 (constant padding). Backward scatters: dx[index[j]] += dy[j] (several j share an input
// element in reflect and edge padding, so that sum runs serially; otherwise in parallel).
class GatherOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    net.Sync();
    const float* x = Data(net.V(in[0]).mem);
    float* y = Data(net.V(out).mem);
    const int64_t* idx = index.data();
    const int64_t count = static_cast<int64_t>(index.size());
    const float value = fill;
#pragma omp parallel for if (count > 32768)
    for (int64_t j = 0; j < count; ++j) y[j] = idx[j] < 0 ? value : x[idx[j]];
  }
  void Backward(Impl& net) override {
    net.Sync();
    const float* dy = Data(net.V(out).diff);
    float* dx = Data(grads[0].mem);
    std::fill(dx, dx + NumElements(net.V(in[0]).shape), 0.0f);
    const int64_t* idx = index.data();
    const int64_t count = static_cast<int64_t>(index.size());
    if (injective) {
#pragma omp parallel for if (count > 32768)
      for (int64_t j = 0; j < count; ++j) {
        if (idx[j] >= 0) dx[idx[j]] = dy[j];
      }
    } else {
      for (int64_t j = 0; j < count; ++j) {
        if (idx[j] >= 0) dx[idx[j]] += dy[j];
      }
    }
  }

  std::vector<int64_t> index;
  float fill = 0.0f;
  bool injective = true;
};

}  // namespace

namespace train_internal {

std::vector<int64_t> Strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) {
    strides[d] = strides[d + 1] * shape[d + 1];
  }
  return strides;
}

std::vector<int64_t> IndexMap(const Shape& out, const std::vector<std::vector<int64_t>>& offsets) {
  const size_t rank = out.size();
  std::vector<int64_t> index(NumElements(out));
  std::vector<int64_t> coord(rank, 0);
  for (int64_t& entry : index) {
    int64_t sum = 0;
    for (size_t d = 0; d < rank && sum >= 0; ++d) {
      const int64_t o = offsets[d][coord[d]];
      sum = o < 0 ? -1 : sum + o;
    }
    entry = sum;
    for (int d = static_cast<int>(rank) - 1; d >= 0; --d) {  // next coordinate
      if (++coord[d] < out[d]) break;
      coord[d] = 0;
    }
  }
  return index;
}

}  // namespace train_internal

absl::Status Impl::AddGather(const Node& n, int x_id, const Shape& out,
                             const std::vector<std::vector<int64_t>>& offsets, float fill,
                             bool injective) {
  if (NumElements(out) == 0) return NodeError(n, "the output is empty");
  auto op = std::make_unique<GatherOp>(n);
  op->index = IndexMap(out, offsets);
  op->fill = fill;
  op->injective = injective;
  op->in = {x_id};
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompilePad(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape in = vals_[x_id].shape;
  const size_t rank = in.size();
  if (n.pads.size() != 2 * rank) {
    return NodeError(n, absl::StrCat(n.pads.size(), " pads for an input of rank ", rank));
  }
  if (n.pad_mode != "constant" && n.pad_mode != "reflect" && n.pad_mode != "edge") {
    return NodeError(n, absl::StrCat("unknown pad mode '", n.pad_mode, "'"));
  }
  const std::vector<int64_t> strides = Strides(in);
  Shape out = in;
  std::vector<std::vector<int64_t>> offsets(rank);
  for (size_t d = 0; d < rank; ++d) {
    const int64_t before = n.pads[d], after = n.pads[rank + d];
    out[d] += before + after;
    if (out[d] < 0) return NodeError(n, "negative pads remove more than the input holds");
    const bool reflect = n.pad_mode == "reflect";
    if ((before > 0 || after > 0) && n.pad_mode != "constant" &&
        (in[d] == 0 || (reflect && (before >= in[d] || after >= in[d])))) {
      return NodeError(n, absl::StrCat(n.pad_mode, " padding of ", before, "/", after,
                                       " does not fit dimension ", d, " of size ", in[d]));
    }
    for (int64_t o = 0; o < out[d]; ++o) {
      int64_t c = o - before;
      if (c < 0 || c >= in[d]) {
        if (n.pad_mode == "constant") {
          offsets[d].push_back(-1);
          continue;
        }
        if (n.pad_mode == "edge") {
          c = c < 0 ? 0 : in[d] - 1;
        } else {  // reflect, without repeating the edge
          c = c < 0 ? -c : 2 * (in[d] - 1) - c;
        }
      }
      offsets[d].push_back(c * strides[d]);
    }
  }
  return AddGather(n, x_id, out, offsets, n.alpha, n.pad_mode == "constant");
}

absl::Status Impl::CompileSlice(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape in = vals_[x_id].shape;
  absl::StatusOr<std::vector<SliceRange>> ranges =
      ResolveSlice(in, n.starts, n.ends, n.axes, n.steps);
  if (!ranges.ok()) return NodeError(n, std::string(ranges.status().message()));
  const std::vector<int64_t> strides = Strides(in);
  Shape out;
  std::vector<std::vector<int64_t>> offsets;
  for (size_t d = 0; d < ranges->size(); ++d) {
    const SliceRange& r = (*ranges)[d];
    out.push_back(r.count);
    offsets.emplace_back();
    for (int64_t k = 0; k < r.count; ++k) offsets[d].push_back((r.start + k * r.step) * strides[d]);
  }
  return AddGather(n, x_id, out, offsets, 0.0f, true);
}

absl::Status Impl::CompileTranspose(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape in = vals_[x_id].shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  std::vector<int64_t> perm = n.axes;
  if (perm.empty()) {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < rank; ++i) {
    if (static_cast<int64_t>(sorted.size()) != rank || sorted[i] != i) {
      return NodeError(n, absl::StrCat("perm ", ShapeToString(perm),
                                       " is not a permutation of rank ", rank));
    }
  }
  const std::vector<int64_t> strides = Strides(in);
  Shape out(rank);
  std::vector<std::vector<int64_t>> offsets(rank);
  for (int64_t d = 0; d < rank; ++d) {  // output dimension d is input dimension perm[d]
    out[d] = in[perm[d]];
    for (int64_t k = 0; k < out[d]; ++k) offsets[d].push_back(k * strides[perm[d]]);
  }
  return AddGather(n, x_id, out, offsets, 0.0f, true);
}

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
