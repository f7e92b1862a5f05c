#include "worker/engine/inference_network.h"

#include <utility>

#include "worker/engine/inference_compiler.h"

namespace bitsweep::engine {

InferenceNetwork::InferenceNetwork(std::unique_ptr<InferenceCompiler> compiled)
    : compiled_(std::move(compiled)) {}

InferenceNetwork::~InferenceNetwork() = default;

const std::vector<ValueInfo>& InferenceNetwork::inputs() const { return compiled_->inputs(); }
const std::vector<ValueInfo>& InferenceNetwork::outputs() const { return compiled_->outputs(); }
const Graph& InferenceNetwork::graph() const { return compiled_->graph(); }
const std::vector<quant::LayerInfo>& InferenceNetwork::layers() const { return compiled_->layers(); }
const std::map<std::string, quant::Quantizer>& InferenceNetwork::weight_quantizers() const {
  return compiled_->weight_quantizers();
}
int64_t InferenceNetwork::activation_bytes() const { return compiled_->activation_bytes(); }

absl::Status InferenceNetwork::Run(const std::map<std::string, const Tensor*>& inputs,
                                   std::map<std::string, Tensor>* outputs) {
  return compiled_->Run(inputs, outputs);
}

absl::Status InferenceNetwork::RunSingle(const float* input, float* output) {
  return compiled_->RunSingle(input, output);
}

}  // namespace bitsweep::engine
