#include "worker/engine/int8/int8_evaluate.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/calibration.h"
#include "worker/engine/int8/int8_network.h"

namespace bitsweep::engine::int8 {

absl::StatusOr<EvalResult> EvaluateInt8(const Graph& graph, const Dataset& dataset,
                                        const EvalOptions& options) {
  if (options.quant == nullptr) {
    return absl::InvalidArgumentError("int8 evaluation needs a quantization plan");
  }
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(graph.source, ": evaluation needs exactly one "
                                                   "runtime input, the model has ",
                                                   graph.inputs.size()));
  }
  if (dataset.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", dataset.reference, "' is empty"));
  }
  RETURN_IF_ERROR(CheckFitsInput(dataset, graph.inputs[0].shape, graph.inputs[0].name));
  const int64_t batch = std::min<int64_t>(options.batch, dataset.size());
  Int8NetworkOptions net_options;
  net_options.batch = batch;
  net_options.threads = options.threads;
  net_options.plan = options.quant;
  Shape input_shape = dataset.images.shape();
  input_shape[0] = batch;
  net_options.input_shapes[graph.inputs[0].name] = input_shape;
  ASSIGN_OR_RETURN(std::unique_ptr<Int8Network> net, Int8Network::Create(graph, net_options));

  const Shape& out_shape = net->outputs()[0].shape;
  if (out_shape.size() != 2 || out_shape[0] != batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        graph.source, ": output '", net->outputs()[0].name, "' has shape ",
        ShapeToString(out_shape), "; evaluation needs class scores [batch, classes]"));
  }
  const int num_classes = static_cast<int>(out_shape[1]);
  if (dataset.num_classes > num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", dataset.reference, "' has labels up to ", dataset.num_classes - 1,
        " but the model's output '", net->outputs()[0].name, "' has only ", num_classes,
        " classes"));
  }
  const int producer = net->graph().ProducerOf(net->outputs()[0].name);
  const bool probabilities =
      producer >= 0 && net->graph().nodes[producer].op == OpKind::kSoftmax;

  const int64_t sample_size = NumElements(dataset.sample_shape());
  std::vector<float> input(batch * sample_size);
  std::vector<float> scores(batch * num_classes);
  int64_t top1 = 0, top5 = 0;
  double loss = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < dataset.size(); first += batch) {
    const int64_t count = std::min(batch, dataset.size() - first);
    const float* src = dataset.images.floats().data() + first * sample_size;
    std::memcpy(input.data(), src, count * sample_size * sizeof(float));
    if (count < batch) std::fill(input.begin() + count * sample_size, input.end(), 0.0f);
    RETURN_IF_ERROR(net->RunSingle(input.data(), scores.data()));
    for (int64_t i = 0; i < count; ++i) {
      const RowScore r = ScoreRow(scores.data() + i * num_classes, num_classes,
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
  result.layers = net->layers();
  result.weight_quantizers = net->weight_quantizers();
  return result;
}

absl::StatusOr<TrialResult> RunInt8Trial(const TrialInputs& in, const EvalOptions& options) {
  if (in.graph == nullptr || in.eval == nullptr || in.config == nullptr) {
    return absl::InvalidArgumentError("a trial needs a graph, an evaluation split and a config");
  }
  TrialResult result;
  RETURN_IF_ERROR(
      CheckFitsInput(*in.eval, in.graph->inputs.at(0).shape, in.graph->inputs[0].name));
  ASSIGN_OR_RETURN(result.layers, InspectLayers(*in.graph, in.eval->sample_shape()));
  ASSIGN_OR_RETURN(result.formats, quant::ResolveFormats(*in.config, result.layers));
  // Fail before calibrating: the formats alone decide whether the int8 path can run the config.
  {
    quant::QuantPlan formats_only;
    for (size_t i = 0; i < result.layers.size(); ++i) {
      quant::LayerQuantPlan& p = formats_only[result.layers[i].name];
      p.weights = result.formats[i].weights;
      p.rounding = in.config->rounding;
      p.inputs.format = result.formats[i].inputs;
      p.inputs.scale = {1.0f};
      p.outputs.format = result.formats[i].outputs;
      p.outputs.scale = {1.0f};
    }
    RETURN_IF_ERROR(CheckInt8Plan(*in.graph, formats_only));
  }
  if (in.calibration == nullptr) {
    return absl::InvalidArgumentError(
        "the config quantizes activations: a calibration split is required");
  }
  CalibrationRunOptions calibration;
  calibration.threads = options.threads;
  calibration.histograms = in.config->calibration.method != quant::CalibrationMethod::kMax;
  if (in.calibration_cache != nullptr) {
    ASSIGN_OR_RETURN(result.stats,
                     in.calibration_cache->GetOrCompute(*in.graph, in.model_key, *in.calibration,
                                                        in.calibration_key, calibration));
  } else {
    ASSIGN_OR_RETURN(result.stats, CalibrateActivations(*in.graph, *in.calibration, calibration));
  }
  ASSIGN_OR_RETURN(result.plan,
                   quant::BuildQuantPlan(result.layers, result.formats, result.stats, *in.config));
  EvalOptions eval_options = options;
  eval_options.quant = &result.plan;
  ASSIGN_OR_RETURN(result.eval, EvaluateInt8(*in.graph, *in.eval, eval_options));
  result.cost = quant::EstimateCost(result.layers, result.formats, in.profile);
  return result;
}

}  // namespace bitsweep::engine::int8
