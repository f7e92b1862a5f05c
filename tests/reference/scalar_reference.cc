#include "tests/reference/scalar_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::reference {
namespace {

using engine::DataType;
using engine::NumElements;
using engine::Shape;
using engine::ShapeToString;
using engine::Tensor;

// ---------------------------------------------------------------------------------------------
// Node context: inputs, attributes, errors.

class Node {
 public:
  Node(const onnx::NodeProto& proto, int index, int64_t opset, std::vector<const Tensor*> inputs)
      : proto_(proto), index_(index), opset_(opset), inputs_(std::move(inputs)) {}

  const onnx::NodeProto& proto() const { return proto_; }
  int64_t opset() const { return opset_; }

  std::string Where() const {
    if (!proto_.name().empty())
      return absl::StrCat("node '", proto_.name(), "' (", proto_.op_type(), ")");
    return absl::StrCat("node #", index_, " (", proto_.op_type(),
                        proto_.output_size() > 0 ? absl::StrCat(", output '", proto_.output(0), "'")
                                                 : std::string(),
                        ")");
  }
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(Where(), ": ", message));
  }
  absl::Status Unimplemented(absl::string_view message) const {
    return absl::UnimplementedError(absl::StrCat(Where(), ": ", message));
  }

  // Input `i`, or nullptr when omitted (absent or empty name).
  const Tensor* input(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }

  absl::StatusOr<const Tensor*> Required(size_t i) const {
    const Tensor* t = input(i);
    if (t == nullptr) return Error(absl::StrCat("missing required input ", i));
    return t;
  }
  absl::StatusOr<const Tensor*> RequiredFloat(size_t i) const {
    ASSIGN_OR_RETURN(const Tensor* t, Required(i));
    if (t->dtype() != DataType::kFloat) return Error(absl::StrCat("input ", i, " must be float"));
    return t;
  }

  const onnx::AttributeProto* Attr(absl::string_view name) const {
    for (const onnx::AttributeProto& a : proto_.attribute()) {
      if (a.name() == name) return &a;
    }
    return nullptr;
  }
  int64_t Int(absl::string_view name, int64_t fallback) const {
    const onnx::AttributeProto* a = Attr(name);
    return a != nullptr ? a->i() : fallback;
  }
  float Float(absl::string_view name, float fallback) const {
    const onnx::AttributeProto* a = Attr(name);
    return a != nullptr ? a->f() : fallback;
  }
  std::string String(absl::string_view name, std::string fallback) const {
    const onnx::AttributeProto* a = Attr(name);
    return a != nullptr ? a->s() : fallback;
  }
  std::optional<std::vector<int64_t>> Ints(absl::string_view name) const {
    const onnx::AttributeProto* a = Attr(name);
    if (a == nullptr) return std::nullopt;
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }

 private:
  const onnx::NodeProto& proto_;
  int index_;
  int64_t opset_;
  std::vector<const Tensor*> inputs_;
};

using Outputs = std::vector<Tensor>;

// ---------------------------------------------------------------------------------------------
// Shape helpers.

std::vector<int64_t> Strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return strides;
}

int64_t Product(const Shape& shape, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= shape[i];
  return p;
}

// Normalizes a possibly negative axis into [0, rank).
absl::StatusOr<int64_t> NormalizeAxis(const Node& node, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return node.Error(absl::StrCat("axis ", axis, " out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

// Numpy multidirectional broadcast of two shapes.
absl::StatusOr<Shape> BroadcastShapes(const Node& node, const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) {
      return node.Error(absl::StrCat("shapes ", ShapeToString(a), " and ", ShapeToString(b),
                                     " are not broadcastable"));
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Strides for reading a tensor of shape `in` while iterating over the broadcast shape `out`
// (0 where `in` is broadcast).
std::vector<int64_t> BroadcastStrides(const Shape& in, const Shape& out) {
  const std::vector<int64_t> in_strides = Strides(in);
  std::vector<int64_t> strides(out.size(), 0);
  const size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    strides[offset + i] = in[i] == 1 ? 0 : in_strides[i];
  }
  return strides;
}

// Offset into a tensor with `strides` of the element at row-major flat index `flat` of `shape`.
int64_t OffsetOf(int64_t flat, const Shape& shape, const std::vector<int64_t>& strides) {
  int64_t offset = 0;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    const int64_t coord = flat % shape[i];
    flat /= shape[i];
    offset += coord * strides[i];
  }
  return offset;
}

// Same values (any dtype), new shape.
Tensor Reshaped(const Tensor& t, Shape shape) {
  Tensor out = t;
  out.Reshape(std::move(shape));
  return out;
}

// Reads an int64 list from a 0-D or 1-D int64 tensor input.
absl::StatusOr<std::vector<int64_t>> Int64List(const Node& node, size_t i) {
  ASSIGN_OR_RETURN(const Tensor* t, node.Required(i));
  if (t->dtype() != DataType::kInt64)
    return node.Error(absl::StrCat("input ", i, " must be int64"));
  return t->int64s();
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops.

template <typename Fn>
absl::StatusOr<Outputs> Unary(const Node& node, Fn fn) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  Tensor y = Tensor::Float(x->shape());
  for (int64_t i = 0; i < x->num_elements(); ++i) {
    y.floats()[i] = static_cast<float>(fn(static_cast<double>(x->floats()[i])));
  }
  return Outputs{std::move(y)};
}

absl::StatusOr<Outputs> Relu(const Node& node) {
  return Unary(node, [](double x) { return x > 0 ? x : 0.0; });
}

absl::StatusOr<Outputs> LeakyRelu(const Node& node) {
  const double alpha = node.Float("alpha", 0.01f);
  return Unary(node, [alpha](double x) { return x >= 0 ? x : alpha * x; });
}

absl::StatusOr<Outputs> Sigmoid(const Node& node) {
  return Unary(node, [](double x) { return 1.0 / (1.0 + std::exp(-x)); });
}

absl::StatusOr<Outputs> Clip(const Node& node) {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  if (node.opset() < 11) {
    if (node.Attr("min") != nullptr) lo = node.Float("min", 0);
    if (node.Attr("max") != nullptr) hi = node.Float("max", 0);
  } else {
    for (size_t i : {1, 2}) {
      const Tensor* bound = node.input(i);
      if (bound == nullptr) continue;
      if (bound->dtype() != DataType::kFloat || bound->num_elements() != 1) {
        return node.Error(absl::StrCat("input ", i, " must be a float scalar"));
      }
      (i == 1 ? lo : hi) = bound->floats()[0];
    }
  }
  return Unary(node, [lo, hi](double x) { return std::min(std::max(x, lo), hi); });
}

template <typename T>
std::vector<T> BinaryBroadcast(const std::vector<T>& a, const Shape& a_shape,
                               const std::vector<T>& b, const Shape& b_shape,
                               const Shape& out_shape, const std::function<T(T, T)>& fn) {
  const std::vector<int64_t> a_strides = BroadcastStrides(a_shape, out_shape);
  const std::vector<int64_t> b_strides = BroadcastStrides(b_shape, out_shape);
  std::vector<T> out(NumElements(out_shape));
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) {
    out[i] = fn(a[OffsetOf(i, out_shape, a_strides)], b[OffsetOf(i, out_shape, b_strides)]);
  }
  return out;
}

// Add / Mul. Opset >= 7: numpy broadcasting. Opset < 7 with broadcast=1: B is aligned with A
// starting at `axis` (default: suffix alignment), then broadcast.
absl::StatusOr<Outputs> Binary(const Node& node, const std::function<double(double, double)>& f,
                               const std::function<int64_t(int64_t, int64_t)>& i) {
  ASSIGN_OR_RETURN(const Tensor* a, node.Required(0));
  ASSIGN_OR_RETURN(const Tensor* b, node.Required(1));
  if (a->dtype() != b->dtype()) return node.Error("operands have different element types");
  Shape b_shape = b->shape();
  if (node.opset() < 7 && node.Int("broadcast", 0) != 0) {
    const int64_t rank = static_cast<int64_t>(a->shape().size());
    const int64_t b_rank = static_cast<int64_t>(b_shape.size());
    int64_t axis = node.Int("axis", rank - b_rank);
    if (axis < 0) axis += rank;
    if (axis < 0 || axis + b_rank > rank) return node.Error("legacy broadcast axis out of range");
    Shape aligned(rank, 1);
    for (int64_t d = 0; d < b_rank; ++d) aligned[axis + d] = b_shape[d];
    b_shape = aligned;
  }
  ASSIGN_OR_RETURN(Shape out_shape, BroadcastShapes(node, a->shape(), b_shape));
  if (a->dtype() == DataType::kFloat) {
    std::function<float(float, float)> ff = [&f](float x, float y) {
      return static_cast<float>(f(x, y));
    };
    return Outputs{Tensor::Float(
        out_shape,
        BinaryBroadcast<float>(a->floats(), a->shape(), b->floats(), b_shape, out_shape, ff))};
  }
  return Outputs{Tensor::Int64(
      out_shape,
      BinaryBroadcast<int64_t>(a->int64s(), a->shape(), b->int64s(), b_shape, out_shape, i))};
}

absl::StatusOr<Outputs> Add(const Node& node) {
  return Binary(
      node, [](double x, double y) { return x + y; }, [](int64_t x, int64_t y) { return x + y; });
}

absl::StatusOr<Outputs> Mul(const Node& node) {
  return Binary(
      node, [](double x, double y) { return x * y; }, [](int64_t x, int64_t y) { return x * y; });
}

// ---------------------------------------------------------------------------------------------
// Convolution and pooling.

// Output size and begin/end padding of one spatial dimension.
struct SpatialGeometry {
  int64_t out = 0;
  int64_t pad_begin = 0;
  int64_t pad_end = 0;
};

// Shared by Conv (ceil_mode = false) and the pools. `pads` holds begins then ends.
absl::StatusOr<std::vector<SpatialGeometry>> ComputeGeometry(const Node& node, const Shape& in,
                                                             const std::vector<int64_t>& kernel,
                                                             const std::vector<int64_t>& strides,
                                                             const std::vector<int64_t>& dilations,
                                                             const std::vector<int64_t>& pads,
                                                             bool ceil_mode) {
  const size_t k = in.size();
  const std::string auto_pad = node.String("auto_pad", "NOTSET");
  std::vector<SpatialGeometry> geo(k);
  for (size_t d = 0; d < k; ++d) {
    if (strides[d] < 1 || dilations[d] < 1 || kernel[d] < 1) {
      return node.Error("kernel, strides and dilations must be positive");
    }
    const int64_t eff_kernel = (kernel[d] - 1) * dilations[d] + 1;
    if (auto_pad == "NOTSET") {
      geo[d].pad_begin = pads[d];
      geo[d].pad_end = pads[k + d];
      const int64_t span = in[d] + geo[d].pad_begin + geo[d].pad_end - eff_kernel;
      if (span < 0) return node.Error("kernel larger than the padded input");
      int64_t out = (ceil_mode ? (span + strides[d] - 1) / strides[d] : span / strides[d]) + 1;
      // A last window starting in the end padding is dropped.
      if (ceil_mode && (out - 1) * strides[d] >= in[d] + geo[d].pad_begin) --out;
      geo[d].out = out;
    } else if (auto_pad == "VALID") {
      if (in[d] < eff_kernel) return node.Error("kernel larger than the input");
      geo[d].out = (in[d] - eff_kernel) / strides[d] + 1;
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      geo[d].out = (in[d] + strides[d] - 1) / strides[d];
      const int64_t total =
          std::max<int64_t>(0, (geo[d].out - 1) * strides[d] + eff_kernel - in[d]);
      const int64_t small = total / 2;
      const int64_t large = total - small;
      geo[d].pad_begin = auto_pad == "SAME_UPPER" ? small : large;
      geo[d].pad_end = total - geo[d].pad_begin;
    } else {
      return node.Error(absl::StrCat("unknown auto_pad '", auto_pad, "'"));
    }
  }
  return geo;
}

// Reads an INTS attribute of length `n`, defaulting to `fallback` repeated.
absl::StatusOr<std::vector<int64_t>> SpatialAttr(const Node& node, absl::string_view name, size_t n,
                                                 int64_t fallback) {
  std::optional<std::vector<int64_t>> v = node.Ints(name);
  if (!v.has_value()) return std::vector<int64_t>(n, fallback);
  if (v->size() != n) {
    return node.Error(
        absl::StrCat("attribute ", name, " has ", v->size(), " values, expected ", n));
  }
  return *v;
}

// All coordinate tuples of a box of extents `dims`, in row-major order.
std::vector<std::vector<int64_t>> AllCoords(const Shape& dims) {
  std::vector<std::vector<int64_t>> coords;
  const int64_t n = NumElements(dims);
  coords.reserve(n);
  for (int64_t flat = 0; flat < n; ++flat) {
    std::vector<int64_t> c(dims.size());
    int64_t rest = flat;
    for (int i = static_cast<int>(dims.size()) - 1; i >= 0; --i) {
      c[i] = rest % dims[i];
      rest /= dims[i];
    }
    coords.push_back(std::move(c));
  }
  return coords;
}

absl::StatusOr<Outputs> Conv(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  ASSIGN_OR_RETURN(const Tensor* w, node.RequiredFloat(1));
  const Tensor* bias = node.input(2);
  const Shape& xs = x->shape();
  const Shape& ws = w->shape();
  if (xs.size() < 3 || ws.size() != xs.size()) {
    return node.Error(absl::StrCat("bad shapes X ", ShapeToString(xs), ", W ", ShapeToString(ws)));
  }
  const size_t k = xs.size() - 2;
  const int64_t batch = xs[0], channels = xs[1], out_channels = ws[0];
  const int64_t group = node.Int("group", 1);
  if (group < 1 || channels % group != 0 || out_channels % group != 0 ||
      ws[1] != channels / group) {
    return node.Error(absl::StrCat("X ", ShapeToString(xs), " and W ", ShapeToString(ws),
                                   " do not match group ", group));
  }
  if (bias != nullptr &&
      (bias->dtype() != DataType::kFloat || bias->num_elements() != out_channels)) {
    return node.Error("bias must be a float vector of output-channel length");
  }
  const Shape in_spatial(xs.begin() + 2, xs.end());
  const Shape kernel(ws.begin() + 2, ws.end());
  if (std::optional<std::vector<int64_t>> ks = node.Ints("kernel_shape"); ks && *ks != kernel) {
    return node.Error("kernel_shape disagrees with the weight shape");
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> strides, SpatialAttr(node, "strides", k, 1));
  ASSIGN_OR_RETURN(std::vector<int64_t> dilations, SpatialAttr(node, "dilations", k, 1));
  ASSIGN_OR_RETURN(std::vector<int64_t> pads, SpatialAttr(node, "pads", 2 * k, 0));
  ASSIGN_OR_RETURN(std::vector<SpatialGeometry> geo,
                   ComputeGeometry(node, in_spatial, kernel, strides, dilations, pads, false));

  Shape out_spatial(k);
  for (size_t d = 0; d < k; ++d) out_spatial[d] = geo[d].out;
  Shape ys = {batch, out_channels};
  ys.insert(ys.end(), out_spatial.begin(), out_spatial.end());
  Tensor y = Tensor::Float(ys);

  const std::vector<std::vector<int64_t>> out_coords = AllCoords(out_spatial);
  const std::vector<std::vector<int64_t>> kernel_coords = AllCoords(kernel);
  const std::vector<int64_t> in_strides = Strides(in_spatial);
  const int64_t in_size = NumElements(in_spatial), kernel_size = NumElements(kernel);
  const int64_t out_size = NumElements(out_spatial);
  const int64_t cin_per_group = channels / group, cout_per_group = out_channels / group;
  std::vector<int64_t> pos(k);

  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t m = 0; m < out_channels; ++m) {
      const int64_t g = m / cout_per_group;
      for (int64_t o = 0; o < out_size; ++o) {
        double acc = bias != nullptr ? bias->floats()[m] : 0.0;
        for (int64_t kk = 0; kk < kernel_size; ++kk) {
          bool inside = true;
          int64_t in_offset = 0;
          for (size_t d = 0; d < k; ++d) {
            const int64_t p = out_coords[o][d] * strides[d] - geo[d].pad_begin +
                              kernel_coords[kk][d] * dilations[d];
            if (p < 0 || p >= in_spatial[d]) {
              inside = false;
              break;
            }
            in_offset += p * in_strides[d];
          }
          if (!inside) continue;
          for (int64_t c = 0; c < cin_per_group; ++c) {
            const int64_t cin = g * cin_per_group + c;
            const double xv = x->floats()[(n * channels + cin) * in_size + in_offset];
            const double wv = w->floats()[(m * cin_per_group + c) * kernel_size + kk];
            acc += xv * wv;
          }
        }
        y.floats()[(n * out_channels + m) * out_size + o] = static_cast<float>(acc);
      }
    }
  }
  return Outputs{std::move(y)};
}

absl::StatusOr<Outputs> Pool(const Node& node, bool is_max) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  const Shape& xs = x->shape();
  if (xs.size() < 3) return node.Error(absl::StrCat("bad input shape ", ShapeToString(xs)));
  if (node.proto().output_size() > 1 && !node.proto().output(1).empty()) {
    return node.Unimplemented("MaxPool Indices output is not supported");
  }
  const size_t k = xs.size() - 2;
  std::optional<std::vector<int64_t>> kernel = node.Ints("kernel_shape");
  if (!kernel.has_value() || kernel->size() != k) return node.Error("bad or missing kernel_shape");
  ASSIGN_OR_RETURN(std::vector<int64_t> strides, SpatialAttr(node, "strides", k, 1));
  ASSIGN_OR_RETURN(std::vector<int64_t> dilations, SpatialAttr(node, "dilations", k, 1));
  ASSIGN_OR_RETURN(std::vector<int64_t> pads, SpatialAttr(node, "pads", 2 * k, 0));
  if (node.Int("storage_order", 0) != 0) return node.Unimplemented("storage_order 1");
  const bool ceil_mode = node.Int("ceil_mode", 0) != 0;
  const bool count_include_pad = node.Int("count_include_pad", 0) != 0;
  const Shape in_spatial(xs.begin() + 2, xs.end());
  ASSIGN_OR_RETURN(std::vector<SpatialGeometry> geo,
                   ComputeGeometry(node, in_spatial, *kernel, strides, dilations, pads, ceil_mode));

  Shape out_spatial(k);
  for (size_t d = 0; d < k; ++d) out_spatial[d] = geo[d].out;
  Shape ys = {xs[0], xs[1]};
  ys.insert(ys.end(), out_spatial.begin(), out_spatial.end());
  Tensor y = Tensor::Float(ys);

  const std::vector<std::vector<int64_t>> out_coords = AllCoords(out_spatial);
  const std::vector<std::vector<int64_t>> kernel_coords = AllCoords(*kernel);
  const std::vector<int64_t> in_strides = Strides(in_spatial);
  const int64_t in_size = NumElements(in_spatial), out_size = NumElements(out_spatial);
  const int64_t planes = xs[0] * xs[1];

  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = x->floats().data() + plane * in_size;
    for (int64_t o = 0; o < out_size; ++o) {
      double max = -std::numeric_limits<double>::infinity();
      double sum = 0.0;
      int64_t count_inside = 0, count_padded = 0;
      for (const std::vector<int64_t>& kc : kernel_coords) {
        bool inside = true, inside_padded = true;
        int64_t offset = 0;
        for (size_t d = 0; d < k; ++d) {
          const int64_t p = out_coords[o][d] * strides[d] - geo[d].pad_begin + kc[d] * dilations[d];
          if (p < 0 || p >= in_spatial[d]) inside = false;
          if (p < -geo[d].pad_begin || p >= in_spatial[d] + geo[d].pad_end) inside_padded = false;
          offset += p * in_strides[d];
        }
        if (inside_padded) ++count_padded;
        if (!inside) continue;
        ++count_inside;
        const double v = in[offset];
        max = std::max(max, v);
        sum += v;
      }
      double result;
      if (is_max) {
        result = max;
      } else {
        const int64_t count = count_include_pad ? count_padded : count_inside;
        result = count > 0 ? sum / count : 0.0;
      }
      y.floats()[plane * out_size + o] = static_cast<float>(result);
    }
  }
  return Outputs{std::move(y)};
}

absl::StatusOr<Outputs> MaxPool(const Node& node) { return Pool(node, true); }
absl::StatusOr<Outputs> AveragePool(const Node& node) { return Pool(node, false); }

absl::StatusOr<Outputs> GlobalAveragePool(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  const Shape& xs = x->shape();
  if (xs.size() < 3) return node.Error(absl::StrCat("bad input shape ", ShapeToString(xs)));
  Shape ys(xs.size(), 1);
  ys[0] = xs[0];
  ys[1] = xs[1];
  const int64_t spatial = Product(xs, 2, xs.size());
  Tensor y = Tensor::Float(ys);
  for (int64_t plane = 0; plane < xs[0] * xs[1]; ++plane) {
    double sum = 0.0;
    for (int64_t i = 0; i < spatial; ++i) sum += x->floats()[plane * spatial + i];
    y.floats()[plane] = static_cast<float>(sum / spatial);
  }
  return Outputs{std::move(y)};
}

// ---------------------------------------------------------------------------------------------
// Matrix products.

absl::StatusOr<Outputs> Gemm(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* a, node.RequiredFloat(0));
  ASSIGN_OR_RETURN(const Tensor* b, node.RequiredFloat(1));
  const Tensor* c = node.input(2);
  if (a->shape().size() != 2 || b->shape().size() != 2) return node.Error("A and B must be 2-D");
  const bool trans_a = node.Int("transA", 0) != 0, trans_b = node.Int("transB", 0) != 0;
  const double alpha = node.Float("alpha", 1.0f), beta = node.Float("beta", 1.0f);
  const int64_t m = trans_a ? a->shape()[1] : a->shape()[0];
  const int64_t kd = trans_a ? a->shape()[0] : a->shape()[1];
  const int64_t kb = trans_b ? b->shape()[1] : b->shape()[0];
  const int64_t n = trans_b ? b->shape()[0] : b->shape()[1];
  if (kd != kb) {
    return node.Error(absl::StrCat("inner dimensions differ: A ", ShapeToString(a->shape()), ", B ",
                                   ShapeToString(b->shape())));
  }
  std::vector<int64_t> c_strides;
  const Shape out_shape = {m, n};
  if (c != nullptr) {
    if (c->dtype() != DataType::kFloat || c->shape().size() > 2) return node.Error("bad C");
    for (size_t i = 0; i < c->shape().size(); ++i) {
      const int64_t dim = c->shape()[c->shape().size() - 1 - i];
      if (dim != 1 && dim != out_shape[1 - i]) {
        return node.Error(absl::StrCat("C ", ShapeToString(c->shape()), " does not broadcast to ",
                                       ShapeToString(out_shape)));
      }
    }
    c_strides = BroadcastStrides(c->shape(), out_shape);
  }
  Tensor y = Tensor::Float(out_shape);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < kd; ++p) {
        const double av = trans_a ? a->floats()[p * m + i] : a->floats()[i * kd + p];
        const double bv = trans_b ? b->floats()[j * kd + p] : b->floats()[p * n + j];
        acc += av * bv;
      }
      double result = alpha * acc;
      if (c != nullptr) result += beta * c->floats()[i * c_strides[0] + j * c_strides[1]];
      y.floats()[i * n + j] = static_cast<float>(result);
    }
  }
  return Outputs{std::move(y)};
}

absl::StatusOr<Outputs> MatMul(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* a, node.RequiredFloat(0));
  ASSIGN_OR_RETURN(const Tensor* b, node.RequiredFloat(1));
  Shape as = a->shape(), bs = b->shape();
  if (as.empty() || bs.empty()) return node.Error("operands must have rank >= 1");
  const bool a_vector = as.size() == 1, b_vector = bs.size() == 1;
  if (a_vector) as.insert(as.begin(), 1);
  if (b_vector) bs.push_back(1);
  const int64_t m = as[as.size() - 2], kd = as.back(), kb = bs[bs.size() - 2], n = bs.back();
  if (kd != kb) {
    return node.Error(absl::StrCat("inner dimensions differ: ", ShapeToString(a->shape()), " x ",
                                   ShapeToString(b->shape())));
  }
  const Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  ASSIGN_OR_RETURN(Shape batch, BroadcastShapes(node, a_batch, b_batch));
  const std::vector<int64_t> a_strides = BroadcastStrides(a_batch, batch);
  const std::vector<int64_t> b_strides = BroadcastStrides(b_batch, batch);
  const int64_t batch_count = NumElements(batch);
  std::vector<float> out(batch_count * m * n);
  for (int64_t bi = 0; bi < batch_count; ++bi) {
    const float* ap = a->floats().data() + OffsetOf(bi, batch, a_strides) * m * kd;
    const float* bp = b->floats().data() + OffsetOf(bi, batch, b_strides) * kd * n;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0.0;
        for (int64_t p = 0; p < kd; ++p) acc += static_cast<double>(ap[i * kd + p]) * bp[p * n + j];
        out[(bi * m + i) * n + j] = static_cast<float>(acc);
      }
    }
  }
  Shape out_shape = batch;
  if (!a_vector) out_shape.push_back(m);
  if (!b_vector) out_shape.push_back(n);
  return Outputs{Tensor::Float(out_shape, std::move(out))};
}

// ---------------------------------------------------------------------------------------------
// Normalization and softmax.

absl::StatusOr<Outputs> BatchNormalization(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  if (node.Int("training_mode", 0) != 0) return node.Unimplemented("training_mode=1");
  if (node.opset() < 9 && node.Int("spatial", 1) == 0) return node.Unimplemented("spatial=0");
  const Shape& xs = x->shape();
  if (xs.size() < 2) return node.Error("input rank must be >= 2");
  const int64_t channels = xs[1];
  std::vector<const Tensor*> params(4);
  for (size_t i = 0; i < 4; ++i) {
    ASSIGN_OR_RETURN(params[i], node.RequiredFloat(i + 1));
    if (params[i]->num_elements() != channels) {
      return node.Error(absl::StrCat("parameter ", i + 1, " has shape ",
                                     ShapeToString(params[i]->shape()), ", expected [", channels,
                                     "]"));
    }
  }
  const double epsilon = node.Float("epsilon", 1e-5f);
  const int64_t spatial = Product(xs, 2, xs.size());
  Tensor y = Tensor::Float(xs);
  for (int64_t n = 0; n < xs[0]; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const double scale = params[0]->floats()[c], bias = params[1]->floats()[c];
      const double mean = params[2]->floats()[c], var = params[3]->floats()[c];
      const double inv_std = 1.0 / std::sqrt(var + epsilon);
      for (int64_t i = 0; i < spatial; ++i) {
        const int64_t idx = (n * channels + c) * spatial + i;
        y.floats()[idx] = static_cast<float>(scale * (x->floats()[idx] - mean) * inv_std + bias);
      }
    }
  }
  return Outputs{std::move(y)};
}

// y = x / (bias + alpha / size * sum of x^2 over the channel window)^beta, the window for
// channel c being [c - floor((size-1)/2), c + ceil((size-1)/2)] clipped to [0, C).
absl::StatusOr<Outputs> Lrn(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  const Shape& xs = x->shape();
  if (xs.size() < 2) return node.Error("input rank must be >= 2");
  const onnx::AttributeProto* size_attr = node.Attr("size");
  if (size_attr == nullptr || size_attr->i() < 1) return node.Error("missing or bad size");
  const int64_t size = size_attr->i();
  const double alpha = node.Float("alpha", 1e-4f), beta = node.Float("beta", 0.75f);
  const double bias = node.Float("bias", 1.0f);
  const int64_t channels = xs[1], spatial = Product(xs, 2, xs.size());
  const int64_t before = (size - 1) / 2, after = size - 1 - before;
  Tensor y = Tensor::Float(xs);
  for (int64_t n = 0; n < xs[0]; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t i = 0; i < spatial; ++i) {
        double square_sum = 0.0;
        for (int64_t cc = std::max<int64_t>(0, c - before);
             cc <= std::min<int64_t>(channels - 1, c + after); ++cc) {
          const double v = x->floats()[(n * channels + cc) * spatial + i];
          square_sum += v * v;
        }
        const int64_t idx = (n * channels + c) * spatial + i;
        y.floats()[idx] =
            static_cast<float>(x->floats()[idx] / std::pow(bias + alpha / size * square_sum, beta));
      }
    }
  }
  return Outputs{std::move(y)};
}

// Softmax over a [outer, axis_len, inner] view.
void SoftmaxView(const std::vector<float>& in, std::vector<float>& out, int64_t outer,
                 int64_t axis_len, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * axis_len * inner + i;
      double max = -std::numeric_limits<double>::infinity();
      for (int64_t a = 0; a < axis_len; ++a) max = std::max<double>(max, in[base + a * inner]);
      double sum = 0.0;
      for (int64_t a = 0; a < axis_len; ++a) sum += std::exp(in[base + a * inner] - max);
      for (int64_t a = 0; a < axis_len; ++a) {
        out[base + a * inner] = static_cast<float>(std::exp(in[base + a * inner] - max) / sum);
      }
    }
  }
}

absl::StatusOr<Outputs> Softmax(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.RequiredFloat(0));
  const Shape& xs = x->shape();
  const int64_t rank = static_cast<int64_t>(xs.size());
  Tensor y = Tensor::Float(xs);
  if (node.opset() < 13) {
    // Coerced to 2-D: [prod(dims[:axis]), prod(dims[axis:])], softmax over each row. Axis may
    // equal the rank (one column per row).
    int64_t axis = node.Int("axis", 1);
    if (axis < 0) axis += rank;
    if (axis < 0 || axis > rank) return node.Error(absl::StrCat("axis out of range"));
    SoftmaxView(x->floats(), y.floats(), Product(xs, 0, axis), Product(xs, axis, rank), 1);
  } else {
    ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(node, node.Int("axis", -1), rank));
    SoftmaxView(x->floats(), y.floats(), Product(xs, 0, axis), xs[axis],
                Product(xs, axis + 1, rank));
  }
  return Outputs{std::move(y)};
}

// ---------------------------------------------------------------------------------------------
// Shape manipulation (any element type).

absl::StatusOr<Outputs> Identity(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  return Outputs{*x};
}

absl::StatusOr<Outputs> Dropout(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  if (node.proto().output_size() > 1 && !node.proto().output(1).empty()) {
    return node.Unimplemented("the mask output (bool) is not supported");
  }
  return Outputs{*x};
}

absl::StatusOr<Outputs> Flatten(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  const int64_t rank = static_cast<int64_t>(x->shape().size());
  int64_t axis = node.Int("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis > rank) return node.Error("axis out of range");
  return Outputs{Reshaped(*x, {Product(x->shape(), 0, axis), Product(x->shape(), axis, rank)})};
}

absl::StatusOr<Outputs> Reshape(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  std::vector<int64_t> requested;
  if (node.opset() < 5) {
    requested = node.Ints("shape").value_or(std::vector<int64_t>{});
  } else {
    ASSIGN_OR_RETURN(requested, Int64List(node, 1));
  }
  const bool allow_zero = node.Int("allowzero", 0) != 0;
  Shape out(requested.size());
  int64_t infer_at = -1, known = 1;
  for (size_t i = 0; i < requested.size(); ++i) {
    const int64_t r = requested[i];
    if (r == -1) {
      if (infer_at >= 0) return node.Error("more than one -1 in the shape");
      infer_at = static_cast<int64_t>(i);
      continue;
    }
    if (r == 0 && !allow_zero) {
      if (i >= x->shape().size()) return node.Error("0 refers past the input rank");
      out[i] = x->shape()[i];
    } else if (r < 0) {
      return node.Error(absl::StrCat("invalid shape entry ", r));
    } else {
      out[i] = r;
    }
    known *= out[i];
  }
  if (infer_at >= 0) {
    if (known == 0 || x->num_elements() % known != 0) {
      return node.Error("cannot infer the -1 dimension");
    }
    out[infer_at] = x->num_elements() / known;
  }
  if (NumElements(out) != x->num_elements()) {
    return node.Error(
        absl::StrCat("cannot reshape ", ShapeToString(x->shape()), " to ", ShapeToString(out)));
  }
  return Outputs{Reshaped(*x, out)};
}

// Axes from the "axes" attribute (opset < 13) or the optional second input (opset >= 13).
absl::StatusOr<std::optional<std::vector<int64_t>>> AxesOf(const Node& node) {
  if (node.opset() < 13) return node.Ints("axes");
  if (node.input(1) == nullptr) return std::optional<std::vector<int64_t>>();
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, Int64List(node, 1));
  return std::optional<std::vector<int64_t>>(std::move(axes));
}

absl::StatusOr<Outputs> Squeeze(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AxesOf(node));
  const Shape& xs = x->shape();
  const int64_t rank = static_cast<int64_t>(xs.size());
  std::vector<bool> drop(rank, false);
  if (axes.has_value()) {
    for (int64_t a : *axes) {
      ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(node, a, rank));
      if (xs[axis] != 1)
        return node.Error(absl::StrCat("cannot squeeze axis ", a, " of size ", xs[axis]));
      drop[axis] = true;
    }
  } else {
    for (int64_t i = 0; i < rank; ++i) drop[i] = xs[i] == 1;
  }
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (!drop[i]) out.push_back(xs[i]);
  }
  return Outputs{Reshaped(*x, out)};
}

absl::StatusOr<Outputs> Unsqueeze(const Node& node) {
  ASSIGN_OR_RETURN(const Tensor* x, node.Required(0));
  ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AxesOf(node));
  if (!axes.has_value()) return node.Error("missing axes");
  const Shape& xs = x->shape();
  const int64_t out_rank = static_cast<int64_t>(xs.size() + axes->size());
  std::vector<bool> inserted(out_rank, false);
  for (int64_t a : *axes) {
    ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(node, a, out_rank));
    if (inserted[axis]) return node.Error(absl::StrCat("duplicate axis ", a));
    inserted[axis] = true;
  }
  Shape out(out_rank);
  size_t next = 0;
  for (int64_t i = 0; i < out_rank; ++i) out[i] = inserted[i] ? 1 : xs[next++];
  return Outputs{Reshaped(*x, out)};
}

template <typename T>
std::vector<T> ConcatValues(const std::vector<const std::vector<T>*>& parts,
                            const std::vector<int64_t>& inner_sizes, int64_t outer) {
  std::vector<T> out;
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t p = 0; p < parts.size(); ++p) {
      const auto begin = parts[p]->begin() + o * inner_sizes[p];
      out.insert(out.end(), begin, begin + inner_sizes[p]);
    }
  }
  return out;
}

absl::StatusOr<Outputs> Concat(const Node& node) {
  if (node.proto().input_size() == 0) return node.Error("no inputs");
  ASSIGN_OR_RETURN(const Tensor* first, node.Required(0));
  const int64_t rank = static_cast<int64_t>(first->shape().size());
  if (node.Attr("axis") == nullptr) return node.Error("missing axis");
  ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(node, node.Int("axis", 0), rank));
  Shape out_shape = first->shape();
  out_shape[axis] = 0;
  std::vector<int64_t> inner_sizes;
  std::vector<const std::vector<float>*> float_parts;
  std::vector<const std::vector<int64_t>*> int_parts;
  for (int i = 0; i < node.proto().input_size(); ++i) {
    ASSIGN_OR_RETURN(const Tensor* t, node.Required(i));
    if (t->dtype() != first->dtype() || static_cast<int64_t>(t->shape().size()) != rank) {
      return node.Error("inputs differ in element type or rank");
    }
    for (int64_t d = 0; d < rank; ++d) {
      if (d != axis && t->shape()[d] != first->shape()[d]) {
        return node.Error(absl::StrCat("input shapes ", ShapeToString(first->shape()), " and ",
                                       ShapeToString(t->shape()), " differ off the axis"));
      }
    }
    out_shape[axis] += t->shape()[axis];
    inner_sizes.push_back(Product(t->shape(), axis, rank));
    float_parts.push_back(&t->floats());
    int_parts.push_back(&t->int64s());
  }
  const int64_t outer = Product(first->shape(), 0, axis);
  if (first->dtype() == DataType::kFloat) {
    return Outputs{Tensor::Float(out_shape, ConcatValues(float_parts, inner_sizes, outer))};
  }
  return Outputs{Tensor::Int64(out_shape, ConcatValues(int_parts, inner_sizes, outer))};
}

absl::StatusOr<Outputs> Constant(const Node& node) {
  if (const onnx::AttributeProto* a = node.Attr("value")) {
    absl::StatusOr<Tensor> t = engine::TensorFromProto(a->t());
    if (!t.ok()) return node.Error(t.status().message());
    return Outputs{*std::move(t)};
  }
  if (const onnx::AttributeProto* a = node.Attr("value_float")) {
    return Outputs{Tensor::Float({}, {a->f()})};
  }
  if (const onnx::AttributeProto* a = node.Attr("value_floats")) {
    return Outputs{Tensor::Float({a->floats_size()},
                                 std::vector<float>(a->floats().begin(), a->floats().end()))};
  }
  if (const onnx::AttributeProto* a = node.Attr("value_int")) {
    return Outputs{Tensor::Int64({}, {a->i()})};
  }
  if (const onnx::AttributeProto* a = node.Attr("value_ints")) {
    return Outputs{
        Tensor::Int64({a->ints_size()}, std::vector<int64_t>(a->ints().begin(), a->ints().end()))};
  }
  return node.Unimplemented("only value, value_float(s) and value_int(s) are supported");
}

// ---------------------------------------------------------------------------------------------
// Graph execution.

using OpFn = absl::StatusOr<Outputs> (*)(const Node&);

OpFn FindOp(const std::string& op_type) {
  static const std::map<std::string, OpFn> kOps = {
      {"Add", Add},
      {"AveragePool", AveragePool},
      {"BatchNormalization", BatchNormalization},
      {"Clip", Clip},
      {"Concat", Concat},
      {"Constant", Constant},
      {"Conv", Conv},
      {"Dropout", Dropout},
      {"Flatten", Flatten},
      {"Gemm", Gemm},
      {"GlobalAveragePool", GlobalAveragePool},
      {"Identity", Identity},
      {"LeakyRelu", LeakyRelu},
      {"LRN", Lrn},
      {"MatMul", MatMul},
      {"MaxPool", MaxPool},
      {"Mul", Mul},
      {"Relu", Relu},
      {"Reshape", Reshape},
      {"Sigmoid", Sigmoid},
      {"Softmax", Softmax},
      {"Squeeze", Squeeze},
      {"Unsqueeze", Unsqueeze},
  };
  auto it = kOps.find(op_type);
  return it == kOps.end() ? nullptr : it->second;
}

// Checks a provided input against its declared type (element type, rank, fixed dims).
absl::Status CheckInput(const onnx::ValueInfoProto& info, const Tensor& t) {
  if (!info.type().has_tensor_type()) return absl::OkStatus();
  const onnx::TypeProto::Tensor& tt = info.type().tensor_type();
  const bool want_float = tt.elem_type() == onnx::TensorProto::FLOAT;
  const bool want_int =
      tt.elem_type() == onnx::TensorProto::INT64 || tt.elem_type() == onnx::TensorProto::INT32;
  if ((want_float && t.dtype() != DataType::kFloat) ||
      (want_int && t.dtype() != DataType::kInt64)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", info.name(), "': element type does not match the declaration"));
  }
  if (!tt.has_shape()) return absl::OkStatus();
  const onnx::TensorShapeProto& shape = tt.shape();
  bool ok = shape.dim_size() == static_cast<int>(t.shape().size());
  for (int i = 0; ok && i < shape.dim_size(); ++i) {
    if (shape.dim(i).has_dim_value() && shape.dim(i).dim_value() != t.shape()[i]) ok = false;
  }
  if (!ok) {
    std::vector<std::string> dims;
    for (const auto& d : shape.dim()) {
      dims.push_back(d.has_dim_value() ? std::to_string(d.dim_value()) : d.dim_param());
    }
    return absl::InvalidArgumentError(
        absl::StrCat("input '", info.name(), "': shape ", ShapeToString(t.shape()),
                     " does not match the declared [", absl::StrJoin(dims, ","), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, Tensor>> RunReference(
    const onnx::ModelProto& model, const std::map<std::string, Tensor>& inputs,
    const ValueHook& hook) {
  int64_t opset = -1;
  for (const onnx::OperatorSetIdProto& id : model.opset_import()) {
    if (id.domain().empty() || id.domain() == "ai.onnx") opset = std::max(opset, id.version());
  }
  if (opset < 0) return absl::InvalidArgumentError("model has no default-domain opset_import");
  const onnx::GraphProto& graph = model.graph();

  std::map<std::string, Tensor> values;
  for (const onnx::TensorProto& init : graph.initializer()) {
    absl::StatusOr<Tensor> t = engine::TensorFromProto(init);
    if (!t.ok()) return Annotate(t.status(), absl::StrCat("initializer '", init.name(), "'"));
    values[init.name()] = *std::move(t);
  }
  std::map<std::string, bool> declared;
  for (const onnx::ValueInfoProto& info : graph.input()) {
    declared[info.name()] = true;
    auto given = inputs.find(info.name());
    if (given != inputs.end()) {
      RETURN_IF_ERROR(CheckInput(info, given->second));
      values[info.name()] = given->second;
      if (hook) hook(info.name(), &values[info.name()]);
    } else if (values.count(info.name()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph input '", info.name(), "' is neither given nor initialized"));
    }
  }
  for (const auto& [name, tensor] : inputs) {
    if (declared.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a graph input"));
    }
  }

  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& proto = graph.node(i);
    std::vector<const Tensor*> node_inputs;
    for (const std::string& name : proto.input()) {
      if (name.empty()) {
        node_inputs.push_back(nullptr);
        continue;
      }
      auto it = values.find(name);
      if (it == values.end()) {
        return absl::InvalidArgumentError(absl::StrCat(Node(proto, i, opset, {}).Where(),
                                                       ": input '", name,
                                                       "' is not defined before the node"));
      }
      node_inputs.push_back(&it->second);
    }
    const Node node(proto, i, opset, std::move(node_inputs));
    if (!proto.domain().empty() && proto.domain() != "ai.onnx") {
      return node.Unimplemented(absl::StrCat("domain '", proto.domain(), "' is not supported"));
    }
    OpFn fn = FindOp(proto.op_type());
    if (fn == nullptr) {
      return node.Unimplemented(absl::StrCat("op '", proto.op_type(), "' is not supported"));
    }
    ASSIGN_OR_RETURN(Outputs outputs, fn(node));
    for (size_t o = 0; o < outputs.size() && o < static_cast<size_t>(proto.output_size()); ++o) {
      if (proto.output(o).empty()) continue;
      values[proto.output(o)] = std::move(outputs[o]);
      if (hook) hook(proto.output(o), &values[proto.output(o)]);
    }
  }

  std::map<std::string, Tensor> result;
  for (const onnx::ValueInfoProto& info : graph.output()) {
    auto it = values.find(info.name());
    if (it == values.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph output '", info.name(), "' is not produced by any node"));
    }
    result[info.name()] = it->second;
  }
  return result;
}

}  // namespace bitsweep::reference
