#include "worker/engine/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/network.h"

namespace bitsweep::engine {
namespace {

// The batch an evaluation compiles for and the runtime input's shape at it.
struct EvalBatch {
  int64_t batch = 0;
  std::map<std::string, Shape> input_shapes;
};

absl::StatusOr<EvalBatch> PrepareEvaluation(const Graph& graph, const Dataset& dataset,
                                            const EvalOptions& options) {
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(graph.source, ": evaluation needs exactly one "
                                                   "runtime input, the model has ",
                                                   graph.inputs.size()));
  }
  if (dataset.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", dataset.reference, "' is empty"));
  }
  RETURN_IF_ERROR(CheckFitsInput(dataset, graph.inputs[0].shape, graph.inputs[0].name));
  EvalBatch b;
  b.batch = std::min<int64_t>(options.batch, dataset.size());
  Shape input_shape = dataset.shape();
  input_shape[0] = b.batch;
  b.input_shapes[graph.inputs[0].name] = input_shape;
  return b;
}

// How a compiled network's first output reads as class scores.
struct ScoresLayout {
  int num_classes = 0;
  bool probabilities = false;  // the graph ends in Softmax
};

absl::StatusOr<ScoresLayout> CheckScores(const Graph& source, const Dataset& dataset,
                                         int64_t batch, const Graph& compiled,
                                         const ValueInfo& output) {
  const Shape& out_shape = output.shape;
  if (out_shape.size() != 2 || out_shape[0] != batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        source.source, ": output '", output.name, "' has shape ", ShapeToString(out_shape),
        "; evaluation needs class scores [batch, classes]"));
  }
  ScoresLayout layout;
  layout.num_classes = static_cast<int>(out_shape[1]);
  if (dataset.num_classes > layout.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", dataset.reference, "' has labels up to ", dataset.num_classes - 1,
        " but the model's output '", output.name, "' has only ", layout.num_classes, " classes"));
  }
  const int producer = compiled.ProducerOf(output.name);
  layout.probabilities = producer >= 0 && compiled.nodes[producer].op == OpKind::kSoftmax;
  return layout;
}

// Above this much activation memory (InferenceNetwork::activation_bytes), an evaluation batch
// runs through a network compiled for a sub-batch, one sub-batch after the other: each one's
// values then stay in cache from layer to layer. Measured (docs/BENCHMARKS.md, CPU time per image
// at 64 px): mobilenet_v2 and efficientnet_b0 run the same from batch 8 to 32 (arena up to about
// 13 MiB) and 15-35% slower at 256.
constexpr int64_t kEvalActivationBytes = int64_t{16} << 20;

// Stochastic rounding draws by the element's index in the whole batch: a sub-batch would draw
// other values.
bool HasStochasticRounding(const quant::QuantPlan* plan) {
  if (plan == nullptr) return false;
  for (const auto& [name, layer] : *plan) {
    if (layer.rounding == quant::Rounding::kStochastic ||
        layer.inputs.rounding == quant::Rounding::kStochastic ||
        layer.outputs.rounding == quant::Rounding::kStochastic) {
      return true;
    }
  }
  return false;
}

}  // namespace

int64_t EvalSubBatch(int64_t batch, int64_t activation_bytes) {
  if (batch <= 1 || activation_bytes <= kEvalActivationBytes) return batch;
  const int64_t per_image = std::max<int64_t>(1, activation_bytes / batch);
  const int64_t most = std::clamp<int64_t>(kEvalActivationBytes / per_image, 1, batch);
  // As many runs as needed, of equal size: the last one pads the fewest images.
  const int64_t runs = (batch + most - 1) / most;
  return (batch + runs - 1) / runs;
}

RowScore ScoreRow(const float* scores, int num_classes, int label, bool scores_are_probabilities) {
  RowScore r;
  const float target = scores[label];
  // Classes ranked above the label; ties go to the lower index, as argmax does.
  int better = 0;
  for (int c = 0; c < num_classes; ++c) {
    better += scores[c] > target || (scores[c] == target && c < label);
  }
  r.top1 = better == 0;
  r.top5 = better < 5;
  if (scores_are_probabilities) {
    r.loss = -std::log(std::max(static_cast<double>(target), 1e-12));
  } else {
    const double max_score = *std::max_element(scores, scores + num_classes);
    double sum = 0;
    for (int c = 0; c < num_classes; ++c) sum += std::exp(double{scores[c]} - max_score);
    r.loss = std::log(sum) + max_score - target;
  }
  return r;
}

absl::StatusOr<EvalResult> ScoreDataset(const Dataset& dataset, int64_t batch, int num_classes,
                                        bool probabilities, const RunBatchFn& run_batch) {
  const int64_t sample_size = NumElements(dataset.sample_shape());
  std::vector<float> input(batch * sample_size);
  int64_t top1 = 0, top5 = 0;
  double loss = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < dataset.size(); first += batch) {
    const int64_t count = std::min(batch, dataset.size() - first);
    RETURN_IF_ERROR(dataset.ReadSamples(first, count, input.data()));
    if (count < batch) std::fill(input.begin() + count * sample_size, input.end(), 0.0f);
    ASSIGN_OR_RETURN(const float* scores, run_batch(input.data()));
    for (int64_t i = 0; i < count; ++i) {
      const RowScore r = ScoreRow(scores + i * num_classes, num_classes,
                                  dataset.labels[first + i], probabilities);
      top1 += r.top1;
      top5 += r.top5;
      loss += r.loss;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EvalResult result;
  result.samples = dataset.size();
  result.top1 = static_cast<double>(top1) / result.samples;
  result.top5 = static_cast<double>(top5) / result.samples;
  result.loss = loss / result.samples;
  result.seconds = seconds;
  result.images_per_second = seconds > 0 ? result.samples / seconds : 0;
  return result;
}

absl::StatusOr<EvalResult> EvaluateNetwork(const Graph& graph, const Dataset& dataset,
                                           const EvalOptions& options,
                                           const CompileForEvalFn& compile) {
  ASSIGN_OR_RETURN(EvalBatch b, PrepareEvaluation(graph, dataset, options));
  ASSIGN_OR_RETURN(std::unique_ptr<InferenceNetwork> net, compile(b.batch, b.input_shapes));
  // A batch whose activations do not fit in cache runs as sub-batches (the same rows, computed
  // by a network compiled for fewer images).
  int64_t sub = HasStochasticRounding(options.quant)
                    ? b.batch
                    : EvalSubBatch(b.batch, net->activation_bytes());
  if (sub < b.batch) {
    std::map<std::string, Shape> shapes = b.input_shapes;
    shapes.begin()->second[0] = sub;
    net.reset();  // one network at a time
    ASSIGN_OR_RETURN(net, compile(sub, std::move(shapes)));
  }
  ASSIGN_OR_RETURN(const ScoresLayout layout,
                   CheckScores(graph, dataset, sub, net->graph(), net->outputs()[0]));
  const int64_t sample_size = NumElements(dataset.sample_shape());
  std::vector<float> scores(b.batch * layout.num_classes);
  std::vector<float> padded, padded_scores;  // the last, partial sub-batch of a batch
  ASSIGN_OR_RETURN(
      EvalResult result,
      ScoreDataset(dataset, b.batch, layout.num_classes, layout.probabilities,
                   [&](const float* input) -> absl::StatusOr<const float*> {
                     RETURN_IF_ERROR(CheckStop(options.stop, "evaluation"));
                     for (int64_t first = 0; first < b.batch; first += sub) {
                       const int64_t count = std::min(sub, b.batch - first);
                       float* rows = scores.data() + first * layout.num_classes;
                       const float* in = input + first * sample_size;
                       if (count == sub) {
                         RETURN_IF_ERROR(net->RunSingle(in, rows));
                         continue;
                       }
                       padded.assign(sub * sample_size, 0.0f);
                       std::copy(in, in + count * sample_size, padded.begin());
                       padded_scores.resize(sub * layout.num_classes);
                       RETURN_IF_ERROR(net->RunSingle(padded.data(), padded_scores.data()));
                       std::copy(padded_scores.begin(),
                                 padded_scores.begin() + count * layout.num_classes, rows);
                     }
                     return scores.data();
                   }));
  result.layers = net->layers();
  result.weight_quantizers = net->weight_quantizers();
  return result;
}

absl::StatusOr<EvalResult> Evaluate(const Graph& graph, const Dataset& dataset,
                                    const EvalOptions& options) {
  return EvaluateNetwork(
      graph, dataset, options, [&](int64_t batch, std::map<std::string, Shape> input_shapes) {
        NetworkOptions net_options;
        net_options.batch = batch;
        net_options.threads = options.threads;
        net_options.quant = options.quant;
        net_options.input_shapes = std::move(input_shapes);
        return Network::Create(graph, net_options);
      });
}

}  // namespace bitsweep::engine
