// What an inference backend plugs into the engine's one evaluation loop and one trial body.
// Internal to the engine: Evaluate and RunTrial (evaluate.h, trial.h: the fp32 emulation through
// Network) and int8::EvaluateInt8 and int8::RunInt8Trial (int8/int8_evaluate.h: oneDNN's int8
// primitives through Int8Network) differ only in the network they compile and, for trials, a
// check of the formats before calibration; the batching, padding, scoring and timing, and the
// trial's formats, calibration, plan and cost are written once, here and in evaluate.cc/trial.cc.
//
//   return EvaluateNetwork(graph, dataset, options,
//                          [&](int64_t batch, std::map<std::string, Shape> shapes) {
//                            NetworkOptions o; ...; return Network::Create(graph, o);
//                          });
//   return RunTrialWith(inputs, options, {.evaluate = EvaluateInt8, .check_formats = ...});
#ifndef BITSWEEP_WORKER_ENGINE_EVAL_BACKEND_H_
#define BITSWEEP_WORKER_ENGINE_EVAL_BACKEND_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/graph.h"
#include "worker/engine/inference_network.h"
#include "quant/plan.h"
#include "worker/engine/trial.h"

namespace bitsweep::engine {

// Runs one batch: `input` holds `batch` samples; the result points at `batch` rows of scores,
// valid until the next call.
using RunBatchFn = std::function<absl::StatusOr<const float*>(const float* input)>;

// Scores every sample of `dataset` in batches of `batch` (the last one zero-padded, its padded rows
// ignored): top-1, top-5, mean loss, samples, and the seconds and images per second of the loop.
absl::StatusOr<EvalResult> ScoreDataset(const Dataset& dataset, int64_t batch, int num_classes,
                                        bool probabilities, const RunBatchFn& run_batch);

// Compiles the network an evaluation runs, for `batch` and the runtime input's shape at it.
using CompileForEvalFn = std::function<absl::StatusOr<std::unique_ptr<InferenceNetwork>>(
    int64_t batch, std::map<std::string, Shape> input_shapes)>;

// The images per run when an evaluation batch of `batch` images needs `activation_bytes` of
// activations: `batch` itself, or fewer when those exceed what stays in cache (EvaluateNetwork).
int64_t EvalSubBatch(int64_t batch, int64_t activation_bytes);

// Evaluate (evaluate.h) through the network `compile` returns: checks the graph's one runtime
// input against the dataset, compiles for min(options.batch, dataset size) -- and again for a
// sub-batch (EvalSubBatch) when its activations are too large to stay in cache, unless the plan
// rounds stochastically; the batch then runs sub-batch by sub-batch --, checks that the first
// output holds class scores [batch, classes] covering the labels (probabilities when the graph
// ends in Softmax), and scores the dataset (ScoreDataset). The result also carries the network's
// layers and weight quantizers.
absl::StatusOr<EvalResult> EvaluateNetwork(const Graph& graph, const Dataset& dataset,
                                           const EvalOptions& options,
                                           const CompileForEvalFn& compile);

// How a trial evaluates its plan.
struct TrialBackend {
  // Evaluates the graph with options.quant set to the trial's plan (Evaluate: the emulation).
  std::function<absl::StatusOr<EvalResult>(const Graph&, const Dataset&, const EvalOptions&)>
      evaluate;
  // Optional: checked before calibration, on a plan with the resolved formats and rounding but
  // nothing calibrated (every scale 1), so that a config the backend cannot run fails before the
  // costly part.
  std::function<absl::Status(const Graph&, const quant::QuantPlan&)> check_formats;
};

// RunTrial (trial.h) with its evaluation done by `backend`.
absl::StatusOr<TrialResult> RunTrialWith(const TrialInputs& inputs, const EvalOptions& options,
                                         const TrialBackend& backend);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_EVAL_BACKEND_H_
