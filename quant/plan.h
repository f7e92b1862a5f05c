// QuantPlan: the calibrated quantizers of every quantizable layer, as Network::Create consumes
// them (network.h). Activation quantizers come from calibration statistics; weight quantizers are
// built inside the Network from the weights it actually runs (after BatchNorm folding), so the plan
// carries only the weights' format.
//
//   ASSIGN_OR_RETURN(auto stats, CalibrateActivations(graph, calibration_split, {}));  // calibration.h
//   ASSIGN_OR_RETURN(auto formats, ResolveFormats(config, layers));                   // config.h
//   ASSIGN_OR_RETURN(QuantPlan plan, BuildQuantPlan(layers, formats, stats, config));
//   NetworkOptions options; options.quant = &plan;
#ifndef BITSWEEP_QUANT_PLAN_H_
#define BITSWEEP_QUANT_PLAN_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/layer_info.h"
#include "quant/calibrators.h"
#include "quant/config.h"
#include "quant/format.h"

namespace bitsweep::quant {

struct LayerQuantPlan {
  NumberFormat weights;  // fp32: unquantized
  Rounding rounding = Rounding::kNearestEven;
  uint64_t seed = 0;
  Quantizer inputs;      // format fp32: unquantized
  Quantizer outputs;
};
using QuantPlan = std::map<std::string, LayerQuantPlan>;

// Statistics of one layer's input and output (after its fused activation) over a calibration split.
struct ActivationStats {
  TensorStats inputs, outputs;
};

// q for `count` weights laid out [channels, count / channels] (channels = 1 unless per-channel),
// ranges from max|w| per tensor or per channel.
Quantizer MakeWeightQuantizer(const NumberFormat& format, Rounding rounding, uint64_t seed,
                              const float* weights, int64_t count, int64_t channels);
// q for an activation from its statistics: fixed/ufixed FL from max|x|, int ranges from the
// configured calibrator (asymmetric: [min, max] clipped to the calibrator's magnitude).
Quantizer MakeActivationQuantizer(const NumberFormat& format, const TensorStats& stats,
                                  const QuantConfig& config);
// True when a value quantized by `a` is left unchanged by `b` (same grid and clipping range), so
// quantizing a layer's input again after its producer's output quantizer can be skipped.
bool SameGrid(const Quantizer& a, const Quantizer& b);

// Errors name the layer when its statistics are missing. An unsigned format on a tensor with
// negative values is allowed: they clip to 0, which is what a user asking for it measures.
absl::StatusOr<QuantPlan> BuildQuantPlan(const std::vector<LayerInfo>& layers,
                                         const std::vector<LayerFormats>& formats,
                                         const std::map<std::string, ActivationStats>& stats,
                                         const QuantConfig& config);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_PLAN_H_
