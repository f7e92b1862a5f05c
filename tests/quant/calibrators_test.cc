// Range calibrators: tensor statistics, histograms and the four clip-magnitude methods.
#include "quant/calibrators.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quant/format.h"

namespace bitsweep::quant {
namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, std::string(haystack))

constexpr int kBins = TensorStats::kBins;

TensorStats StatsOf(const std::vector<float>& v) {
  TensorStats s;
  s.Add(v.data(), static_cast<int64_t>(v.size()));
  s.StartHistogram();
  s.AddToHistogram(v.data(), static_cast<int64_t>(v.size()));
  return s;
}

float Clip(const TensorStats& s, CalibrationMethod m, int bits, double percentile = 99.99) {
  CalibrationOptions o;
  o.method = m;
  o.percentile = percentile;
  return ChooseClipMagnitude(s, o, bits);
}

std::vector<float> Laplace(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (rng() & 1) ? e(rng) : -e(rng);
  return v;
}

std::vector<float> Uniform(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Mean squared error of an int:B:sym quantizer clipped at t over v.
double QuantizationMse(const std::vector<float>& v, float t, int bits) {
  const NumberFormat f = *ParseFormat("int:" + std::to_string(bits));
  const Quantizer q = MakeIntQuantizer(f, {-t}, {t}, Rounding::kNearestEven);
  std::vector<float> out = v;
  QuantizeInPlace(q, out.data(), static_cast<int64_t>(out.size()));
  double e = 0;
  for (size_t i = 0; i < v.size(); ++i) e += (double(out[i]) - v[i]) * (double(out[i]) - v[i]);
  return e / v.size();
}

TEST(CalibrationMethod, ParseAndName) {
  for (CalibrationMethod m : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                              CalibrationMethod::kMse, CalibrationMethod::kEntropy}) {
    absl::StatusOr<CalibrationMethod> parsed = ParseCalibrationMethod(CalibrationMethodName(m));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_EQ(CalibrationMethodName(CalibrationMethod::kEntropy), "entropy");
  EXPECT_EQ(CalibrationMethodName(CalibrationMethod::kPercentile), "percentile");
  const absl::StatusOr<CalibrationMethod> bad = ParseCalibrationMethod("kl");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(bad.status().message(), "\"kl\"");
  EXPECT_CONTAINS(bad.status().message(), "entropy");
}

TEST(TensorStats, MinMaxCount) {
  TensorStats s;
  EXPECT_EQ(s.max_abs(), 0.0f);
  const std::vector<float> a = {1.0f, 2.5f, -0.5f};
  s.Add(a.data(), 3);
  EXPECT_EQ(s.min, -0.5f);
  EXPECT_EQ(s.max, 2.5f);
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.max_abs(), 2.5f);
  const std::vector<float> b = {-3.0f, std::nanf(""), 0.0f};
  s.Add(b.data(), 3);
  EXPECT_EQ(s.min, -3.0f);
  EXPECT_EQ(s.max, 2.5f);
  EXPECT_EQ(s.count, 6);
  EXPECT_EQ(s.max_abs(), 3.0f);
  s.Add(nullptr, 0);
  EXPECT_EQ(s.count, 6);
  // All-positive data: min is the smallest value, not the initial 0.
  TensorStats p;
  const std::vector<float> c = {4.0f, 2.0f, 3.0f};
  p.Add(c.data(), 3);
  EXPECT_EQ(p.min, 2.0f);
  EXPECT_EQ(p.max, 4.0f);
}

TEST(TensorStats, LargeArraysMatchSmallChunks) {
  const std::vector<float> v = Laplace(300001, 3);  // parallel paths
  const TensorStats one = StatsOf(v);
  TensorStats chunks;
  for (size_t i = 0; i < v.size(); i += 1000) {
    chunks.Add(v.data() + i, static_cast<int64_t>(std::min<size_t>(1000, v.size() - i)));
  }
  chunks.StartHistogram();
  for (size_t i = 0; i < v.size(); i += 1000) {
    chunks.AddToHistogram(v.data() + i, static_cast<int64_t>(std::min<size_t>(1000, v.size() - i)));
  }
  EXPECT_EQ(one.min, chunks.min);
  EXPECT_EQ(one.max, chunks.max);
  EXPECT_EQ(one.count, chunks.count);
  EXPECT_EQ(one.histogram, chunks.histogram);
  double total = 0;
  for (double h : one.histogram) total += h;
  EXPECT_EQ(total, 300001.0);
}

TEST(TensorStats, HistogramBins) {
  const std::vector<float> v = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 0.99f, 0.0001f};
  const TensorStats s = StatsOf(v);
  EXPECT_EQ(s.histogram_max, 1.0f);
  ASSERT_EQ(s.histogram.size(), static_cast<size_t>(kBins));
  EXPECT_EQ(s.histogram[0], 2);      // 0 and 0.0001 (bin width 1/2048)
  EXPECT_EQ(s.histogram[1024], 2);   // |+-0.5|
  EXPECT_EQ(s.histogram[2027], 1);   // 0.99 * 2048 = 2027.5
  EXPECT_EQ(s.histogram[kBins - 1], 2);  // the maximum lands in the last bin
  // Values beyond histogram_max (seen after StartHistogram) go to the last bin; NaN is skipped.
  TensorStats t = s;
  const std::vector<float> more = {5.0f, std::nanf("")};
  t.AddToHistogram(more.data(), 2);
  EXPECT_EQ(t.histogram[kBins - 1], 3);
}

TEST(TensorStats, MergeEqualsOneShot) {
  const std::vector<float> v = Laplace(50000, 7);
  const std::vector<float> p1(v.begin(), v.begin() + 20000), p2(v.begin() + 20000, v.end());
  const TensorStats one = StatsOf(v);
  // Pass 1 on shards, merged.
  TensorStats a, b;
  a.Add(p1.data(), static_cast<int64_t>(p1.size()));
  b.Add(p2.data(), static_cast<int64_t>(p2.size()));
  a.Merge(b);
  EXPECT_EQ(a.min, one.min);
  EXPECT_EQ(a.max, one.max);
  EXPECT_EQ(a.count, one.count);
  // Pass 2 on shards sharing the merged range, merged.
  TensorStats h1 = a, h2 = a;
  h1.StartHistogram();
  h2.StartHistogram();
  h1.AddToHistogram(p1.data(), static_cast<int64_t>(p1.size()));
  h2.AddToHistogram(p2.data(), static_cast<int64_t>(p2.size()));
  h2.count = 0;  // the pass-1 statistics are already in h1
  h1.Merge(h2);
  EXPECT_EQ(h1.histogram, one.histogram);
  EXPECT_EQ(h1.count, one.count);
  for (CalibrationMethod m : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                              CalibrationMethod::kMse, CalibrationMethod::kEntropy}) {
    EXPECT_EQ(Clip(h1, m, 8), Clip(one, m, 8)) << CalibrationMethodName(m);
  }
  // Merging into empty statistics copies.
  TensorStats empty;
  empty.Merge(one);
  EXPECT_EQ(empty.min, one.min);
  EXPECT_EQ(empty.max, one.max);
  EXPECT_EQ(empty.histogram, one.histogram);
  EXPECT_EQ(empty.histogram_max, one.histogram_max);
  // Merging empty statistics changes nothing.
  TensorStats same = one;
  same.Merge(TensorStats{});
  EXPECT_EQ(same.min, one.min);
  EXPECT_EQ(same.count, one.count);
  EXPECT_EQ(same.histogram, one.histogram);
}

TEST(ChooseClipMagnitude, MaxAndFallbacks) {
  const std::vector<float> v = {-2.0f, 1.0f, 0.5f};
  TensorStats s;
  s.Add(v.data(), 3);
  // No histogram: every method falls back to max.
  for (CalibrationMethod m : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                              CalibrationMethod::kMse, CalibrationMethod::kEntropy}) {
    EXPECT_EQ(Clip(s, m, 8), 2.0f) << CalibrationMethodName(m);
  }
  EXPECT_EQ(Clip(StatsOf(v), CalibrationMethod::kMax, 8), 2.0f);
  // More quantized levels than histogram bins: entropy has no candidate but the full range.
  const TensorStats l = StatsOf(Laplace(10000, 1));
  EXPECT_EQ(Clip(l, CalibrationMethod::kEntropy, 16), l.max_abs());
}

TEST(ChooseClipMagnitude, AllZeroTensorGivesZero) {
  const std::vector<float> zeros(1000, 0.0f);
  const TensorStats s = StatsOf(zeros);
  for (CalibrationMethod m : {CalibrationMethod::kMax, CalibrationMethod::kPercentile,
                              CalibrationMethod::kMse, CalibrationMethod::kEntropy}) {
    EXPECT_EQ(Clip(s, m, 8), 0.0f) << CalibrationMethodName(m);
  }
  EXPECT_EQ(Clip(TensorStats{}, CalibrationMethod::kEntropy, 8), 0.0f);
}

TEST(ChooseClipMagnitude, PercentileOfKnownDistributions) {
  // |x| uniform on [0, 1]: the p-th percentile is p / 100.
  std::vector<float> v(100000);
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = (i % 2 ? 1.0f : -1.0f) * (static_cast<float>(i) + 0.5f) / v.size();
  }
  const TensorStats s = StatsOf(v);
  EXPECT_NEAR(Clip(s, CalibrationMethod::kPercentile, 8, 99.0), 0.99, 1e-3);
  EXPECT_NEAR(Clip(s, CalibrationMethod::kPercentile, 8, 50.0), 0.50, 1e-3);
  EXPECT_NEAR(Clip(s, CalibrationMethod::kPercentile, 8, 10.0), 0.10, 1e-3);
  EXPECT_NEAR(Clip(s, CalibrationMethod::kPercentile, 8, 99.99), 0.9999, 1e-3);
  EXPECT_EQ(Clip(s, CalibrationMethod::kPercentile, 8, 100.0), s.max_abs());
  EXPECT_GT(Clip(s, CalibrationMethod::kPercentile, 8, 1e-6), 0.0f);
  EXPECT_EQ(Clip(s, CalibrationMethod::kPercentile, 8, 500.0), s.max_abs());  // clamped
  // Laplace(1): P(|x| > t) = exp(-t), so the 99th percentile of |x| is ln 100 = 4.605.
  const TensorStats l = StatsOf(Laplace(400000, 2));
  EXPECT_NEAR(Clip(l, CalibrationMethod::kPercentile, 8, 99.0), std::log(100.0), 0.1);
  EXPECT_NEAR(Clip(l, CalibrationMethod::kPercentile, 8, 90.0), std::log(10.0), 0.05);
}

TEST(ChooseClipMagnitude, MseAndEntropyClipHeavyTails) {
  const std::vector<float> v = Laplace(200000, 5);
  const TensorStats s = StatsOf(v);
  const float max = s.max_abs();
  ASSERT_GT(max, 10.0f);  // ln(200000) = 12.2
  for (int bits : {4, 8}) {
    SCOPED_TRACE(bits);
    const float mse = Clip(s, CalibrationMethod::kMse, bits);
    const float entropy = Clip(s, CalibrationMethod::kEntropy, bits);
    std::printf("Laplace(1), n=200000, max %.3f, %d bits: mse %.3f, entropy %.3f, p99.99 %.3f\n",
                max, bits, mse, entropy, Clip(s, CalibrationMethod::kPercentile, bits));
    EXPECT_LT(mse, 0.9f * max);
    EXPECT_GT(mse, 0.0f);
    EXPECT_LT(entropy, 0.9f * max);
    EXPECT_GT(entropy, 0.0f);
    // The chosen clip really quantizes better than the full range.
    EXPECT_LT(QuantizationMse(v, mse, bits), QuantizationMse(v, max, bits));
  }
  // Known optimum for Laplace(b = 1) under uniform noise + clipping (Banner et al., ACIQ):
  // about 5.03 b at 4 bits; fewer bits clip harder.
  EXPECT_NEAR(Clip(s, CalibrationMethod::kMse, 4), 5.0, 0.8);
  EXPECT_LT(Clip(s, CalibrationMethod::kMse, 3), Clip(s, CalibrationMethod::kMse, 4));
  EXPECT_LT(Clip(s, CalibrationMethod::kMse, 4), Clip(s, CalibrationMethod::kMse, 8));
}

TEST(ChooseClipMagnitude, MseAndEntropyKeepUniformRange) {
  const TensorStats s = StatsOf(Uniform(200000, 9));
  const float max = s.max_abs();
  // MSE optimum for U[0, 1] magnitudes with 2^(B-1)-1 levels: (1 - T)^2 = 2T / (12 (2^(B-1)-1)^2),
  // T = 0.94 at 4 bits, 0.997 at 8 bits.
  EXPECT_NEAR(Clip(s, CalibrationMethod::kMse, 4), 0.94f * max, 0.02);
  EXPECT_GT(Clip(s, CalibrationMethod::kMse, 8), 0.98f * max);
  for (int bits : {4, 8}) {
    SCOPED_TRACE(bits);
    EXPECT_LE(Clip(s, CalibrationMethod::kMse, bits), max);
    EXPECT_GT(Clip(s, CalibrationMethod::kEntropy, bits), 0.95f * max);
    EXPECT_LE(Clip(s, CalibrationMethod::kEntropy, bits), max);
  }
}

TEST(ChooseClipMagnitude, EntropyIgnoresTheReluZeroSpike) {
  // A post-ReLU tensor: 70% exact zeros, the rest |Laplace(1)|. The zeros must not pull the KL
  // threshold down: it should match the threshold of the positive tail alone within 25%.
  std::vector<float> tail = Laplace(60000, 11);
  for (float& v : tail) v = std::fabs(v);
  std::vector<float> relu(140000, 0.0f);
  relu.insert(relu.end(), tail.begin(), tail.end());
  const CalibrationOptions entropy{.method = CalibrationMethod::kEntropy};
  const float with_zeros = ChooseClipMagnitude(StatsOf(relu), entropy, 8);
  const float tail_only = ChooseClipMagnitude(StatsOf(tail), entropy, 8);
  EXPECT_GT(with_zeros, 0.75f * tail_only) << with_zeros << " vs " << tail_only;
  EXPECT_LT(with_zeros, 1.25f * tail_only) << with_zeros << " vs " << tail_only;
}

}  // namespace
}  // namespace bitsweep::quant
