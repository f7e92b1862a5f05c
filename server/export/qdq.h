// QDQ ONNX export: the fp32 model rewritten with QuantizeLinear / DequantizeLinear pairs that
// carry a trial's integer quantization, the form ONNX Runtime, TensorRT and most hardware flows
// import. Part of ExportConfig (explorer.proto) for integer configs.
//
//   ASSIGN_OR_RETURN(std::string qdq, BuildQdqModel(model_bytes, trial_result));
//
// BatchNormalizations that follow a Conv are folded into it first, exactly as the engine folds
// them before quantizing (quant/bn_fold.h), so the exported weights are the ones the
// trial quantized. For each layer the result lists (by ONNX node name):
// - int:8 weights: the initializer is replaced by its int8 (symmetric) or uint8 (asymmetric)
//   codes, per tensor or per output channel, with a DequantizeLinear feeding the layer. Weights
//   that reach the layer through Identity / Transpose nodes (PyTorch's bias-free Linear:
//   MatMul(x, Transpose(W))) are quantized as the engine folds them, transposed, into a new
//   initializer; the bypassed nodes and float weights leave the graph when nothing else reads
//   them. Any other producer is refused, naming the layer and the node;
// - int:8 inputs: QuantizeLinear -> DequantizeLinear on the layer's input;
// - int:8 outputs: QuantizeLinear -> DequantizeLinear on the layer's output, after the
//   activations the engine fuses into the layer (Relu/LeakyRelu, Clip, Sigmoid, HardSwish, Tanh
//   when each is the only reader; docs/QUANTIZATION.md), where the engine quantizes it
//   (consumers keep reading the original name);
// - fp32 roles stay as they are. Biases stay fp32.
// Per-tensor scales and zero points are rank-0 initializers; per-channel ones are 1-D [C] with
// the DequantizeLinear's `axis` set to the output-channel axis (ONNX Runtime checks both).
// ONNX's QuantizeLinear rounds half to even and saturates to the 8-bit range: the same codes as
// the int:8 emulation with nearest_even rounding, except that symmetric codes may reach -128
// (ours stop at -127) for values beyond the calibrated range. tests/export/ort_agreement_test.cc
// runs the exports in ONNX Runtime against our int8 path (docs/QUANTIZATION.md, "QDQ export").
//
// Errors (FAILED_PRECONDITION, naming the layer and role): any other format than int:8 or fp32
// (fixed point, minifloat, pow2 and other widths have no exact QDQ form), stochastic rounding
// cannot be told from the result and is not checked here; opset below 13 (per-channel
// DequantizeLinear needs it). Fine-tuned trials are refused by the caller (ExportConfig): their
// tuned weights stay on the worker, and the stored model holds the untuned ones.
#ifndef BITSWEEP_SERVER_EXPORT_QDQ_H_
#define BITSWEEP_SERVER_EXPORT_QDQ_H_

#include <string>

#include "absl/status/statusor.h"
#include "bitsweep/v1/common.pb.h"

namespace bitsweep::server {

// `model_bytes`: the fp32 ONNX file the trial ran on. Returns the serialized QDQ model, which
// passes onnx::checker::check_model.
absl::StatusOr<std::string> BuildQdqModel(const std::string& model_bytes,
                                          const v1::TrialResult& result);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_EXPORT_QDQ_H_
