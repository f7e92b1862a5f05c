// Range calibrators (calibrators.h).
//
// Conventions:
//   * NaN values are ignored by min/max and by the histogram (but counted in `count`).
//   * Histogram bin i counts |x| in [i w, (i+1) w), w = histogram_max / kBins; values at or above
//     histogram_max (e.g. from data added after StartHistogram) go to the last bin.
//   * percentile: linear interpolation inside the bin where the cumulative count reaches p%;
//     p is clamped into (0, 100].
//   * mse: candidates T = j w, j = 1..kBins; error = sum_i h_i (c_i - q_T(c_i))^2 with bin centers
//     c_i, q_T the symmetric grid s * round(c / s), s = T / (2^(B-1)-1), clipped at T.
//   * entropy: candidates i = 2^(B-1) .. kBins bins, T = i w. P = h[0, i) with the outliers
//     (bins >= i) added to P[i-1]; Q = h[0, i) merged into 2^(B-1) levels (bin j -> level
//     floor(j 2^(B-1) / i)) and each level's count spread evenly over the bins where P is nonzero.
//     A candidate whose Q misses some P mass has infinite divergence. B >= 13 (more levels than
//     bins) falls back to max.
//   * Ties between candidates go to the larger T (less clipping). The result is at most
//     max_abs() and positive unless the tensor is all zeros.
#include "quant/calibrators.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitsweep::quant {
namespace {

constexpr int64_t kParallelMin = 16384;
constexpr int kBins = TensorStats::kBins;

int BinOf(float x, double inv_width) {
  const double b = std::fabs(static_cast<double>(x)) * inv_width;
  return b < kBins - 1 ? static_cast<int>(b) : kBins - 1;
}

// Index of the smallest value, ties to the largest index; -1 when none is finite.
int ArgMinLast(const std::vector<double>& v) {
  int best = -1;
  for (int j = 0; j < static_cast<int>(v.size()); ++j) {
    if (std::isfinite(v[j]) && (best < 0 || v[j] <= v[best])) best = j;
  }
  return best;
}

double ClipMse(const std::vector<double>& h, double width, int bits) {
  const double levels = std::ldexp(1.0, std::clamp(bits, 2, 32) - 1) - 1;
  // Suffix sums of h, h c, h c^2 for the clipped part.
  std::vector<double> s0(kBins + 1, 0), s1(kBins + 1, 0), s2(kBins + 1, 0);
  for (int i = kBins - 1; i >= 0; --i) {
    const double c = (i + 0.5) * width;
    s0[i] = s0[i + 1] + h[i];
    s1[i] = s1[i + 1] + h[i] * c;
    s2[i] = s2[i + 1] + h[i] * c * c;
  }
  std::vector<int> nonzero;
  for (int i = 0; i < kBins; ++i) {
    if (h[i] > 0) nonzero.push_back(i);
  }
  std::vector<double> error(kBins, 0);  // error[j - 1] for T = j * width
#pragma omp parallel for schedule(dynamic, 32)
  for (int j = 1; j <= kBins; ++j) {
    const double t = j * width, s = t / levels;
    double e = s2[j] - 2 * t * s1[j] + t * t * s0[j];  // bins >= j: clipped to T
    for (int i : nonzero) {
      if (i >= j) break;
      const double c = (i + 0.5) * width;
      const double d = c - s * std::nearbyint(c / s);
      e += h[i] * d * d;
    }
    error[j - 1] = e;
  }
  const int best = ArgMinLast(error);
  return best < 0 ? kBins * width : (best + 1) * width;
}

double ClipEntropy(const std::vector<double>& histogram, double width, int bits) {
  // Post-ReLU tensors hold most of their values at exactly 0, in the first bin; fitting that spike
  // drives the KL search to tiny thresholds (LeNet-5 at int:8 fell from 90% to 45% top-1).
  // Like pytorch-quantization, count the zero bin as its neighbour.
  std::vector<double> h = histogram;
  if (kBins > 1) h[0] = h[1];
  const int levels = 1 << (std::clamp(bits, 2, 13) - 1);
  if (levels > kBins) return kBins * width;
  std::vector<double> suffix(kBins + 1, 0);
  for (int i = kBins - 1; i >= 0; --i) suffix[i] = suffix[i + 1] + h[i];
  const double total = suffix[0];
  const int first = levels;
  std::vector<double> divergence(kBins - first + 1, std::numeric_limits<double>::infinity());
#pragma omp parallel
  {
    std::vector<double> p(kBins), mass(levels);
    std::vector<int> support(levels);
#pragma omp for schedule(dynamic, 16)
    for (int i = first; i <= kBins; ++i) {
      std::copy(h.begin(), h.begin() + i, p.begin());
      p[i - 1] += suffix[i];
      std::fill(mass.begin(), mass.end(), 0.0);
      std::fill(support.begin(), support.end(), 0);
      for (int j = 0; j < i; ++j) {
        const int level = static_cast<int>(static_cast<int64_t>(j) * levels / i);
        mass[level] += h[j];
        support[level] += p[j] > 0 ? 1 : 0;
      }
      const double q_total = total - suffix[i];
      if (!(q_total > 0)) continue;
      double kl = 0;
      bool finite = true;
      for (int j = 0; j < i && finite; ++j) {
        if (!(p[j] > 0)) continue;
        const int level = static_cast<int>(static_cast<int64_t>(j) * levels / i);
        const double q = mass[level] / support[level] / q_total;
        if (!(q > 0)) {
          finite = false;
          break;
        }
        const double pj = p[j] / total;
        kl += pj * std::log(pj / q);
      }
      if (finite) divergence[i - first] = kl;
    }
  }
  const int best = ArgMinLast(divergence);
  return best < 0 ? kBins * width : (first + best) * width;
}

double ClipPercentile(const std::vector<double>& h, double width, double percentile) {
  if (!(percentile > 0)) percentile = 1e-9;
  percentile = std::min(percentile, 100.0);
  double total = 0;
  for (double c : h) total += c;
  const double target = total * percentile / 100;
  double cum = 0;
  for (int j = 0; j < kBins; ++j) {
    if (h[j] > 0 && cum + h[j] >= target) {
      const double t = (j + std::clamp((target - cum) / h[j], 0.0, 1.0)) * width;
      return t > 0 ? t : width;
    }
    cum += h[j];
  }
  return kBins * width;
}

}  // namespace

absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(std::string_view text) {
  if (text == "max") return CalibrationMethod::kMax;
  if (text == "percentile") return CalibrationMethod::kPercentile;
  if (text == "mse") return CalibrationMethod::kMse;
  if (text == "entropy") return CalibrationMethod::kEntropy;
  return absl::InvalidArgumentError(absl::StrCat("invalid calibration method \"", std::string(text),
                                                 "\" (expected max, percentile, mse or entropy)"));
}

std::string_view CalibrationMethodName(CalibrationMethod method) {
  switch (method) {
    case CalibrationMethod::kMax:
      return "max";
    case CalibrationMethod::kPercentile:
      return "percentile";
    case CalibrationMethod::kMse:
      return "mse";
    case CalibrationMethod::kEntropy:
      return "entropy";
  }
  return "max";
}

float TensorStats::max_abs() const { return std::max(std::fabs(min), std::fabs(max)); }

void TensorStats::Add(const float* values, int64_t n) {
  if (n <= 0) return;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  if (n >= kParallelMin) {
#pragma omp parallel for reduction(min : lo) reduction(max : hi) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float x = values[i];
      lo = x < lo ? x : lo;  // NaN compares false: ignored
      hi = x > hi ? x : hi;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float x = values[i];
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
    }
  }
  if (lo <= hi) {
    if (count == 0) {
      min = lo;
      max = hi;
    } else {
      min = std::min(min, lo);
      max = std::max(max, hi);
    }
  }
  count += n;
}

void TensorStats::StartHistogram() {
  histogram_max = max_abs();
  histogram.assign(kBins, 0.0);
}

void TensorStats::AddToHistogram(const float* values, int64_t n) {
  if (histogram.size() != static_cast<size_t>(kBins)) StartHistogram();
  if (n <= 0) return;
  const double inv_width = histogram_max > 0 && std::isfinite(histogram_max)
                               ? kBins / static_cast<double>(histogram_max)
                               : 0.0;
  if (n < kParallelMin) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isnan(values[i])) histogram[BinOf(values[i], inv_width)] += 1;
    }
    return;
  }
#pragma omp parallel
  {
    std::vector<double> local(kBins, 0.0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isnan(values[i])) local[BinOf(values[i], inv_width)] += 1;
    }
#pragma omp critical(bitsweep_tensor_stats_histogram)
    for (int b = 0; b < kBins; ++b) histogram[b] += local[b];  // integer counts: exact
  }
}

void TensorStats::Merge(const TensorStats& other) {
  if (other.count > 0) {
    if (count == 0) {
      min = other.min;
      max = other.max;
    } else {
      min = std::min(min, other.min);
      max = std::max(max, other.max);
    }
    count += other.count;
  }
  if (other.histogram.size() != static_cast<size_t>(kBins)) return;
  if (histogram.size() != static_cast<size_t>(kBins)) {
    histogram = other.histogram;
    histogram_max = other.histogram_max;
    return;
  }
  if (other.histogram_max == histogram_max) {
    for (int b = 0; b < kBins; ++b) histogram[b] += other.histogram[b];
    return;
  }
  // Different ranges (a contract violation): re-bin the other's bin centers, approximately.
  const double inv_width = histogram_max > 0 ? kBins / static_cast<double>(histogram_max) : 0.0;
  const double other_width = static_cast<double>(other.histogram_max) / kBins;
  for (int b = 0; b < kBins; ++b) {
    if (other.histogram[b] == 0) continue;
    histogram[BinOf(static_cast<float>((b + 0.5) * other_width), inv_width)] += other.histogram[b];
  }
}

float ChooseClipMagnitude(const TensorStats& stats, const CalibrationOptions& options, int bits) {
  const float max_abs = stats.max_abs();
  if (!(max_abs > 0)) return 0.0f;
  if (options.method == CalibrationMethod::kMax || !std::isfinite(max_abs) ||
      stats.histogram.size() != static_cast<size_t>(kBins)) {
    return max_abs;
  }
  double total = 0;
  for (double c : stats.histogram) total += c;
  const double width = static_cast<double>(stats.histogram_max) / kBins;
  if (!(total > 0) || !(width > 0) || !std::isfinite(width)) return max_abs;
  double t = max_abs;
  switch (options.method) {
    case CalibrationMethod::kMax:
      break;
    case CalibrationMethod::kPercentile:
      t = ClipPercentile(stats.histogram, width, options.percentile);
      break;
    case CalibrationMethod::kMse:
      t = ClipMse(stats.histogram, width, bits);
      break;
    case CalibrationMethod::kEntropy:
      t = ClipEntropy(stats.histogram, width, bits);
      break;
  }
  const float clip = static_cast<float>(std::min<double>(t, max_abs));
  return clip > 0 ? clip : max_abs;
}

}  // namespace bitsweep::quant
