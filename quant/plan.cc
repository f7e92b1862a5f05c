#include "quant/plan.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace bitsweep::quant {

Quantizer MakeWeightQuantizer(const NumberFormat& format, Rounding rounding, uint64_t seed,
                              const float* weights, int64_t count, int64_t channels) {
  auto max_abs = [&](int64_t begin, int64_t end) {
    float m = 0;
    for (int64_t i = begin; i < end; ++i) m = std::max(m, std::fabs(weights[i]));
    return m;
  };
  Quantizer q;
  switch (format.kind) {
    case FormatKind::kFp32:
      q.format = format;
      break;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
      q = MakeFixedQuantizer(format, max_abs(0, count), rounding);
      break;
    case FormatKind::kMinifloat:
      q = MakeMinifloatQuantizer(format, rounding);
      break;
    case FormatKind::kPow2:
      q = MakePow2Quantizer(format, max_abs(0, count));
      break;
    case FormatKind::kInt: {
      const int64_t groups = format.per_channel ? channels : 1;
      const int64_t per = count / groups;
      std::vector<float> lo, hi;
      for (int64_t g = 0; g < groups; ++g) {
        float mn = 0, mx = 0;  // ranges include 0
        for (int64_t i = g * per; i < (g + 1) * per; ++i) {
          mn = std::min(mn, weights[i]);
          mx = std::max(mx, weights[i]);
        }
        lo.push_back(mn);
        hi.push_back(mx);
      }
      q = MakeIntQuantizer(format, lo, hi, rounding);
      break;
    }
  }
  q.seed = seed;
  return q;
}

Quantizer MakeActivationQuantizer(const NumberFormat& format, const TensorStats& stats,
                                  const QuantConfig& config) {
  Quantizer q;
  switch (format.kind) {
    case FormatKind::kFp32:
    case FormatKind::kPow2:  // rejected for activations by ResolveFormats
      q.format = format;
      break;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
      q = MakeFixedQuantizer(format, stats.max_abs(), config.rounding,
                             config.ristretto_activations);
      break;
    case FormatKind::kMinifloat:
      q = MakeMinifloatQuantizer(format, config.rounding);
      break;
    case FormatKind::kInt: {
      const float clip = ChooseClipMagnitude(stats, config.calibration, format.bits);
      const float lo = std::max(std::min(stats.min, 0.0f), -clip);
      const float hi = std::min(std::max(stats.max, 0.0f), clip);
      q = MakeIntQuantizer(format, {lo}, {hi}, config.rounding);
      break;
    }
  }
  q.seed = config.seed;
  return q;
}

bool SameGrid(const Quantizer& a, const Quantizer& b) {
  if (a.format.kind != b.format.kind || a.format.bits != b.format.bits) return false;
  switch (a.format.kind) {
    case FormatKind::kFp32:
      return true;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
      return a.fractional_bits == b.fractional_bits;
    case FormatKind::kMinifloat:
      return a.format.exponent_bits == b.format.exponent_bits &&
             a.format.mantissa_bits == b.format.mantissa_bits &&
             a.format.denormals == b.format.denormals;
    case FormatKind::kPow2:
      return a.max_exponent == b.max_exponent;
    case FormatKind::kInt:
      return a.scale == b.scale && a.zero_point == b.zero_point &&
             a.format.symmetric == b.format.symmetric;
  }
  return false;
}

absl::StatusOr<QuantPlan> BuildQuantPlan(const std::vector<LayerInfo>& layers,
                                         const std::vector<LayerFormats>& formats,
                                         const std::map<std::string, ActivationStats>& stats,
                                         const QuantConfig& config) {
  QuantPlan plan;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerFormats& f = formats[i];
    LayerQuantPlan p;
    p.weights = f.weights;
    p.rounding = config.rounding;
    p.seed = config.seed;
    const bool needs_stats =
        f.inputs.kind != FormatKind::kFp32 || f.outputs.kind != FormatKind::kFp32;
    auto it = stats.find(layers[i].name);
    if (needs_stats && it == stats.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer '", layers[i].name, "' has no calibration statistics"));
    }
    if (needs_stats) {
      p.inputs = MakeActivationQuantizer(f.inputs, it->second.inputs, config);
      p.outputs = MakeActivationQuantizer(f.outputs, it->second.outputs, config);
    }
    plan[layers[i].name] = std::move(p);
  }
  return plan;
}

}  // namespace bitsweep::quant
