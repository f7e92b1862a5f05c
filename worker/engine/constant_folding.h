// Constant folding: evaluates, at import, the ONNX nodes whose inputs are all known.
//
// PyTorch's exporter leaves arithmetic on constants in the graph: biases fed through Identity of a
// shared initializer, shape computations (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) and
// transposed weights. The importer (onnx_import.h) asks FoldConstantNode for every node whose
// inputs are all constants and replaces it by the values it returns, so that the graph it builds
// holds only the float32 network. Integer data is fine here; the network itself stays float32.
//
//   if (IsFoldableOperator(node.op_type())) {
//     absl::StatusOr<std::vector<Tensor>> outs = FoldConstantNode(node, inputs, opset, shape);
//   }
//
// `Shape` is folded from the static shape of its input (which need not be a constant); the
// importer passes it in as `input_shape`. Sizes come from the model file: a result of more than
// 2^27 elements is refused (an error naming the node) rather than allocated.
#ifndef BITSWEEP_WORKER_ENGINE_CONSTANT_FOLDING_H_
#define BITSWEEP_WORKER_ENGINE_CONSTANT_FOLDING_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// Operators FoldConstantNode evaluates: Identity, Cast, Shape, Gather, Slice, Squeeze, Unsqueeze,
// Concat, Reshape, Flatten, Transpose, Add, Sub, Mul, Div, Neg, Sqrt, ConstantOfShape, Range,
// Equal, Where, Expand.
bool IsFoldableOperator(const std::string& op_type);
// The same list, sorted.
const std::vector<std::string>& FoldableOperators();

// Evaluates `node` on `inputs` (nullptr for an absent optional input). For Shape, `input_shape`
// is the static shape of its input and inputs[0] may be null. Errors name the node and say why
// it cannot be evaluated (bad axes, unsupported element type, ...).
absl::StatusOr<std::vector<Tensor>> FoldConstantNode(const onnx::NodeProto& node,
                                                     const std::vector<const Tensor*>& inputs,
                                                     int64_t opset,
                                                     const std::optional<Shape>& input_shape);

// Shared by folding and the Slice operator: the per-axis [start, step, count] of an ONNX Slice
// with `starts`, `ends`, `axes` (empty: 0..n-1) and `steps` (empty: all 1) on `shape`, after
// clamping as ONNX specifies. Axes not sliced get [0, 1, dim].
struct SliceRange {
  int64_t start = 0, step = 1, count = 0;
};
absl::StatusOr<std::vector<SliceRange>> ResolveSlice(const Shape& shape,
                                                     const std::vector<int64_t>& starts,
                                                     const std::vector<int64_t>& ends,
                                                     const std::vector<int64_t>& axes,
                                                     const std::vector<int64_t>& steps);

// Row-major strided copy of `ranges` out of a tensor of `shape`: element (i0, i1, ...) of the
// result is src[start0 + i0*step0, start1 + i1*step1, ...]. T is float or int64_t.
template <typename T>
void CopySlice(const T* src, const Shape& shape, const std::vector<SliceRange>& ranges, T* dst);

// dst = src with axes permuted: dst shape[i] = shape[perm[i]].
template <typename T>
void TransposeData(const T* src, const Shape& shape, const std::vector<int64_t>& perm, T* dst);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_CONSTANT_FOLDING_H_
