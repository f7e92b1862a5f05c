// One-shot execution of an ONNX file on given tensors: the engine behind `bitsweep run` and the
// ONNX conformance tests.
//
// Every given input is bound before compilation (ONNX's node tests feed weights as graph inputs),
// so the network is compiled for exactly the given shapes.
//
//   ASSIGN_OR_RETURN(auto outputs, RunModelOnce("model.onnx", {{"x", x}, {"W", w}}));
#ifndef BITSWEEP_WORKER_ENGINE_RUNNER_H_
#define BITSWEEP_WORKER_ENGINE_RUNNER_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// Returns every graph output by name. Errors name the file and the missing or bad input.
absl::StatusOr<std::map<std::string, Tensor>> RunModelOnce(
    const std::string& model_path, const std::map<std::string, Tensor>& inputs, int threads = 0);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_RUNNER_H_
