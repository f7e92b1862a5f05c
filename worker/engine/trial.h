// A trial: one quantization config evaluated end to end on a model -- resolve each layer's formats,
// calibrate activation ranges, build the plan, emulate inference on the evaluation split, and
// price the result with the cost model. What `bitsweep eval --config` prints and what a worker
// reports for each trial.
//
//   TrialInputs in{.graph = &graph, .eval = &test, .calibration = &calib, .config = &config};
//   ASSIGN_OR_RETURN(TrialResult r, RunTrial(in, {.batch = 256, .threads = 2}));
//   printf("top1 %.4f, %.1f pJ\n", r.eval.top1, r.cost.total.energy_pj);
#ifndef BITSWEEP_WORKER_ENGINE_TRIAL_H_
#define BITSWEEP_WORKER_ENGINE_TRIAL_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/graph.h"
#include "quant/config.h"
#include "quant/cost_model.h"
#include "quant/plan.h"
#include "worker/engine/train/trainer.h"
#include "onnx/onnx_pb.h"

namespace bitsweep::engine {

struct TrialInputs {
  const Graph* graph = nullptr;
  const Dataset* eval = nullptr;
  // Needed when any activation is quantized; may be null otherwise.
  const Dataset* calibration = nullptr;
  const quant::QuantConfig* config = nullptr;
  quant::HardwareProfile profile = quant::DefaultHardwareProfile();
  // Optional: reuse calibrations across trials of the same model and split. The keys identify
  // the model and the calibration split (content, not just names).
  CalibrationCache* calibration_cache = nullptr;
  std::string model_key;
  std::string calibration_key;
};

struct TrialResult {
  EvalResult eval;
  quant::CostReport cost;
  std::vector<quant::LayerInfo> layers;
  std::vector<quant::LayerFormats> formats;        // parallel to layers
  quant::QuantPlan plan;
  std::map<std::string, quant::ActivationStats> stats;  // empty when nothing needed calibration
};

// The quantizable layers of a graph for a given sample shape, per sample (compiles an fp32
// network at the batch the model declares, or 1 when it is dynamic).
absl::StatusOr<std::vector<quant::LayerInfo>> InspectLayers(const Graph& graph, const Shape& sample_shape);

// options.stop (stop.h) also stops the calibration; CANCELLED then.
absl::StatusOr<TrialResult> RunTrial(const TrialInputs& inputs, const EvalOptions& options);

// Quantization-aware fine-tuning of one trial: RunTrial on `model`, then `options` (max_steps,
// learning rate, ...) of SGD on `train` with the trial's quantizers as fake-quant hooks (weights
// re-quantized from the fp32 shadow weights every step), then RunTrial again on the tuned model,
// recalibrated. `inputs.graph` is ignored: the graph is imported from `model`. Training stops on
// options.stop, or on eval_options.stop when that is empty.
struct FinetuneResult {
  TrialResult before;
  TrialResult after;
  onnx::ModelProto tuned;  // the fp32 shadow model
};
absl::StatusOr<FinetuneResult> FinetuneTrial(const onnx::ModelProto& model, TrialInputs inputs,
                                             const Dataset& train, const TrainOptions& options,
                                             const EvalOptions& eval_options);

// Fake-quant hooks applying a plan's quantizers. Weight quantizers follow the shadow weights:
// their FL or scale is re-derived from the current values each step (for a Conv with a folded
// BatchNormalization, from the folded weights, as the emulation calibrates them).
// quantizes_weights answers from the plan as it is when the training network is built.
FakeQuantHooks HooksFromPlan(const quant::QuantPlan& plan, const Graph& graph);

// The format a layer role ended up with, with its calibrated parameter:
// "fixed:8 (FL=5)", "int:8:sym:tensor (scale=0.0123)", "pow2:4 (e_max=-1)", "fp32".
std::string DescribeQuantizer(const quant::Quantizer& q);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TRIAL_H_
