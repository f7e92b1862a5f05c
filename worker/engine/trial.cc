#include "worker/engine/trial.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/engine/calibration.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"

namespace bitsweep::engine {

absl::StatusOr<std::vector<quant::LayerInfo>> InspectLayers(const Graph& graph, const Shape& sample_shape) {
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(graph.source, ": expected one runtime input"));
  }
  NetworkOptions options;
  // LayerInfo is per sample whatever the batch; compile at the model's own batch when it declares
  // one, since a static export may have folded it into a Reshape (ShuffleNet's channel shuffle
  // exported at batch 2 reshapes to [2, 2, 58, H, W]), else at batch 1.
  const int64_t declared = graph.inputs[0].shape.empty() ? -1 : graph.inputs[0].shape[0];
  Shape shape = {declared > 0 ? declared : 1};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  options.input_shapes[graph.inputs[0].name] = shape;
  ASSIGN_OR_RETURN(std::unique_ptr<Network> net, Network::Create(graph, options));
  return net->layers();
}

absl::StatusOr<TrialResult> RunTrialWith(const TrialInputs& in, const EvalOptions& options,
                                         const TrialBackend& backend) {
  if (in.graph == nullptr || in.eval == nullptr || in.config == nullptr) {
    return absl::InvalidArgumentError("a trial needs a graph, an evaluation split and a config");
  }
  TrialResult result;
  RETURN_IF_ERROR(CheckFitsInput(*in.eval, in.graph->inputs.at(0).shape, in.graph->inputs[0].name));
  ASSIGN_OR_RETURN(result.layers, InspectLayers(*in.graph, in.eval->sample_shape()));
  ASSIGN_OR_RETURN(result.formats, quant::ResolveFormats(*in.config, result.layers));
  if (backend.check_formats) {
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
    RETURN_IF_ERROR(backend.check_formats(*in.graph, formats_only));
  }
  bool needs_stats = false;
  for (const quant::LayerFormats& f : result.formats) {
    needs_stats |= f.inputs.kind != quant::FormatKind::kFp32 ||
                   f.outputs.kind != quant::FormatKind::kFp32;
  }
  if (needs_stats) {
    if (in.calibration == nullptr) {
      return absl::InvalidArgumentError(
          "the config quantizes activations: a calibration split is required");
    }
    CalibrationRunOptions calibration;
    calibration.threads = options.threads;
    calibration.stop = options.stop;
    // Never above the evaluation's batch: a model exported with a static batch runs only at it.
    calibration.batch = std::min(calibration.batch, options.batch);
    calibration.histograms = in.config->calibration.method != quant::CalibrationMethod::kMax;
    if (in.calibration_cache != nullptr) {
      ASSIGN_OR_RETURN(result.stats,
                       in.calibration_cache->GetOrCompute(*in.graph, in.model_key, *in.calibration,
                                                          in.calibration_key, calibration));
    } else {
      ASSIGN_OR_RETURN(result.stats, CalibrateActivations(*in.graph, *in.calibration, calibration));
    }
  }
  ASSIGN_OR_RETURN(result.plan,
                   quant::BuildQuantPlan(result.layers, result.formats, result.stats, *in.config));
  EvalOptions eval_options = options;
  eval_options.quant = &result.plan;
  ASSIGN_OR_RETURN(result.eval, backend.evaluate(*in.graph, *in.eval, eval_options));
  result.cost = quant::EstimateCost(result.layers, result.formats, in.profile);
  return result;
}

absl::StatusOr<TrialResult> RunTrial(const TrialInputs& in, const EvalOptions& options) {
  return RunTrialWith(in, options, {.evaluate = Evaluate});
}

FakeQuantHooks HooksFromPlan(const quant::QuantPlan& plan, const Graph& graph) {
  using quant::FormatKind;
  // Output channels lead for Conv and transB=1 Gemm; otherwise weights are one tensor.
  std::map<std::string, int64_t> channels;
  for (const Node& n : graph.nodes) {
    if (n.inputs.size() < 2 || !graph.constants.contains(n.inputs[1])) continue;
    const Shape& w = graph.constants.at(n.inputs[1]).shape();
    const bool leading = n.op == OpKind::kConv || (n.op == OpKind::kGemm && n.trans_b);
    channels[n.name] = leading && !w.empty() ? w[0] : 1;
  }
  FakeQuantHooks hooks;
  hooks.weights = [&plan, channels](const std::string& layer, float* data, int64_t count) {
    auto it = plan.find(layer);
    if (it == plan.end() || it->second.weights.kind == FormatKind::kFp32) return;
    auto c = channels.find(layer);
    const quant::Quantizer q = quant::MakeWeightQuantizer(
        it->second.weights, it->second.rounding, it->second.seed, data, count,
        c == channels.end() ? 1 : c->second);
    quant::QuantizeInPlace(q, data, count);
  };
  hooks.quantizes_weights = [&plan](const std::string& layer) {
    auto it = plan.find(layer);
    return it != plan.end() && it->second.weights.kind != FormatKind::kFp32;
  };
  hooks.inputs = [&plan](const std::string& layer, float* data, int64_t count) {
    auto it = plan.find(layer);
    if (it != plan.end()) quant::QuantizeInPlace(it->second.inputs, data, count);
  };
  hooks.outputs = [&plan](const std::string& layer, float* data, int64_t count) {
    auto it = plan.find(layer);
    if (it != plan.end()) quant::QuantizeInPlace(it->second.outputs, data, count);
  };
  return hooks;
}

absl::StatusOr<FinetuneResult> FinetuneTrial(const onnx::ModelProto& model, TrialInputs inputs,
                                             const Dataset& train, const TrainOptions& options,
                                             const EvalOptions& eval_options) {
  if (options.max_steps < 1) return absl::InvalidArgumentError("fine-tuning needs steps >= 1");
  FinetuneResult result;
  ASSIGN_OR_RETURN(Graph graph, ImportOnnxModel(model, {}, "fine-tuning input"));
  inputs.graph = &graph;
  // Calibration of the tuned model differs from the original's: never share it through a cache.
  inputs.calibration_cache = nullptr;
  ASSIGN_OR_RETURN(result.before, RunTrial(inputs, eval_options));
  TrainOptions train_options = options;
  train_options.epochs = std::max<int>(train_options.epochs, 1000);  // max_steps decides
  train_options.quant = HooksFromPlan(result.before.plan, graph);
  if (!train_options.stop) train_options.stop = eval_options.stop;
  ASSIGN_OR_RETURN(result.tuned, Train(model, train, train_options));
  ASSIGN_OR_RETURN(Graph tuned_graph, ImportOnnxModel(result.tuned, {}, "fine-tuned model"));
  inputs.graph = &tuned_graph;
  ASSIGN_OR_RETURN(result.after, RunTrial(inputs, eval_options));
  return result;
}

std::string DescribeQuantizer(const quant::Quantizer& q) {
  std::string text = quant::FormatToString(q.format);
  switch (q.format.kind) {
    case quant::FormatKind::kFixed:
    case quant::FormatKind::kUfixed:
      if (!q.format.fractional_bits) absl::StrAppend(&text, " (FL=", q.fractional_bits, ")");
      break;
    case quant::FormatKind::kPow2:
      absl::StrAppend(&text, " (e_max=", q.max_exponent, ")");
      break;
    case quant::FormatKind::kInt:
      if (q.scale.size() == 1) {
        absl::StrAppend(&text, absl::StrFormat(" (scale=%.6g", q.scale[0]));
        if (!q.format.symmetric) absl::StrAppend(&text, ", zero_point=", q.zero_point[0]);
        absl::StrAppend(&text, ")");
      } else {
        absl::StrAppend(&text, " (", q.scale.size(), " channel scales)");
      }
      break;
    default:
      break;
  }
  return text;
}

}  // namespace bitsweep::engine
