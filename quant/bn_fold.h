// The arithmetic of folding a BatchNormalization into the Conv before it. The engine's
// FoldBatchNorm graph pass (graph_passes.h) and the QDQ exporter (server/export/qdq.h) both call
// this, so an exported model carries exactly the weights a trial quantized. oneDNN-free (part of
// bitsweep_quant_spec, which the coordinator links).
//
//   FoldedConv f = FoldBatchNormIntoConv(w, out_channels, bias, {gamma, beta, mean, var, eps});
#ifndef BITSWEEP_QUANT_BN_FOLD_H_
#define BITSWEEP_QUANT_BN_FOLD_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace bitsweep::quant {

struct BatchNormParams {
  absl::Span<const float> scale;  // gamma
  absl::Span<const float> shift;  // beta
  absl::Span<const float> mean;
  absl::Span<const float> var;
  float epsilon = 1e-5f;
};

struct FoldedConv {
  std::vector<float> weights;  // the conv's layout, [out_channels, ...]
  std::vector<float> bias;     // out_channels
};

// True when the shapes fit: weights split evenly into out_channels > 0 rows, the four
// BatchNormalization vectors and a non-empty bias have out_channels elements.
bool CanFoldBatchNorm(size_t weight_count, int64_t out_channels, size_t bias_count,
                      const BatchNormParams& bn);

// Per output channel c, in double: s = scale[c] / sqrt(var[c] + epsilon);
// W'[c, k] = W[c, k] * s; b'[c] = (b[c] - mean[c]) * s + shift[c] (b = 0 without a bias).
// Requires CanFoldBatchNorm.
FoldedConv FoldBatchNormIntoConv(absl::Span<const float> weights, int64_t out_channels,
                                 absl::Span<const float> bias, const BatchNormParams& bn);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_BN_FOLD_H_
