// Range calibrators: choose the clipping range of an integer (or fixed-point) quantizer from the
// statistics of a tensor gathered over a calibration split.
//
//   TensorStats stats;                      // filled by calibration (calibration.h)
//   stats.Add(values.data(), values.size());  // first pass: min/max
//   stats.StartHistogram();                 // fixes the histogram range to [0, max_abs]
//   stats.AddToHistogram(values.data(), values.size());  // second pass
//   float t = ChooseClipMagnitude(stats, {.method = CalibrationMethod::kEntropy}, /*bits=*/8);
//
// Methods: max (T = max|x|), percentile (T = the p-th percentile of |x|), mse (T minimizing the
// expected squared quantization error over the histogram for a symmetric B-bit grid), entropy
// (TensorRT-style: T minimizing the KL divergence between the clipped reference distribution and
// its 2^(B-1)-level quantized version, over 2048 |x| bins).
#ifndef BITSWEEP_QUANT_CALIBRATORS_H_
#define BITSWEEP_QUANT_CALIBRATORS_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace bitsweep::quant {

enum class CalibrationMethod { kMax, kPercentile, kMse, kEntropy };

struct CalibrationOptions {
  CalibrationMethod method = CalibrationMethod::kMax;
  double percentile = 99.99;  // kPercentile, in (0, 100]
};

absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(std::string_view text);  // max|percentile|mse|entropy
std::string_view CalibrationMethodName(CalibrationMethod method);

struct TensorStats {
  static constexpr int kBins = 2048;
  float min = 0, max = 0;       // over all values seen
  int64_t count = 0;
  std::vector<double> histogram;  // kBins counts of |x| over [0, histogram_max]
  float histogram_max = 0;

  float max_abs() const;
  void Add(const float* values, int64_t n);            // pass 1: min, max, count
  void StartHistogram();                                // histogram_max = max_abs()
  void AddToHistogram(const float* values, int64_t n);  // pass 2
  void Merge(const TensorStats& other);  // same histogram_max required for histograms
};

// The clip magnitude T > 0 (or 0 for an all-zero tensor). Without a histogram only kMax works;
// the others fall back to max.
float ChooseClipMagnitude(const TensorStats& stats, const CalibrationOptions& options, int bits);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_CALIBRATORS_H_
