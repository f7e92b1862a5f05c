// Small oneDNN helpers shared by the inference networks (network.h, int8/int8_network.h) and the
// training network: memory descriptors for engine shapes, window (pads/auto_pad/ceil_mode)
// resolution for Conv and pooling, the shape rules of Conv, pooling, Concat, Add/Mul and Gemm's C,
// activation post-ops, node-naming errors, and the one mapping from operator kinds to the compile
// methods every network implements.
//
//   dnnl::memory::desc d = PlainDesc(DnnlDims({2, 3}));
//   ASSIGN_OR_RETURN(Shape y, WindowOutputShape(node, x_shape, std::nullopt, node.ceil_mode,
//                                               &pb, &pe));
#ifndef BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_
#define BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/graph.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// oneDNN has no rank-0 tensors: a scalar is a one-element vector inside the engine.
dnnl::memory::dims DnnlDims(const Shape& shape);
// Row-major f32.
dnnl::memory::desc PlainDesc(const dnnl::memory::dims& dims);
// f32 with format_tag::any: the primitive chooses (usually a blocked layout).
dnnl::memory::desc AnyDesc(const dnnl::memory::dims& dims);

// Product of s[begin, end).
int64_t Product(const Shape& s, size_t begin, size_t end);
// axis in [-rank, rank) -> [0, rank); otherwise an error naming the node.
absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, const Node& n);
// InvalidArgument "node 'NAME' (OP): what".
absl::Status NodeError(const Node& n, const std::string& what);

// oneDNN eltwise algorithm and (alpha, beta) for an activation (Relu, LeakyRelu, Clip, Sigmoid,
// HardSwish, Tanh; HardSigmoid is linear(alpha, beta) then clip(0, 1), two algorithms: undef).
dnnl::algorithm PostOpAlgorithm(OpKind op);
std::pair<float, float> EltwiseParams(OpKind op, float alpha, float beta);
// A primitive_attr with the activations as eltwise post-ops, in order.
dnnl::primitive_attr PostOpAttr(const std::vector<PostOp>& post_ops);
// Appends eltwise post-op `alg` to `ops`. oneDNN 2.6.3's JIT kernels run every post-op of one
// algorithm in a chain with the parameters of the first one: a quantizer's clip after a fused
// Clip (ReLU6) clipped to the activation's [0, 6] instead of its own range. A clip that follows
// another clip is therefore appended as eltwise_clip_v2 (the same forward function). Other repeats
// must not arise: FuseActivations fuses at most one activation per algorithm, activations never
// map to eltwise_linear, and the quantizers' chains use eltwise_pow for their second scaling.
void AppendEltwise(dnnl::post_ops* ops, dnnl::algorithm alg, float alpha, float beta);

// Output shape of a view operator (Flatten, Reshape, Squeeze, Unsqueeze, Identity) on input
// shape `in`; errors name the node.
absl::StatusOr<Shape> ViewOutputShape(const Node& n, const Shape& in);

// Pads (auto_pad and ceil_mode resolved; oneDNN has no ceil mode, so the trailing pad grows until
// the last window fits) and output spatial sizes of a Conv or pooling node on input `in_shape`
// [N, C, spatial...]. With ceil_mode, a last window starting in the trailing pad is dropped
// (Caffe/PyTorch rule).
absl::Status ResolveWindow(const Node& n, const Shape& in_shape, bool ceil_mode,
                           dnnl::memory::dims* pads_begin, dnnl::memory::dims* pads_end,
                           Shape* out_spatial);
// ResolveWindow's pads, and the output shape [N, C, spatial...] of the window on `x_shape`: C is
// `out_channels` (Conv: the weights' output channels), or x's channels when it is nullopt
// (pooling).
absl::StatusOr<Shape> WindowOutputShape(const Node& n, const Shape& x_shape,
                                        std::optional<int64_t> out_channels, bool ceil_mode,
                                        dnnl::memory::dims* pads_begin,
                                        dnnl::memory::dims* pads_end);
// ONNX dilations (1: dense) in oneDNN's convention (0: dense).
dnnl::memory::dims DnnlDilations(const std::vector<int64_t>& dilations);
// Conv weights [OC, IC/G, k...] as oneDNN wants them: [G, OC/G, IC/G, k...] when grouped.
dnnl::memory::dims ConvWeightDims(const Shape& weight_shape, int64_t group);

// The oneDNN algorithm of a MaxPool or AveragePool node whose trailing pads ResolveWindow gave.
// oneDNN counts the pad it adds for ceil_mode as padding, so an AveragePool with
// count_include_pad=1 whose last window reaches past the given pads is refused (InvalidArgument).
absl::StatusOr<dnnl::algorithm> PoolingAlgorithm(const Node& n,
                                                 const dnnl::memory::dims& pads_end);
// A GlobalAveragePool node as the AveragePool node whose window covers x's spatial dimensions.
absl::StatusOr<Node> GlobalPoolWindow(const Node& n, const Shape& x_shape);

// The output shape of a Concat node of parts of `shapes`; `*axis` receives n.axis normalized.
absl::StatusOr<Shape> ConcatOutputShape(const Node& n, const std::vector<Shape>& shapes,
                                        int64_t* axis);
// Numpy broadcasting of Add/Mul operands: the output shape, and each operand's shape with leading
// 1s up to the output's rank.
absl::StatusOr<Shape> BroadcastShapes(const Node& n, const Shape& a, const Shape& b,
                                      Shape* a_aligned, Shape* b_aligned);
// Gemm's C shape as [rows, cols] (leading 1s added), checked to broadcast to [m, nn].
absl::StatusOr<Shape> GemmCShape(const Node& n, const Shape& c, int64_t m, int64_t nn);

// Whether a layer's fused activations leave no negative value (Relu, Sigmoid, Clip with min >= 0).
bool PostOpsNonNegative(const std::vector<PostOp>& post_ops);

// Calls the compile method of `compiler` for n's operator kind. The three networks compile the
// same operator kinds, each its own way; this keeps the kinds and their grouping in one place.
// `Compiler` has CompileConv, CompileGemm, CompileMatMul, CompileEltwise (Relu, LeakyRelu, Clip,
// Sigmoid, HardSigmoid, HardSwish, Tanh), CompilePool (MaxPool, AveragePool),
// CompileGlobalAveragePool, CompileConcat, CompileBinary (Add, Mul, Sub, Div), CompileBatchNorm,
// CompileLrn, CompileSoftmax, CompileView (Flatten, Reshape, Squeeze, Unsqueeze, Identity),
// CompilePad, CompileReduce (ReduceMean, ReduceMax), CompileTranspose and CompileSlice, each
// absl::Status(const Node&).
template <typename Compiler>
absl::Status CompileByOpKind(Compiler& compiler, const Node& n,
                             const char* unknown = "unknown operator kind") {
  switch (n.op) {
    case OpKind::kConv: return compiler.CompileConv(n);
    case OpKind::kGemm: return compiler.CompileGemm(n);
    case OpKind::kMatMul: return compiler.CompileMatMul(n);
    case OpKind::kRelu:
    case OpKind::kLeakyRelu:
    case OpKind::kClip:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
    case OpKind::kHardSwish:
    case OpKind::kTanh: return compiler.CompileEltwise(n);
    case OpKind::kMaxPool:
    case OpKind::kAveragePool: return compiler.CompilePool(n);
    case OpKind::kGlobalAveragePool: return compiler.CompileGlobalAveragePool(n);
    case OpKind::kConcat: return compiler.CompileConcat(n);
    case OpKind::kAdd:
    case OpKind::kMul:
    case OpKind::kSub:
    case OpKind::kDiv: return compiler.CompileBinary(n);
    case OpKind::kPad: return compiler.CompilePad(n);
    case OpKind::kReduceMean:
    case OpKind::kReduceMax: return compiler.CompileReduce(n);
    case OpKind::kTranspose: return compiler.CompileTranspose(n);
    case OpKind::kSlice: return compiler.CompileSlice(n);
    case OpKind::kBatchNorm: return compiler.CompileBatchNorm(n);
    case OpKind::kLrn: return compiler.CompileLrn(n);
    case OpKind::kSoftmax: return compiler.CompileSoftmax(n);
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kIdentity: return compiler.CompileView(n);
  }
  return NodeError(n, unknown);
}

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_
