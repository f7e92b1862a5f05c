#include "worker/engine/constant_folding.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {
namespace {

absl::Status FoldError(const onnx::NodeProto& node, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("node '", node.name(), "' (", node.op_type(),
                                                 "): ", what));
}

// Folded tensors hold at most this many elements (512 MiB of float32): a model of a few bytes must
// not make the importer allocate gigabytes (ConstantOfShape, Expand, Range, broadcasting). The
// largest layer of common CNNs (VGG's first fully connected weights, 103 M) fits.
constexpr int64_t kMaxFoldedElements = int64_t{1} << 27;

absl::Status CheckFoldedShape(const onnx::NodeProto& node, const Shape& shape) {
  if (CheckedNumElements(shape, kMaxFoldedElements)) return absl::OkStatus();
  return FoldError(node, absl::StrCat("its result ", ShapeToString(shape), " would exceed ",
                                      kMaxFoldedElements, " elements"));
}

const onnx::AttributeProto* FindAttr(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}
int64_t IntAttr(const onnx::NodeProto& node, const std::string& name, int64_t fallback) {
  const auto* a = FindAttr(node, name);
  return a ? a->i() : fallback;
}
std::optional<std::vector<int64_t>> IntsAttr(const onnx::NodeProto& node,
                                             const std::string& name) {
  const auto* a = FindAttr(node, name);
  if (!a) return std::nullopt;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

int64_t ProductOf(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end && i < s.size(); ++i) p *= s[i];
  return p;
}

std::vector<int64_t> Strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return strides;
}

absl::StatusOr<int64_t> Axis(const onnx::NodeProto& node, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return FoldError(node, absl::StrCat("axis ", axis, " is out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

// A tensor's values as int64 (float values truncated): for shape, index and axis operands.
std::vector<int64_t> AsInts(const Tensor& t) {
  if (t.dtype() == DataType::kInt64) return t.int64s();
  std::vector<int64_t> v;
  constexpr float kEdge = 9.2e18f;  // inside int64's range; beyond it, saturate (NaN: 0)
  for (float f : t.floats()) {
    v.push_back(std::isnan(f)     ? 0
                : f >= kEdge      ? std::numeric_limits<int64_t>::max()
                : f <= -kEdge     ? std::numeric_limits<int64_t>::min()
                                  : static_cast<int64_t>(f));
  }
  return v;
}

Tensor Make(DataType dtype, Shape shape) {
  if (dtype == DataType::kFloat) return Tensor::Float(std::move(shape));
  const int64_t n = NumElements(shape);
  return Tensor::Int64(std::move(shape), std::vector<int64_t>(n, 0));
}

// Calls f(data-of-src, data-of-dst) with the element type of `src`.
template <typename F>
void WithData(const Tensor& src, Tensor& dst, F f) {
  if (src.dtype() == DataType::kFloat) {
    f(src.floats().data(), dst.floats().data());
  } else {
    f(src.int64s().data(), dst.int64s().data());
  }
}

// Gathers `src` at output index positions: out[i] = src[source_index(i)].
Tensor Remap(const Tensor& src, Shape out_shape, const std::function<int64_t(int64_t)>& index) {
  Tensor out = Make(src.dtype(), std::move(out_shape));
  const int64_t n = out.num_elements();
  WithData(src, out, [&](const auto* s, auto* d) {
    for (int64_t i = 0; i < n; ++i) d[i] = s[index(i)];
  });
  return out;
}

absl::StatusOr<Shape> Broadcast(const onnx::NodeProto& node, const std::vector<Shape>& shapes) {
  size_t rank = 0;
  for (const Shape& s : shapes) rank = std::max(rank, s.size());
  Shape out(rank, 1);
  for (const Shape& s : shapes) {
    for (size_t i = 0; i < s.size(); ++i) {
      int64_t& o = out[rank - s.size() + i];
      if (s[i] == o || s[i] == 1) continue;
      if (o != 1) {
        return FoldError(node, absl::StrCat("shapes ", ShapeToString(shapes[0]), " and ",
                                            ShapeToString(s), " do not broadcast"));
      }
      o = s[i];
    }
  }
  return out;
}

// Index into an operand of shape `s` (aligned right to `out`) for flat output index i.
int64_t BroadcastIndex(int64_t i, const Shape& out, const Shape& s) {
  int64_t index = 0, stride = 1;
  for (int d = static_cast<int>(out.size()) - 1, k = static_cast<int>(s.size()) - 1; k >= 0;
       --d, --k) {
    const int64_t coord = i % out[d];
    i /= out[d];
    if (s[k] != 1) index += coord * stride;
    stride *= s[k];
  }
  return index;
}

template <typename T>
T ApplyBinary(const std::string& op, T a, T b) {
  if (op == "Add") return a + b;
  if (op == "Sub") return a - b;
  if (op == "Mul") return a * b;
  if (op == "Equal") return a == b ? T(1) : T(0);
  // Div: integers truncate toward zero, as C++ and ONNX Runtime do.
  if constexpr (std::is_integral_v<T>) {
    return b == 0 ? T(0) : a / b;
  } else {
    return a / b;
  }
}

absl::StatusOr<Tensor> Binary(const onnx::NodeProto& node, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) return FoldError(node, "operands have different element types");
  ASSIGN_OR_RETURN(Shape out, Broadcast(node, {a.shape(), b.shape()}));
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  Tensor result = Make(a.dtype(), out);
  const std::string& op = node.op_type();
  const int64_t n = result.num_elements();
  if (a.dtype() == DataType::kFloat) {
    for (int64_t i = 0; i < n; ++i) {
      result.floats()[i] = ApplyBinary(op, a.floats()[BroadcastIndex(i, out, a.shape())],
                                       b.floats()[BroadcastIndex(i, out, b.shape())]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      result.int64s()[i] = ApplyBinary(op, a.int64s()[BroadcastIndex(i, out, a.shape())],
                                       b.int64s()[BroadcastIndex(i, out, b.shape())]);
    }
  }
  return result;
}

absl::StatusOr<Tensor> Gather(const onnx::NodeProto& node, const Tensor& data,
                              const Tensor& indices) {
  const int64_t rank = static_cast<int64_t>(data.shape().size());
  if (rank == 0) return FoldError(node, "data must have rank >= 1");
  ASSIGN_OR_RETURN(const int64_t axis, Axis(node, IntAttr(node, "axis", 0), rank));
  const Shape& ds = data.shape();
  std::vector<int64_t> idx = AsInts(indices);
  for (int64_t& k : idx) {
    if (k < -ds[axis] || k >= ds[axis]) {
      return FoldError(node, absl::StrCat("index ", k, " is out of range for dimension ", ds[axis]));
    }
    if (k < 0) k += ds[axis];
  }
  Shape out(ds.begin(), ds.begin() + axis);
  out.insert(out.end(), indices.shape().begin(), indices.shape().end());
  out.insert(out.end(), ds.begin() + axis + 1, ds.end());
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  const int64_t inner = NumElements(Shape(ds.begin() + axis + 1, ds.end()));
  const int64_t count = static_cast<int64_t>(idx.size());
  return Remap(data, out, [&](int64_t i) {
    const int64_t in = i % inner;
    const int64_t k = (i / inner) % count;
    const int64_t outer = i / inner / count;
    return (outer * ds[axis] + idx[k]) * inner + in;
  });
}

absl::StatusOr<Tensor> ReshapeTo(const onnx::NodeProto& node, Tensor t, std::vector<int64_t> dims,
                                 bool allowzero) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 0 && !allowzero) {
      if (i >= t.shape().size()) return FoldError(node, "0 in shape copies a missing dimension");
      dims[i] = t.shape()[i];
    }
    if (dims[i] == -1) {
      if (infer >= 0) return FoldError(node, "more than one -1 in shape");
      infer = static_cast<int64_t>(i);
    } else if (dims[i] < 0 ||
               (dims[i] > 0 && known > std::numeric_limits<int64_t>::max() / dims[i])) {
      return FoldError(node, absl::StrCat("cannot reshape ", ShapeToString(t.shape()), " to ",
                                          ShapeToString(dims)));
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0 && known != 0) dims[infer] = t.num_elements() / known;
  if (CheckedNumElements(dims) != t.num_elements()) {
    return FoldError(node, absl::StrCat("cannot reshape ", ShapeToString(t.shape()), " to ",
                                        ShapeToString(dims)));
  }
  t.Reshape(std::move(dims));
  return t;
}

absl::StatusOr<Tensor> Squeeze(const onnx::NodeProto& node, Tensor t,
                               const std::vector<int64_t>& given_axes) {
  const int64_t rank = static_cast<int64_t>(t.shape().size());
  std::set<int64_t> axes;
  for (int64_t a : given_axes) {
    ASSIGN_OR_RETURN(const int64_t axis, Axis(node, a, rank));
    if (t.shape()[axis] != 1) return FoldError(node, "squeezed dimension is not 1");
    axes.insert(axis);
  }
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    const bool drop = given_axes.empty() ? t.shape()[i] == 1 : axes.count(i) > 0;
    if (!drop) out.push_back(t.shape()[i]);
  }
  t.Reshape(out);
  return t;
}

absl::StatusOr<Tensor> Unsqueeze(const onnx::NodeProto& node, Tensor t,
                                 const std::vector<int64_t>& given_axes) {
  const int64_t rank = static_cast<int64_t>(t.shape().size() + given_axes.size());
  std::set<int64_t> axes;
  for (int64_t a : given_axes) {
    ASSIGN_OR_RETURN(const int64_t axis, Axis(node, a, rank));
    axes.insert(axis);
  }
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) {
    out.push_back(axes.count(i) ? 1 : t.shape()[next++]);
  }
  t.Reshape(out);
  return t;
}

absl::StatusOr<Tensor> Concat(const onnx::NodeProto& node,
                              const std::vector<const Tensor*>& parts) {
  if (parts.empty() || parts[0] == nullptr) return FoldError(node, "needs inputs");
  const Shape& first = parts[0]->shape();
  const int64_t rank = static_cast<int64_t>(first.size());
  ASSIGN_OR_RETURN(const int64_t axis, Axis(node, IntAttr(node, "axis", 0), rank));
  Shape out = first;
  out[axis] = 0;
  for (const Tensor* p : parts) {
    if (p->dtype() != parts[0]->dtype() || p->shape().size() != first.size()) {
      return FoldError(node, "inputs differ in element type or rank");
    }
    out[axis] += p->shape()[axis];
  }
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  Tensor result = Make(parts[0]->dtype(), out);
  const int64_t outer = ProductOf(first, 0, axis);
  const int64_t inner = NumElements(Shape(first.begin() + axis + 1, first.end()));
  int64_t offset = 0;
  for (const Tensor* p : parts) {
    const int64_t chunk = p->shape()[axis] * inner;
    WithData(*p, result, [&](const auto* s, auto* d) {
      for (int64_t o = 0; o < outer; ++o) {
        std::copy(s + o * chunk, s + (o + 1) * chunk, d + o * out[axis] * inner + offset);
      }
    });
    offset += chunk;
  }
  return result;
}

absl::StatusOr<Tensor> Slice(const onnx::NodeProto& node, const Tensor& data,
                             const std::vector<const Tensor*>& inputs, int64_t opset) {
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset < 10) {
    starts = IntsAttr(node, "starts").value_or(std::vector<int64_t>{});
    ends = IntsAttr(node, "ends").value_or(std::vector<int64_t>{});
    axes = IntsAttr(node, "axes").value_or(std::vector<int64_t>{});
  } else {
    if (inputs.size() < 3 || !inputs[1] || !inputs[2]) return FoldError(node, "needs starts, ends");
    starts = AsInts(*inputs[1]);
    ends = AsInts(*inputs[2]);
    if (inputs.size() > 3 && inputs[3]) axes = AsInts(*inputs[3]);
    if (inputs.size() > 4 && inputs[4]) steps = AsInts(*inputs[4]);
  }
  absl::StatusOr<std::vector<SliceRange>> ranges =
      ResolveSlice(data.shape(), starts, ends, axes, steps);
  if (!ranges.ok()) return FoldError(node, std::string(ranges.status().message()));
  Shape out;
  for (const SliceRange& r : *ranges) out.push_back(r.count);
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  Tensor result = Make(data.dtype(), out);
  WithData(data, result, [&](const auto* s, auto* d) { CopySlice(s, data.shape(), *ranges, d); });
  return result;
}

absl::StatusOr<Tensor> Cast(const onnx::NodeProto& node, const Tensor& t) {
  const int64_t to = IntAttr(node, "to", 0);
  switch (to) {
    case onnx::TensorProto::FLOAT:
    case onnx::TensorProto::DOUBLE:
    case onnx::TensorProto::FLOAT16: {
      if (t.dtype() == DataType::kFloat) return t;
      std::vector<float> v(t.int64s().begin(), t.int64s().end());
      return Tensor::Float(t.shape(), std::move(v));
    }
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::INT16:
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::BOOL: {
      std::vector<int64_t> v = AsInts(t);
      if (to == onnx::TensorProto::BOOL) {
        for (int64_t& x : v) x = x != 0;
      }
      return Tensor::Int64(t.shape(), std::move(v));
    }
    default:
      return FoldError(node, absl::StrCat("cast to element type ", to, " is not supported"));
  }
}

absl::StatusOr<Tensor> ConstantOfShape(const onnx::NodeProto& node, const Tensor& shape) {
  Shape out = AsInts(shape);
  for (int64_t d : out) {
    if (d < 0) return FoldError(node, "negative dimension");
  }
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  const auto* value = FindAttr(node, "value");
  if (value == nullptr) return Tensor::Float(out);
  ASSIGN_OR_RETURN(Tensor v, TensorFromProto(value->t()));
  if (v.num_elements() != 1) return FoldError(node, "value must hold one element");
  if (v.dtype() == DataType::kFloat) {
    return Tensor::Float(out, std::vector<float>(NumElements(out), v.floats()[0]));
  }
  return Tensor::Int64(out, std::vector<int64_t>(NumElements(out), v.int64s()[0]));
}

absl::StatusOr<Tensor> Range(const onnx::NodeProto& node, const Tensor& start, const Tensor& limit,
                             const Tensor& delta) {
  if (start.dtype() == DataType::kFloat) {
    const float s = start.floats().at(0), l = limit.floats().at(0), d = delta.floats().at(0);
    if (d == 0) return FoldError(node, "delta is 0");
    const double count = std::ceil((double{l} - s) / d);  // NaN and infinities fail the check
    if (!(count <= static_cast<double>(kMaxFoldedElements))) {
      return FoldError(node, absl::StrCat("it would produce ", count, " values (at most ",
                                          kMaxFoldedElements, ")"));
    }
    const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(count));
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = s + i * d;
    return Tensor::Float({n}, std::move(v));
  }
  const int64_t s = start.int64s().at(0), l = limit.int64s().at(0), d = delta.int64s().at(0);
  if (d == 0) return FoldError(node, "delta is 0");
  // In 128 bits: limit - start overflows int64 for extreme operands.
  const __int128 count = (static_cast<__int128>(l) - s + d + (d > 0 ? -1 : 1)) / d;
  if (count > kMaxFoldedElements) {
    return FoldError(node, absl::StrCat("it would produce more than ", kMaxFoldedElements,
                                        " values"));
  }
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(count));
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = s + i * d;
  return Tensor::Int64({n}, std::move(v));
}

absl::StatusOr<Tensor> Where(const onnx::NodeProto& node, const Tensor& cond, const Tensor& x,
                             const Tensor& y) {
  if (x.dtype() != y.dtype()) return FoldError(node, "X and Y have different element types");
  ASSIGN_OR_RETURN(Shape out, Broadcast(node, {cond.shape(), x.shape(), y.shape()}));
  RETURN_IF_ERROR(CheckFoldedShape(node, out));
  const std::vector<int64_t> c = AsInts(cond);
  Tensor result = Make(x.dtype(), out);
  const int64_t n = result.num_elements();
  for (int64_t i = 0; i < n; ++i) {
    const bool pick_x = c[BroadcastIndex(i, out, cond.shape())] != 0;
    const Tensor& from = pick_x ? x : y;
    const int64_t k = BroadcastIndex(i, out, from.shape());
    if (x.dtype() == DataType::kFloat) {
      result.floats()[i] = from.floats()[k];
    } else {
      result.int64s()[i] = from.int64s()[k];
    }
  }
  return result;
}

}  // namespace

const std::vector<std::string>& FoldableOperators() {
  static const std::vector<std::string>* kOps = [] {
    const std::set<std::string> sorted = {
      "Identity", "Cast",      "Shape", "Gather",          "Slice", "Squeeze", "Unsqueeze",
      "Concat",   "Reshape",   "Flatten", "Transpose",     "Add",   "Sub",     "Mul",
      "Div",      "Neg",       "Sqrt",  "ConstantOfShape", "Range", "Equal",   "Where",
      "Expand"};
    return new std::vector<std::string>(sorted.begin(), sorted.end());
  }();
  return *kOps;
}

bool IsFoldableOperator(const std::string& op) {
  const std::vector<std::string>& ops = FoldableOperators();
  return std::binary_search(ops.begin(), ops.end(), op);
}

absl::StatusOr<std::vector<SliceRange>> ResolveSlice(const Shape& shape,
                                                     const std::vector<int64_t>& starts,
                                                     const std::vector<int64_t>& ends,
                                                     const std::vector<int64_t>& given_axes,
                                                     const std::vector<int64_t>& given_steps) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<SliceRange> ranges(rank);
  for (int64_t i = 0; i < rank; ++i) ranges[i] = {0, 1, shape[i]};
  if (starts.size() != ends.size()) {
    return absl::InvalidArgumentError("starts and ends differ in length");
  }
  std::vector<int64_t> axes = given_axes;
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (axes.size() != starts.size() || (!given_steps.empty() && given_steps.size() != axes.size())) {
    return absl::InvalidArgumentError("starts, ends, axes and steps differ in length");
  }
  std::set<int64_t> seen;
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t axis = axes[i];
    if (axis < -rank || axis >= rank) {
      return absl::InvalidArgumentError(absl::StrCat("axis ", axis, " is out of range"));
    }
    if (axis < 0) axis += rank;
    if (!seen.insert(axis).second) return absl::InvalidArgumentError("repeated axis");
    const int64_t dim = shape[axis];
    const int64_t step = given_steps.empty() ? 1 : given_steps[i];
    if (step == 0) return absl::InvalidArgumentError("step is 0");
    int64_t start = starts[i], end = ends[i];
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
    }
    // ends[i] may be INT64_MAX: clamped above, so the difference cannot overflow.
    int64_t count = step > 0 ? (end - start + step - 1) / step : (start - end - step - 1) / -step;
    ranges[axis] = {start, step, std::max<int64_t>(count, 0)};
  }
  return ranges;
}

template <typename T>
void CopySlice(const T* src, const Shape& shape, const std::vector<SliceRange>& ranges, T* dst) {
  const std::vector<int64_t> strides = Strides(shape);
  Shape out;
  for (const SliceRange& r : ranges) out.push_back(r.count);
  const int64_t n = NumElements(out);
  const int rank = static_cast<int>(shape.size());
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t coord = rest % out[d];
      rest /= out[d];
      offset += (ranges[d].start + coord * ranges[d].step) * strides[d];
    }
    dst[i] = src[offset];
  }
}
template void CopySlice<float>(const float*, const Shape&, const std::vector<SliceRange>&, float*);
template void CopySlice<int64_t>(const int64_t*, const Shape&, const std::vector<SliceRange>&,
                                 int64_t*);

template <typename T>
void TransposeData(const T* src, const Shape& shape, const std::vector<int64_t>& perm, T* dst) {
  const std::vector<int64_t> strides = Strides(shape);
  const int rank = static_cast<int>(shape.size());
  Shape out(rank);
  for (int i = 0; i < rank; ++i) out[i] = shape[perm[i]];
  const int64_t n = NumElements(out);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
      offset += (rest % out[d]) * strides[perm[d]];
      rest /= out[d];
    }
    dst[i] = src[offset];
  }
}
template void TransposeData<float>(const float*, const Shape&, const std::vector<int64_t>&,
                                   float*);
template void TransposeData<int64_t>(const int64_t*, const Shape&, const std::vector<int64_t>&,
                                     int64_t*);

absl::StatusOr<std::vector<Tensor>> FoldConstantNode(const onnx::NodeProto& node,
                                                     const std::vector<const Tensor*>& inputs,
                                                     int64_t opset,
                                                     const std::optional<Shape>& input_shape) {
  const std::string& op = node.op_type();
  auto input = [&](size_t i) -> const Tensor* {
    return i < inputs.size() ? inputs[i] : nullptr;
  };
  if (op == "Shape") {
    if (!input_shape) return FoldError(node, "the input's shape is not static");
    const int64_t rank = static_cast<int64_t>(input_shape->size());
    int64_t start = IntAttr(node, "start", 0), end = IntAttr(node, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<int64_t>(start, 0, rank);
    end = std::clamp<int64_t>(end, start, rank);
    std::vector<int64_t> dims(input_shape->begin() + start, input_shape->begin() + end);
    const int64_t n = static_cast<int64_t>(dims.size());
    return std::vector<Tensor>{Tensor::Int64({n}, std::move(dims))};
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr && !(op == "Slice" && i >= 3) && !(op == "Squeeze" && i == 1) &&
        !(op == "Unsqueeze" && i == 1)) {
      return FoldError(node, absl::StrCat("input ", i, " is absent"));
    }
  }
  if (inputs.empty() || inputs[0] == nullptr) return FoldError(node, "needs an input");
  const Tensor& x = *inputs[0];
  Tensor out;
  if (op == "Identity") {
    out = x;
  } else if (op == "Cast") {
    ASSIGN_OR_RETURN(out, Cast(node, x));
  } else if (op == "Gather") {
    if (!input(1)) return FoldError(node, "needs indices");
    ASSIGN_OR_RETURN(out, Gather(node, x, *input(1)));
  } else if (op == "Slice") {
    ASSIGN_OR_RETURN(out, Slice(node, x, inputs, opset));
  } else if (op == "Squeeze" || op == "Unsqueeze") {
    std::vector<int64_t> axes;
    if (opset < 13) {
      axes = IntsAttr(node, "axes").value_or(std::vector<int64_t>{});
    } else if (input(1)) {
      axes = AsInts(*input(1));
    }
    if (op == "Squeeze") {
      ASSIGN_OR_RETURN(out, Squeeze(node, x, axes));
    } else {
      ASSIGN_OR_RETURN(out, Unsqueeze(node, x, axes));
    }
  } else if (op == "Concat") {
    ASSIGN_OR_RETURN(out, Concat(node, inputs));
  } else if (op == "Reshape") {
    if (!input(1)) return FoldError(node, "needs a shape");
    ASSIGN_OR_RETURN(out, ReshapeTo(node, x, AsInts(*input(1)), IntAttr(node, "allowzero", 0)));
  } else if (op == "Flatten") {
    const int64_t rank = static_cast<int64_t>(x.shape().size());
    int64_t axis = IntAttr(node, "axis", 1);
    if (axis < 0) axis += rank;
    if (axis < 0 || axis > rank) return FoldError(node, "axis out of range");
    out = x;
    out.Reshape({ProductOf(x.shape(), 0, axis), ProductOf(x.shape(), axis, rank)});
  } else if (op == "Transpose") {
    const int64_t rank = static_cast<int64_t>(x.shape().size());
    std::vector<int64_t> perm = IntsAttr(node, "perm").value_or(std::vector<int64_t>{});
    if (perm.empty()) {
      for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
    }
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < static_cast<int64_t>(sorted.size()); ++i) {
      if (sorted[i] != i || static_cast<int64_t>(perm.size()) != rank) {
        return FoldError(node, "perm is not a permutation of the input's axes");
      }
    }
    Shape shape(rank);
    for (int64_t i = 0; i < rank; ++i) shape[i] = x.shape()[perm[i]];
    out = Make(x.dtype(), shape);
    WithData(x, out, [&](const auto* s, auto* d) { TransposeData(s, x.shape(), perm, d); });
  } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Equal") {
    if (!input(1)) return FoldError(node, "needs two inputs");
    ASSIGN_OR_RETURN(out, Binary(node, x, *input(1)));
  } else if (op == "Neg" || op == "Sqrt") {
    out = x;
    if (x.dtype() == DataType::kFloat) {
      for (float& v : out.floats()) v = op == "Neg" ? -v : std::sqrt(v);
    } else {
      if (op == "Sqrt") return FoldError(node, "Sqrt of integers");
      for (int64_t& v : out.int64s()) v = -v;
    }
  } else if (op == "ConstantOfShape") {
    ASSIGN_OR_RETURN(out, ConstantOfShape(node, x));
  } else if (op == "Range") {
    if (!input(1) || !input(2)) return FoldError(node, "needs start, limit, delta");
    if (x.dtype() != input(1)->dtype() || x.dtype() != input(2)->dtype()) {
      return FoldError(node, "start, limit and delta differ in element type");
    }
    ASSIGN_OR_RETURN(out, Range(node, x, *input(1), *input(2)));
  } else if (op == "Where") {
    if (!input(1) || !input(2)) return FoldError(node, "needs condition, X and Y");
    ASSIGN_OR_RETURN(out, Where(node, x, *input(1), *input(2)));
  } else if (op == "Expand") {
    if (!input(1)) return FoldError(node, "needs a shape");
    ASSIGN_OR_RETURN(Shape shape, Broadcast(node, {x.shape(), AsInts(*input(1))}));
    RETURN_IF_ERROR(CheckFoldedShape(node, shape));
    out = Remap(x, shape, [&](int64_t i) { return BroadcastIndex(i, shape, x.shape()); });
  } else {
    return FoldError(node, "is not foldable");
  }
  return std::vector<Tensor>{std::move(out)};
}

}  // namespace bitsweep::engine
