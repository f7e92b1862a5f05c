#include "worker/engine/runner.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"

namespace bitsweep::engine {

absl::StatusOr<std::map<std::string, Tensor>> RunModelOnce(
    const std::string& model_path, const std::map<std::string, Tensor>& inputs, int threads) {
  ImportOptions import_options;
  import_options.bound_inputs = inputs;
  ASSIGN_OR_RETURN(Graph graph, ImportOnnxFile(model_path, import_options));
  if (!graph.inputs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(model_path, ": graph input '",
                                                   graph.inputs[0].name,
                                                   "' was not given a value"));
  }
  NetworkOptions options;
  options.threads = threads;
  ASSIGN_OR_RETURN(std::unique_ptr<Network> net, Network::Create(graph, options));
  std::map<std::string, Tensor> outputs;
  RETURN_IF_ERROR(net->Run({}, &outputs));
  return outputs;
}

}  // namespace bitsweep::engine
