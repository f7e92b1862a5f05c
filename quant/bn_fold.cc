#include "quant/bn_fold.h"

#include <cmath>

namespace bitsweep::quant {

bool CanFoldBatchNorm(size_t weight_count, int64_t out_channels, size_t bias_count,
                      const BatchNormParams& bn) {
  if (out_channels <= 0 || weight_count == 0 || weight_count % out_channels != 0) return false;
  const size_t oc = static_cast<size_t>(out_channels);
  return bn.scale.size() == oc && bn.shift.size() == oc && bn.mean.size() == oc &&
         bn.var.size() == oc && (bias_count == 0 || bias_count == oc);
}

FoldedConv FoldBatchNormIntoConv(absl::Span<const float> weights, int64_t out_channels,
                                 absl::Span<const float> bias, const BatchNormParams& bn) {
  FoldedConv folded;
  folded.weights.resize(weights.size());
  folded.bias.resize(out_channels);
  const size_t per_channel = weights.size() / out_channels;
  for (int64_t c = 0; c < out_channels; ++c) {
    const double s = bn.scale[c] / std::sqrt(double{bn.var[c]} + bn.epsilon);
    for (size_t k = 0; k < per_channel; ++k) {
      folded.weights[c * per_channel + k] = static_cast<float>(weights[c * per_channel + k] * s);
    }
    const double b = bias.empty() ? 0.0 : bias[c];
    folded.bias[c] = static_cast<float>((b - bn.mean[c]) * s + bn.shift[c]);
  }
  return folded;
}

}  // namespace bitsweep::quant
