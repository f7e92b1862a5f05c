// Small oneDNN helpers shared by the inference Network and the training network: memory
// descriptors for engine shapes, window (pads/auto_pad/ceil_mode) resolution for Conv and pooling,
// activation post-ops, and node-naming errors.
//
//   dnnl::memory::desc d = PlainDesc(DnnlDims({2, 3}));
//   RETURN_IF_ERROR(ResolveWindow(node, x_shape, node.ceil_mode, &pb, &pe, &out_spatial));
#ifndef BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_
#define BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_

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

// oneDNN eltwise algorithm and (alpha, beta) for an activation (Relu, LeakyRelu, Clip, Sigmoid).
dnnl::algorithm PostOpAlgorithm(OpKind op);
std::pair<float, float> EltwiseParams(OpKind op, float alpha, float beta);
// A primitive_attr with the activations as eltwise post-ops, in order.
dnnl::primitive_attr PostOpAttr(const std::vector<PostOp>& post_ops);

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

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_DNNL_UTIL_H_
