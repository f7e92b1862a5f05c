// InferenceNetwork: the interface Network (network.h, fp32 with the quantization emulated) and
// int8::Int8Network (int8/int8_network.h, oneDNN's int8 primitives) share -- a Graph compiled for
// fixed input shapes, ready to run batches -- so that evaluation and tools can run either one.
// Each network's Create compiles it; this class answers what it was compiled into and runs it.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<InferenceNetwork> net, Network::Create(graph, options));
//   RETURN_IF_ERROR(net->RunSingle(batch_data, scores));
//
// An InferenceNetwork is not thread-safe: one caller runs it at a time (oneDNN parallelizes
// inside).
#ifndef BITSWEEP_WORKER_ENGINE_INFERENCE_NETWORK_H_
#define BITSWEEP_WORKER_ENGINE_INFERENCE_NETWORK_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/graph.h"
#include "quant/layer_info.h"
#include "quant/format.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

class InferenceCompiler;  // inference_compiler.h, internal to the engine

class InferenceNetwork {
 public:
  virtual ~InferenceNetwork();
  InferenceNetwork(const InferenceNetwork&) = delete;
  InferenceNetwork& operator=(const InferenceNetwork&) = delete;

  // Runtime inputs and graph outputs (float32, plain row-major) with their resolved shapes.
  const std::vector<ValueInfo>& inputs() const;
  const std::vector<ValueInfo>& outputs() const;
  // The graph as compiled (after the inference rewrites).
  const Graph& graph() const;
  // The quantizable layers (Conv, Gemm, MatMul) in execution order, per single inference.
  const std::vector<quant::LayerInfo>& layers() const;
  // The weight quantizer each quantized layer ended up with (FL, e_max, scales chosen).
  const std::map<std::string, quant::Quantizer>& weight_quantizers() const;
  // Bytes of activation memory its steps use (with buffer reuse: the shared arena).
  int64_t activation_bytes() const;

  // Runs one batch. `inputs` holds a float tensor of the compiled shape for every runtime input.
  absl::Status Run(const std::map<std::string, const Tensor*>& inputs,
                   std::map<std::string, Tensor>* outputs);
  // Fast path for one input and one output (evaluation): copies `input` (inputs()[0] shape) in,
  // runs, and copies the first output to `output` (outputs()[0] shape).
  absl::Status RunSingle(const float* input, float* output);

 protected:
  explicit InferenceNetwork(std::unique_ptr<InferenceCompiler> compiled);
  const InferenceCompiler& compiled() const { return *compiled_; }

 private:
  std::unique_ptr<InferenceCompiler> compiled_;
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_INFERENCE_NETWORK_H_
