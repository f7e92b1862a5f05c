// Scalar reference executor for ONNX models: the yardstick the real engine is tested against.
//
// An independent, deliberately naive interpreter: plain loops, double accumulation, no oneDNN and
// no code shared with the engine beyond Tensor and the TensorProto conversion. It runs the graph's
// nodes in file order (ONNX requires topological order) and returns every graph output by name.
// It is slow (direct convolution); use small batches.
//
//   ASSIGN_OR_RETURN(onnx::ModelProto model, engine::ReadOnnxModel("model.onnx"));
//   ASSIGN_OR_RETURN(auto outputs, reference::RunReference(model, {{"input", x}}));
//   const engine::Tensor& logits = outputs.at("logits");
//
// Inputs: every graph input must be given in `inputs` unless it has an initializer (a given input
// overrides the initializer). Given tensors must match the declared rank, fixed dims and element
// type. Supported default-domain ops (float32 data; shape ops also carry int64):
//   Conv (N-d, group, pads, strides, dilations, auto_pad, optional bias), Gemm, MatMul, Relu,
//   LeakyRelu, Clip, Sigmoid, MaxPool, AveragePool, GlobalAveragePool, Concat, Add, Mul,
//   BatchNormalization (inference), Flatten, Reshape, Squeeze, Unsqueeze, Dropout (identity; no
//   mask output), Identity, LRN, Softmax, Constant.
// Attribute/input forms follow the model's default-domain opset (Clip < 11 attributes, Squeeze/
// Unsqueeze < 13 axes attribute, Softmax < 13 coerce-to-2D, Add/Mul < 7 legacy broadcast).
// An unsupported op is an UnimplementedError naming the node and op; malformed nodes are
// InvalidArgument errors naming the node.
//
// Pooling semantics: with ceil_mode, a last window that would start in the end padding (or beyond)
// is dropped (PyTorch / onnxruntime rule). AveragePool with count_include_pad=1 divides by the
// number of window positions inside the padded input [-pad_begin, size + pad_end); with 0, by the
// number inside the real input.
#ifndef BITSWEEP_TESTS_REFERENCE_SCALAR_REFERENCE_H_
#define BITSWEEP_TESTS_REFERENCE_SCALAR_REFERENCE_H_

#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/tensor.h"

namespace bitsweep::reference {

// Called on every graph input as it is bound and on every node output as it is produced; it may
// change the value in place (tests use it to emulate quantization independently of the engine).
using ValueHook = std::function<void(const std::string& value, engine::Tensor* tensor)>;

absl::StatusOr<std::map<std::string, engine::Tensor>> RunReference(
    const onnx::ModelProto& model, const std::map<std::string, engine::Tensor>& inputs,
    const ValueHook& hook = nullptr);

}  // namespace bitsweep::reference

#endif  // BITSWEEP_TESTS_REFERENCE_SCALAR_REFERENCE_H_
