#include "worker/engine/trial.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/engine/calibration.h"
#include "worker/engine/network.h"

namespace bitsweep::engine {

absl::StatusOr<std::vector<LayerInfo>> InspectLayers(const Graph& graph, const Shape& sample_shape) {
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(graph.source, ": expected one runtime input"));
  }
  NetworkOptions options;
  Shape shape = {1};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  options.input_shapes[graph.inputs[0].name] = shape;
  ASSIGN_OR_RETURN(std::unique_ptr<Network> net, Network::Create(graph, options));
  return net->layers();
}

absl::StatusOr<TrialResult> RunTrial(const TrialInputs& in, const EvalOptions& options) {
  if (in.graph == nullptr || in.eval == nullptr || in.config == nullptr) {
    return absl::InvalidArgumentError("a trial needs a graph, an evaluation split and a config");
  }
  TrialResult result;
  RETURN_IF_ERROR(CheckFitsInput(*in.eval, in.graph->inputs.at(0).shape, in.graph->inputs[0].name));
  ASSIGN_OR_RETURN(result.layers, InspectLayers(*in.graph, in.eval->sample_shape()));
  ASSIGN_OR_RETURN(result.formats, quant::ResolveFormats(*in.config, result.layers));
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
  ASSIGN_OR_RETURN(result.eval, Evaluate(*in.graph, *in.eval, eval_options));
  result.cost = quant::EstimateCost(result.layers, result.formats, in.profile);
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
