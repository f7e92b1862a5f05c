#include "worker/engine/int8/int8_evaluate.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "worker/engine/eval_backend.h"
#include "worker/engine/int8/int8_network.h"

namespace bitsweep::engine::int8 {

absl::StatusOr<EvalResult> EvaluateInt8(const Graph& graph, const Dataset& dataset,
                                        const EvalOptions& options) {
  if (options.quant == nullptr) {
    return absl::InvalidArgumentError("int8 evaluation needs a quantization plan");
  }
  return EvaluateNetwork(
      graph, dataset, options, [&](int64_t batch, std::map<std::string, Shape> input_shapes) {
        Int8NetworkOptions net_options;
        net_options.batch = batch;
        net_options.threads = options.threads;
        net_options.plan = options.quant;
        net_options.input_shapes = std::move(input_shapes);
        return Int8Network::Create(graph, net_options);
      });
}

absl::StatusOr<TrialResult> RunInt8Trial(const TrialInputs& inputs, const EvalOptions& options) {
  // Checking the formats first makes calibration always needed: every int8 layer quantizes its
  // inputs.
  return RunTrialWith(inputs, options,
                      {.evaluate = EvaluateInt8, .check_formats = CheckInt8Plan});
}

}  // namespace bitsweep::engine::int8
