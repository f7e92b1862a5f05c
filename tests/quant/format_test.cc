// Number formats: parsing, hand-computed cases from quant/format.h's definitions, and bit-exact agreement of the fast
// QuantizeInPlace with the enumerating scalar reference (tests/reference/quant_reference.h).
#include "quant/format.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/reference/quant_reference.h"

namespace bitsweep::quant {
namespace {

using reference::ReferenceQuantizer;

constexpr float kInf = std::numeric_limits<float>::infinity();

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, std::string(haystack))

NumberFormat Parse(const std::string& text) {
  absl::StatusOr<NumberFormat> f = ParseFormat(text);
  EXPECT_TRUE(f.ok()) << text << ": " << f.status();
  return f.ok() ? *f : NumberFormat{};
}

float Q(const Quantizer& q, float x) {
  QuantizeInPlace(q, &x, 1);
  return x;
}

std::vector<float> QAll(const Quantizer& q, std::vector<float> v, int64_t offset = 0) {
  QuantizeInPlace(q, v.data(), static_cast<int64_t>(v.size()), offset);
  return v;
}

uint32_t Bits(float x) { return std::bit_cast<uint32_t>(x); }

bool SameBits(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || Bits(a) == Bits(b);
}

std::string Describe(const Quantizer& q) {
  return absl::StrCat(FormatToString(q.format), " FL=", q.fractional_bits,
                      " e_max=", q.max_exponent, " ", std::string(RoundingName(q.rounding)));
}

// Inputs that exercise every decision of a quantizer with grid `grid` (ascending floats): every
// representable value and its float neighbours, every midpoint between neighbours (the ties) and
// its float neighbours, zero, -0, tiny and huge values, infinities, random values across the
// range and beyond; all of them with both signs.
std::vector<float> Probes(const std::vector<float>& grid, uint32_t seed = 1) {
  std::vector<float> p;
  auto around = [&](float v) {
    p.push_back(v);
    p.push_back(std::nextafter(v, kInf));
    p.push_back(std::nextafter(v, -kInf));
  };
  for (float g : grid) around(g);
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    const long double mid = (static_cast<long double>(grid[i]) + grid[i + 1]) / 2;
    around(static_cast<float>(mid));
  }
  for (float v : {0.0f, FLT_TRUE_MIN, FLT_MIN, FLT_MIN / 2, 1e-30f, 1e-10f, 1e10f, 1e30f, FLT_MAX,
                  kInf}) {
    around(v);
  }
  const float lo = grid.front(), hi = grid.back();
  for (float v : {lo * 2, hi * 2, lo * 1.0001f, hi * 1.0001f}) around(v);
  // Log-domain thresholds 2^k * sqrt(2) (pow2) over the whole float range.
  for (int k = -150; k <= 128; ++k) around(static_cast<float>(std::ldexp(std::sqrt(2.0L), k)));
  std::mt19937 rng(seed);
  const float span = std::min(std::max(std::fabs(lo), std::fabs(hi)), 1e38f);
  std::uniform_real_distribution<float> uniform(-1.5f * span, 1.5f * span);
  for (int i = 0; i < 256; ++i) p.push_back(uniform(rng));
  const size_t n = p.size();
  for (size_t i = 0; i < n; ++i) p.push_back(-p[i]);
  return p;
}

// Runs QuantizeInPlace over `inputs` (one call) and compares every element with the reference.
// Returns the number of mismatches; reports the first few.
int CompareWithReference(const Quantizer& q, const std::vector<float>& inputs,
                         const ReferenceQuantizer& ref) {
  const std::vector<float> got = QAll(q, inputs);
  int bad = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const float want = ref.Quantize(inputs[i]);
    if (!SameBits(got[i], want)) {
      if (++bad <= 5) {
        ADD_FAILURE() << Describe(q) << ": q(" << inputs[i] << " = " << std::hexfloat << inputs[i]
                      << ") = " << got[i] << ", reference " << want << std::defaultfloat;
      }
    }
  }
  return bad;
}

struct Coverage {
  int quantizers = 0;
  int64_t inputs = 0;
};

void CheckExhaustive(const Quantizer& q, Coverage* coverage) {
  const ReferenceQuantizer ref(q);
  const std::vector<float> inputs = Probes(ref.Values());
  coverage->quantizers++;
  coverage->inputs += static_cast<int64_t>(inputs.size());
  EXPECT_EQ(CompareWithReference(q, inputs, ref), 0) << Describe(q);
}

constexpr Rounding kNearest[] = {Rounding::kNearestEven, Rounding::kNearestAway};

// ---------------------------------------------------------------------------------------------
// Parsing.

TEST(ParseFormat, GoodStringsAndCanonicalForms) {
  const std::pair<std::string, std::string> cases[] = {
      {"fp32", "fp32"},
      {"fixed:8", "fixed:8"},
      {"fixed:8:3", "fixed:8:3"},
      {"fixed:8:-4", "fixed:8:-4"},
      {"fixed:2:20", "fixed:2:20"},
      {"fixed:32", "fixed:32"},
      {"ufixed:1", "ufixed:1"},
      {"ufixed:8:8", "ufixed:8:8"},
      {"minifloat:4:3", "minifloat:4:3"},
      {"minifloat:5:10:denormal", "minifloat:5:10:denormal"},
      {"minifloat:8:23", "minifloat:8:23"},
      {"minifloat:1:0", "minifloat:1:0"},
      {"minifloat:1:30", "minifloat:1:30"},
      {"pow2:4", "pow2:4"},
      {"pow2:32", "pow2:32"},
      {"int:8", "int:8:sym:tensor"},
      {"int:8:asym", "int:8:asym:tensor"},
      {"int:4:channel", "int:4:sym:channel"},
      {"int:8:asym:channel", "int:8:asym:channel"},
      {"int:8:channel:asym", "int:8:asym:channel"},
      {"int:32:sym", "int:32:sym:tensor"},
      {"int:31:asym", "int:31:asym:tensor"},
  };
  for (const auto& [text, canonical] : cases) {
    SCOPED_TRACE(text);
    const NumberFormat f = Parse(text);
    EXPECT_EQ(FormatToString(f), canonical);
    EXPECT_EQ(Parse(canonical), f);
  }
  const NumberFormat m = Parse("minifloat:4:3:denormal");
  EXPECT_EQ(m.kind, FormatKind::kMinifloat);
  EXPECT_EQ(m.exponent_bits, 4);
  EXPECT_EQ(m.mantissa_bits, 3);
  EXPECT_EQ(m.bits, 8);
  EXPECT_TRUE(m.denormals);
  const NumberFormat x = Parse("fixed:16:-3");
  EXPECT_EQ(x.kind, FormatKind::kFixed);
  EXPECT_EQ(x.bits, 16);
  EXPECT_EQ(x.fractional_bits, -3);
  EXPECT_FALSE(Parse("fixed:16").fractional_bits.has_value());
  const NumberFormat i = Parse("int:6:asym:channel");
  EXPECT_EQ(i.bits, 6);
  EXPECT_FALSE(i.symmetric);
  EXPECT_TRUE(i.per_channel);
  EXPECT_EQ(Parse("fp32").bits, 32);
}

TEST(ParseFormat, BadStringsNameTheStringAndTheProblem) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "empty"},
      {"bogus:8", "unknown format \"bogus\""},
      {"FIXED:8", "unknown format"},
      {"fixed", "missing width"},
      {"fixed:0", "width must be in 2..32"},
      {"fixed:1", "width must be in 2..32"},
      {"fixed:33", "width must be in 2..32"},
      {"fixed:x", "width \"x\" is not a number"},
      {"fixed:-8", "is not a number"},
      {"fixed: 8", "is not a number"},
      {"fixed:8:x", "fractional bits \"x\" is not a number"},
      {"fixed:8:", "fractional bits \"\" is not a number"},
      {"fixed:8:200", "fractional bits must be in -119..126"},
      {"fixed:8:-120", "fractional bits must be in -119..126"},
      {"fixed:8:3:1", "unexpected trailing field \"1\""},
      {"ufixed:0", "width must be in 1..32"},
      {"ufixed:33", "width must be in 1..32"},
      {"minifloat:0:3", "exponent bits must be in 1..8"},
      {"minifloat:9:3", "exponent bits must be in 1..8"},
      {"minifloat:4", "missing mantissa bits"},
      {"minifloat:4:28", "mantissa bits must be in 0..27"},
      {"minifloat:4:3:denorm", "unknown minifloat option \"denorm\""},
      {"minifloat:4:3:denormal:x", "unexpected trailing field \"x\""},
      {"pow2:1", "width must be in 2..32"},
      {"pow2:33", "width must be in 2..32"},
      {"pow2:4:1", "unexpected trailing field \"1\""},
      {"int:33", "width must be in 2..32"},
      {"int:1", "width must be in 2..32"},
      {"int:8:foo", "unexpected int option \"foo\""},
      {"int:8:sym:sym", "unexpected int option \"sym\""},
      {"int:8:sym:tensor:x", "unexpected int option \"x\""},
      {"int:32:asym", "asymmetric int supports at most 31 bits"},
      {"fp32:8", "unexpected trailing field \"8\""},
  };
  for (const auto& [text, problem] : cases) {
    SCOPED_TRACE(text);
    const absl::StatusOr<NumberFormat> f = ParseFormat(text);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(f.status().message(), absl::StrCat("\"", text, "\""));
    EXPECT_CONTAINS(f.status().message(), problem);
  }
}

TEST(ParseRounding, NamesRoundTrip) {
  for (Rounding r : {Rounding::kNearestEven, Rounding::kNearestAway, Rounding::kStochastic}) {
    absl::StatusOr<Rounding> parsed = ParseRounding(RoundingName(r));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_EQ(RoundingName(Rounding::kNearestEven), "nearest_even");
  EXPECT_EQ(RoundingName(Rounding::kNearestAway), "nearest_away");
  EXPECT_EQ(RoundingName(Rounding::kStochastic), "stochastic");
  const absl::StatusOr<Rounding> bad = ParseRounding("nearest");
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "\"nearest\"");
  EXPECT_CONTAINS(bad.status().message(), "nearest_even");
}

// ---------------------------------------------------------------------------------------------
// Hand-computed cases (the definitions atop quant/format.h).

TEST(FixedFractionalBits, FromMaxAbs) {
  const NumberFormat fixed8 = Parse("fixed:8"), ufixed8 = Parse("ufixed:8");
  EXPECT_EQ(FixedFractionalBits(fixed8, 3.2f, false), 5);   // IL = ceil(log2 3.2) + 1 = 3
  EXPECT_EQ(FixedFractionalBits(fixed8, 3.2f, true), 6);    // Ristretto activations: IL = 2
  EXPECT_EQ(FixedFractionalBits(ufixed8, 3.2f, false), 6);  // unsigned: IL = 2
  EXPECT_EQ(FixedFractionalBits(ufixed8, 3.2f, true), 6);   // (only the signed +1 is dropped)
  EXPECT_EQ(FixedFractionalBits(fixed8, 4.0f, false), 5);   // ceil(log2 4) = 2 exactly
  EXPECT_EQ(FixedFractionalBits(fixed8, 4.0001f, false), 4);
  EXPECT_EQ(FixedFractionalBits(fixed8, -3.2f, false), 5);  // magnitude
  EXPECT_EQ(FixedFractionalBits(fixed8, 1.0f, false), 7);
  EXPECT_EQ(FixedFractionalBits(fixed8, 0.3f, false), 8);   // ceil(log2 .3) = -1: IL = 0
  EXPECT_EQ(FixedFractionalBits(Parse("fixed:16"), 0.3f, false), 16);
  EXPECT_EQ(FixedFractionalBits(Parse("fixed:16"), 200.0f, false), 7);
  EXPECT_EQ(FixedFractionalBits(Parse("fixed:16"), 200.0f, true), 8);
  EXPECT_EQ(FixedFractionalBits(fixed8, 0.0f, false), 7);   // max 0: B - 1
  EXPECT_EQ(FixedFractionalBits(ufixed8, 0.0f, false), 8);  // max 0: B
  EXPECT_EQ(FixedFractionalBits(Parse("fixed:8:3"), 100.0f, false), 3);  // FL given
  EXPECT_EQ(FixedFractionalBits(Parse("fixed:8:-2"), 0.0f, true), -2);
  EXPECT_EQ(FixedFractionalBits(fixed8, 1e30f, false), 8 - 101);  // 2^99 < 1e30 < 2^100
  // Clamped to float's range [B-127, 126].
  EXPECT_EQ(FixedFractionalBits(fixed8, kInf, false), -119);
  EXPECT_EQ(FixedFractionalBits(fixed8, FLT_MAX, false), -119);
  EXPECT_EQ(FixedFractionalBits(fixed8, 1e-40f, false), 126);
}

TEST(Fixed, HandComputed) {
  Quantizer even = MakeFixedQuantizer(Parse("fixed:8"), 3.2f, Rounding::kNearestEven);
  Quantizer away = MakeFixedQuantizer(Parse("fixed:8"), 3.2f, Rounding::kNearestAway);
  ASSERT_EQ(even.fractional_bits, 5);  // step 1/32
  EXPECT_EQ(Q(even, 1.03125f), 1.03125f);                          // 33/32, representable
  EXPECT_EQ(Q(even, std::nextafter(1.03125f, 2.0f)), 1.03125f);    // + tiny
  EXPECT_EQ(Q(even, 1.046875f), 1.0625f);   // 33.5/32: tie, even 34
  EXPECT_EQ(Q(away, 1.046875f), 1.0625f);   //          away 34
  EXPECT_EQ(Q(even, 1.078125f), 1.0625f);   // 34.5/32: even 34
  EXPECT_EQ(Q(away, 1.078125f), 1.09375f);  //          away 35
  EXPECT_EQ(Q(even, -1.078125f), -1.0625f);
  EXPECT_EQ(Q(away, -1.078125f), -1.09375f);
  EXPECT_EQ(Q(even, std::nextafter(1.078125f, 2.0f)), 1.09375f);
  EXPECT_EQ(Q(even, 3.2f), 3.1875f);        // round(102.4) = 102
  EXPECT_EQ(Q(even, 100.0f), 3.96875f);     // 127/32
  EXPECT_EQ(Q(even, -100.0f), -4.0f);       // -128/32
  EXPECT_EQ(Q(even, kInf), 3.96875f);
  EXPECT_EQ(Q(even, -kInf), -4.0f);
  EXPECT_EQ(MaxMagnitude(even), 4.0f);      // the negative end
  EXPECT_EQ(Bits(Q(even, -0.01f)), Bits(0.0f));  // one zero: +0
  EXPECT_EQ(Bits(Q(even, -0.0f)), Bits(0.0f));
  EXPECT_TRUE(std::isnan(Q(even, std::nanf(""))));

  Quantizer u = MakeFixedQuantizer(Parse("ufixed:8"), 3.2f, Rounding::kNearestEven);
  ASSERT_EQ(u.fractional_bits, 6);
  EXPECT_EQ(Q(u, -1.0f), 0.0f);
  EXPECT_EQ(Q(u, 5.0f), 255.0f / 64);
  EXPECT_EQ(MaxMagnitude(u), 255.0f / 64);

  // Negative FL: steps of 4.
  Quantizer coarse = MakeFixedQuantizer(Parse("fixed:4:-2"), 0, Rounding::kNearestEven);
  EXPECT_EQ(Q(coarse, 6.0f), 8.0f);   // 1.5 steps -> 2
  EXPECT_EQ(Q(coarse, 10.0f), 8.0f);  // 2.5 steps -> 2
  EXPECT_EQ(Q(coarse, 100.0f), 28.0f);
  EXPECT_EQ(Q(coarse, -100.0f), -32.0f);
}

TEST(Fixed, WideWidthsUseExactIntegers) {
  // fixed:32:0: the integer range does not fit a float's significand.
  Quantizer q = MakeFixedQuantizer(Parse("fixed:32:0"), 0, Rounding::kNearestEven);
  EXPECT_EQ(Q(q, 3e9f), 2147483648.0f);     // 2^31 - 1, rounded once to float
  EXPECT_EQ(Q(q, -3e9f), -2147483648.0f);
  EXPECT_EQ(Q(q, 1e30f), 2147483648.0f);
  EXPECT_EQ(Q(q, 1234567.5f), 1234568.0f);  // tie, even
  EXPECT_EQ(Q(q, 1234566.5f), 1234566.0f);
  EXPECT_EQ(Q(q, 16777216.0f), 16777216.0f);
  EXPECT_EQ(Q(q, -2.5f), -2.0f);
  // fixed:28:4 (B > 23: the double kernel).
  Quantizer e = MakeFixedQuantizer(Parse("fixed:28:4"), 0, Rounding::kNearestEven);
  Quantizer a = MakeFixedQuantizer(Parse("fixed:28:4"), 0, Rounding::kNearestAway);
  EXPECT_EQ(Q(e, 123456.03125f), 123456.0f);    // 1975296.5 steps -> 1975296
  EXPECT_EQ(Q(a, 123456.03125f), 123456.0625f); // -> 1975297
  EXPECT_EQ(Q(e, 123456.09375f), 123456.125f);  // 1975297.5 -> 1975298
  EXPECT_EQ(Q(a, -123456.03125f), -123456.0625f);
  EXPECT_EQ(Q(e, 1e10f), static_cast<float>((std::ldexp(1.0, 27) - 1) / 16));
  EXPECT_EQ(MaxMagnitude(e), 8388608.0f);
  // ufixed:32: 2^32 - 1 rounds to 2^32 in float.
  Quantizer u = MakeFixedQuantizer(Parse("ufixed:32:0"), 0, Rounding::kNearestEven);
  EXPECT_EQ(Q(u, 1e20f), 4294967296.0f);
  EXPECT_EQ(Q(u, 4294967040.0f), 4294967040.0f);
  // Extreme FL: the float range ends, nothing overflows.
  Quantizer big = MakeFixedQuantizer(Parse("fixed:8:-119"), 0, Rounding::kNearestEven);
  EXPECT_EQ(Q(big, FLT_MAX), std::ldexp(127.0f, 119));
  EXPECT_TRUE(std::isfinite(MaxMagnitude(big)));
  Quantizer fine = MakeFixedQuantizer(Parse("fixed:8:126"), 0, Rounding::kNearestEven);
  EXPECT_EQ(Q(fine, FLT_MIN), FLT_MIN);
  EXPECT_EQ(Q(fine, 1.0f), std::ldexp(127.0f, -126));
  EXPECT_EQ(Q(fine, FLT_MIN * 0.75f), FLT_MIN);
  EXPECT_EQ(Q(fine, FLT_MIN * 0.5f), 0.0f);  // tie, even 0
}

TEST(Minifloat, HandComputedRistrettoSemantics) {
  Quantizer q = MakeMinifloatQuantizer(Parse("minifloat:4:3"), Rounding::kNearestEven);
  Quantizer away = MakeMinifloatQuantizer(Parse("minifloat:4:3"), Rounding::kNearestAway);
  // Bias 7, the all-ones exponent field 15 is an ordinary exponent: 1.875 * 2^8.
  EXPECT_EQ(MaxMagnitude(q), 480.0f);
  EXPECT_EQ(Q(q, 1000.0f), 480.0f);
  EXPECT_EQ(Q(q, -1000.0f), -480.0f);
  EXPECT_EQ(Q(q, kInf), 480.0f);
  EXPECT_EQ(Q(q, -kInf), -480.0f);
  EXPECT_EQ(Q(q, 464.0f), 448.0f);     // tie 448 (mantissa 110) / 480 (111): even
  EXPECT_EQ(Q(away, 464.0f), 480.0f);
  EXPECT_EQ(Q(q, 1.0625f), 1.0f);      // tie 1.0 / 1.125
  EXPECT_EQ(Q(away, 1.0625f), 1.125f);
  EXPECT_EQ(Q(q, 1.1875f), 1.25f);     // tie 1.125 / 1.25: even mantissa 010
  EXPECT_EQ(Q(q, 1.96875f), 2.0f);     // carry into the exponent: 1.875 / 2.0 tie -> 2.0
  EXPECT_EQ(Q(q, 3.2f), 3.25f);
  // No denormals: smallest normal 2^-6; below half of it -> 0, from half up -> 2^-6.
  const float min_normal = 0.015625f;
  EXPECT_EQ(Q(q, min_normal), min_normal);
  EXPECT_EQ(Q(q, min_normal / 2), min_normal);
  EXPECT_EQ(Q(q, std::nextafter(min_normal / 2, 0.0f)), 0.0f);
  EXPECT_EQ(Q(q, min_normal * 0.9f), min_normal);
  EXPECT_EQ(Bits(Q(q, -1e-5f)), Bits(-0.0f));  // sign-magnitude: -0
  EXPECT_EQ(Q(q, 0.0166f), min_normal);         // 1.0624 * 2^-6
  EXPECT_EQ(Q(q, 0.017f), 0.017578125f);        // 1.088 * 2^-6 -> 1.125 * 2^-6
  EXPECT_TRUE(std::isnan(Q(q, std::nanf(""))));
  // With denormals: step 2^-9 below 2^-6.
  Quantizer d = MakeMinifloatQuantizer(Parse("minifloat:4:3:denormal"), Rounding::kNearestEven);
  EXPECT_EQ(Q(d, 0.001953125f), 0.001953125f);   // 2^-9
  EXPECT_EQ(Q(d, 0.0009765625f), 0.0f);          // 2^-10: tie 0 / 2^-9, even 0
  EXPECT_EQ(Q(d, 0.0029296875f), 0.00390625f);   // 1.5 * 2^-9: tie 1 / 2 steps, even 2
  EXPECT_EQ(Q(d, 0.0146484375f), 0.015625f);     // 7.5 steps: tie, even 8 = smallest normal
  EXPECT_EQ(MaxMagnitude(d), 480.0f);
  // Ristretto's CPU bug: quantizing stopped at the first zero. Zeros are just zeros here.
  const std::vector<float> out = QAll(q, {1.3f, 0.0f, 2.7f, 0.0f, 1000.0f, -0.0f, 5.1f});
  EXPECT_EQ(out, (std::vector<float>{1.25f, 0.0f, 2.75f, 0.0f, 480.0f, 0.0f, 5.0f}));
}

TEST(Minifloat, ExponentWidthEightMatchesFloatRange) {
  // minifloat:8:23 is float without Inf/NaN codes, flushing denormals, saturating at FLT_MAX.
  Quantizer q = MakeMinifloatQuantizer(Parse("minifloat:8:23"), Rounding::kNearestEven);
  EXPECT_EQ(MaxMagnitude(q), FLT_MAX);
  EXPECT_EQ(Q(q, FLT_MAX), FLT_MAX);
  EXPECT_EQ(Q(q, kInf), FLT_MAX);
  EXPECT_EQ(Q(q, -kInf), -FLT_MAX);
  EXPECT_EQ(Q(q, 1.1f), 1.1f);
  EXPECT_EQ(Q(q, FLT_MIN), FLT_MIN);
  EXPECT_EQ(Q(q, FLT_MIN / 2), FLT_MIN);
  EXPECT_EQ(Q(q, std::nextafter(FLT_MIN / 2, 0.0f)), 0.0f);
  EXPECT_EQ(Q(q, 1e-40f), 0.0f);
  Quantizer d = MakeMinifloatQuantizer(Parse("minifloat:8:23:denormal"), Rounding::kNearestEven);
  EXPECT_EQ(Q(d, 1e-40f), 1e-40f);
  EXPECT_EQ(Q(d, FLT_TRUE_MIN), FLT_TRUE_MIN);
  EXPECT_EQ(Q(d, -123.456f), -123.456f);
  // Narrow mantissa: the top of the range is (2 - 2^-M) * 2^127 (2^128 is out of float's range).
  Quantizer b = MakeMinifloatQuantizer(Parse("minifloat:8:7"), Rounding::kNearestEven);
  const float top = std::ldexp(2.0f - std::ldexp(1.0f, -7), 127);
  EXPECT_EQ(MaxMagnitude(b), top);
  EXPECT_EQ(Q(b, FLT_MAX), top);
  EXPECT_EQ(Q(b, kInf), top);
  EXPECT_EQ(Q(b, 1.0f + std::ldexp(1.0f, -8)), 1.0f);  // tie, even
  EXPECT_EQ(Q(b, 1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(Q(b, 3.14159265f), 3.140625f);
  // Wide mantissa (M > 23): normal floats are already representable.
  Quantizer w = MakeMinifloatQuantizer(Parse("minifloat:2:29:denormal"), Rounding::kNearestEven);
  EXPECT_EQ(Q(w, 1.2345678f), 1.2345678f);
  EXPECT_EQ(Q(w, 0.001f), std::ldexp(std::nearbyint(std::ldexp(0.001f, 29)), -29));
  EXPECT_EQ(Q(w, 100.0f), MaxMagnitude(w));
  EXPECT_EQ(MaxMagnitude(w), std::ldexp(2.0f - std::ldexp(1.0f, -23), 2));
}

TEST(Minifloat, ZeroMantissaBits) {
  // minifloat:3:0: values 2^-2 .. 2^4 (bias 3, fields 1..7), ties go to the even exponent field.
  Quantizer q = MakeMinifloatQuantizer(Parse("minifloat:3:0"), Rounding::kNearestEven);
  Quantizer a = MakeMinifloatQuantizer(Parse("minifloat:3:0"), Rounding::kNearestAway);
  EXPECT_EQ(MaxMagnitude(q), 16.0f);
  EXPECT_EQ(Q(q, 3.0f), 2.0f);   // tie 2 (field 4) / 4 (field 5): the even field
  EXPECT_EQ(Q(a, 3.0f), 4.0f);   // away: the larger magnitude
  EXPECT_EQ(Q(q, 6.0f), 8.0f);   // tie 4 (field 5) / 8 (field 6)
  EXPECT_EQ(Q(a, 6.0f), 8.0f);
  EXPECT_EQ(Q(q, 5.0f), 4.0f);
  EXPECT_EQ(Q(q, 0.13f), 0.25f);  // smallest normal 2^-2; from its half up
  EXPECT_EQ(Q(q, 0.12f), 0.0f);
  EXPECT_EQ(Q(q, 100.0f), 16.0f);
}

TEST(Pow2, HandComputed) {
  Quantizer q = MakePow2Quantizer(Parse("pow2:4"), 0.9f);
  EXPECT_EQ(q.max_exponent, 0);  // round(log2 0.9) = round(-0.152) = 0
  // Codes 1..7 are 2^-6 .. 2^0; weights > 0.5 are not clipped (Ristretto's defect).
  EXPECT_EQ(Q(q, 0.9f), 1.0f);
  EXPECT_EQ(Q(q, 5.0f), 1.0f);
  EXPECT_EQ(Q(q, -5.0f), -1.0f);
  EXPECT_EQ(Q(q, kInf), 1.0f);
  EXPECT_EQ(Q(q, 0.7f), 0.5f);  // log2 0.7 = -0.515
  const float sqrt_half = static_cast<float>(std::sqrt(0.5L));  // just below 2^-0.5
  EXPECT_LT(static_cast<long double>(sqrt_half), std::sqrt(0.5L));
  EXPECT_EQ(Q(q, sqrt_half), 0.5f);
  EXPECT_EQ(Q(q, std::nextafter(sqrt_half, 1.0f)), 1.0f);
  EXPECT_EQ(Q(q, -0.3f), -0.25f);
  EXPECT_EQ(Q(q, 0.0f), 0.0f);      // the explicit zero code (Ristretto had none)
  EXPECT_EQ(Q(q, 0.0111f), 0.015625f);
  EXPECT_EQ(Bits(Q(q, 0.011f)), Bits(0.0f));   // log2 = -6.506: below the window
  EXPECT_EQ(Bits(Q(q, -0.011f)), Bits(-0.0f));
  EXPECT_EQ(MaxMagnitude(q), 1.0f);
  EXPECT_TRUE(std::isnan(Q(q, std::nanf(""))));
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), 0.7f).max_exponent, -1);
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), 3.0f).max_exponent, 2);  // 3 > 2 sqrt 2
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), 2.8f).max_exponent, 1);
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), 0.0f).max_exponent, 0);
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), FLT_MAX).max_exponent, 127);  // 2^128 is no float
  EXPECT_EQ(MakePow2Quantizer(Parse("pow2:4"), FLT_TRUE_MIN).max_exponent, -149);
  // Window beyond float's range: exponents stay representable.
  Quantizer wide = MakePow2Quantizer(Parse("pow2:32"), FLT_MAX);
  EXPECT_EQ(Q(wide, FLT_MAX), std::ldexp(1.0f, 127));
  EXPECT_EQ(Q(wide, FLT_TRUE_MIN), FLT_TRUE_MIN);
  EXPECT_EQ(Q(wide, 3e-39f), std::ldexp(1.0f, -128));
  EXPECT_EQ(Q(wide, 1.0f), 1.0f);
  Quantizer tiny = MakePow2Quantizer(Parse("pow2:3"), 1e-44f);  // e_max = -146: 2^-148 .. 2^-146
  EXPECT_EQ(Q(tiny, 1e-44f), std::ldexp(1.0f, -146));
  EXPECT_EQ(Q(tiny, FLT_TRUE_MIN), 0.0f);
  EXPECT_EQ(Q(tiny, 1.0f), std::ldexp(1.0f, -146));
}

// Found by tests/fuzz (quant_format): a calibrated range near FLT_MAX gave a scale s with
// 127 * s > FLT_MAX, so finite inputs at the ends of the range quantized to +-Inf.
TEST(Int, RangesNearFltMaxStayFinite) {
  const float huge = FLT_MAX;
  for (const char* text : {"int:8", "int:8:asym", "int:4:sym:channel", "int:32", "int:31:asym"}) {
    for (auto [lo, hi] : {std::pair{-2.0f, huge}, std::pair{-huge, huge}, std::pair{-huge, 1.0f},
                          std::pair{-huge, -1.0f}}) {
      const NumberFormat f = Parse(text);
      const Quantizer q = MakeIntQuantizer(f, {lo}, {hi}, Rounding::kNearestEven);
      const std::vector<float> in = {lo, hi, -huge, huge, 0.0f, 1.0f, -1.0f, hi / 3};
      const std::vector<float> out = QAll(q, in);
      for (size_t i = 0; i < in.size(); ++i) {
        EXPECT_TRUE(std::isfinite(out[i])) << text << " [" << lo << ", " << hi << "]: q(" << in[i]
                                           << ") = " << out[i];
        EXPECT_LE(std::fabs(out[i]), MaxMagnitude(q)) << text << " q(" << in[i] << ")";
      }
      EXPECT_TRUE(std::isfinite(MaxMagnitude(q))) << text;
      // The grid still spans the range: the largest code lands within 1% of its end.
      EXPECT_GE(MaxMagnitude(q), 0.99f * std::max(std::fabs(lo), std::fabs(hi)) / (f.symmetric ? 1 : 2))
          << text;
    }
  }
}

TEST(Int, HandComputed) {
  Quantizer q = MakeIntQuantizer(Parse("int:8"), {-127.0f}, {50.0f}, Rounding::kNearestEven);
  Quantizer a = MakeIntQuantizer(Parse("int:8"), {-127.0f}, {50.0f}, Rounding::kNearestAway);
  ASSERT_EQ(q.scale, std::vector<float>{1.0f});  // T = 127, s = T / 127
  ASSERT_EQ(q.zero_point, std::vector<int32_t>{0});
  EXPECT_EQ(Q(q, 2.5f), 2.0f);
  EXPECT_EQ(Q(a, 2.5f), 3.0f);
  EXPECT_EQ(Q(q, -2.5f), -2.0f);
  EXPECT_EQ(Q(a, -2.5f), -3.0f);
  EXPECT_EQ(Q(q, 3.5f), 4.0f);
  EXPECT_EQ(Q(q, 200.0f), 127.0f);
  EXPECT_EQ(Q(q, -200.0f), -127.0f);  // symmetric: no -128
  EXPECT_EQ(Bits(Q(q, -0.3f)), Bits(0.0f));
  EXPECT_EQ(MaxMagnitude(q), 127.0f);

  // Asymmetric [-1, 3]: s = 4/255, zp = round(63.75) = 64, n in [-64, 191]; 0 is exact.
  Quantizer s = MakeIntQuantizer(Parse("int:8:asym"), {-1.0f}, {3.0f}, Rounding::kNearestEven);
  ASSERT_EQ(s.scale.size(), 1u);
  EXPECT_EQ(s.scale[0], 4.0f / 255);
  EXPECT_EQ(s.zero_point[0], 64);
  EXPECT_EQ(Q(s, 0.0f), 0.0f);
  EXPECT_EQ(Q(s, 10.0f), static_cast<float>(191.0 * double(4.0f / 255)));
  EXPECT_EQ(Q(s, -10.0f), static_cast<float>(-64.0 * double(4.0f / 255)));
  // The range is extended to include 0.
  Quantizer pos = MakeIntQuantizer(Parse("int:8:asym"), {2.0f}, {5.1f}, Rounding::kNearestEven);
  EXPECT_EQ(pos.zero_point[0], 0);
  EXPECT_EQ(pos.scale[0], 0.02f);
  // All-zero range: a tiny grid, no division by zero.
  Quantizer zero = MakeIntQuantizer(Parse("int:8"), {0.0f}, {0.0f}, Rounding::kNearestEven);
  EXPECT_EQ(zero.scale[0], FLT_MIN);
  EXPECT_EQ(Q(zero, 0.0f), 0.0f);
  EXPECT_EQ(Q(zero, 1.0f), static_cast<float>(127.0 * FLT_MIN));

  // 32 bits: no overflow in round / clamp.
  Quantizer w = MakeIntQuantizer(Parse("int:32"), {-3.0f}, {2.0f}, Rounding::kNearestEven);
  const double s32 = w.scale[0];
  EXPECT_EQ(w.scale[0], static_cast<float>(3.0 / 2147483647.0));
  EXPECT_EQ(Q(w, 1e30f), static_cast<float>(2147483647.0 * s32));
  EXPECT_EQ(Q(w, -1e30f), static_cast<float>(-2147483647.0 * s32));
  EXPECT_EQ(Q(w, kInf), static_cast<float>(2147483647.0 * s32));
  // PyTorch's rule: the float product with fl(1 / s) (24 bits near 2^30, so not the exact
  // quotient's nearest integer), the output the double product rounded once.
  const float inv32 = 1.0f / w.scale[0];
  for (float x : {1.0f, -2.9f, 0.123456f, 2.9999f}) {
    EXPECT_EQ(Q(w, x), static_cast<float>(std::nearbyint(double(x * inv32)) * s32)) << x;
  }
  Quantizer w31 = MakeIntQuantizer(Parse("int:31:asym"), {-3.0f}, {2.0f}, Rounding::kNearestEven);
  EXPECT_GT(w31.zero_point[0], 0);
  EXPECT_NEAR(Q(w31, 1.0f), 1.0f, 1e-6);
  EXPECT_NEAR(Q(w31, -100.0f), -3.0f, 1e-6);

  // Per channel: [3 channels, 2 values], one scale each.
  Quantizer c = MakeIntQuantizer(Parse("int:4:channel"), {-7.0f, -0.7f, -70.0f},
                                 {1.0f, 0.1f, 7.0f}, Rounding::kNearestEven);
  ASSERT_EQ(c.scale, (std::vector<float>{1.0f, 0.1f, 10.0f}));
  EXPECT_EQ(QAll(c, {2.4f, 100.0f, 0.24f, -100.0f, 24.0f, 1.0f}),
            (std::vector<float>{2.0f, 7.0f, static_cast<float>(2 * double(0.1f)),
                                static_cast<float>(-7 * double(0.1f)), 20.0f, 0.0f}));
  // A per-tensor format given several ranges uses their union.
  Quantizer t = MakeIntQuantizer(Parse("int:4"), {-7.0f, -0.7f}, {1.0f, 14.0f},
                                 Rounding::kNearestEven);
  EXPECT_EQ(t.scale, std::vector<float>{2.0f});
}

// torch.fake_quantize_per_tensor_affine / _per_channel_affine (ATen's CPU kernel), written out:
// inv = 1.0f / s; code = clamp(int64(nearbyintf(x * inv)) + zp, qmin, qmax); (code - zp) * s in
// float. NaN is left out (ATen turns it into a code).
float TorchFakeQuantize(float x, float s, int64_t zp, int64_t qmin, int64_t qmax) {
  const float inv = 1.0f / s;
  const int64_t code =
      std::clamp(static_cast<int64_t>(std::nearbyintf(x * inv)) + zp, qmin, qmax);
  return static_cast<float>(code - zp) * s;
}

// Inputs at and next to the exact midpoints (k + 1/2) * s, where fl(x * fl(1/s)) and the exact
// quotient x / s disagree most often, plus random values, over scales that are not powers of two.
TEST(Int, EqualsPyTorchFakeQuantizationOnTies) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> range(0.01f, 40.0f);
  int64_t checked = 0, differs_from_exact = 0;
  for (int bits : {2, 4, 8, 12}) {
    for (const char* sym : {"sym", "asym"}) {
      for (const char* gran : {"tensor", "channel"}) {
        const NumberFormat f = Parse(absl::StrCat("int:", bits, ":", sym, ":", gran));
        const int channels = f.per_channel ? 5 : 1;
        std::vector<float> lo, hi;
        for (int c = 0; c < channels; ++c) {
          lo.push_back(-range(rng) * (f.symmetric ? 1.0f : 0.3f));
          hi.push_back(range(rng));
        }
        const Quantizer q = MakeIntQuantizer(f, lo, hi, Rounding::kNearestEven);
        const int64_t qmax = f.symmetric ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
        const int64_t qmin = f.symmetric ? -qmax : 0;
        // Per channel: [channels, inner]; inner large enough for the vectorized blocks.
        std::vector<std::vector<float>> rows(channels);
        for (int c = 0; c < channels; ++c) {
          const float s = q.scale[c];
          std::uniform_real_distribution<float> any(-1.5f * (qmax - qmin) * s,
                                                    1.5f * (qmax - qmin) * s);
          for (int64_t k = qmin - q.zero_point[c] - 2; k <= qmax - q.zero_point[c] + 2; ++k) {
            const float mid = static_cast<float>((static_cast<double>(k) + 0.5) * s);
            for (float x : {mid, std::nextafter(mid, -FLT_MAX), std::nextafter(mid, FLT_MAX)}) {
              rows[c].push_back(x);
              rows[c].push_back(-x);
            }
          }
          while (rows[c].size() < 20000) rows[c].push_back(any(rng));
        }
        size_t inner = 0;
        for (const auto& r : rows) inner = std::max(inner, r.size());
        std::vector<float> data(inner * channels, 0.0f);
        for (int c = 0; c < channels; ++c) std::copy(rows[c].begin(), rows[c].end(), data.begin() + c * inner);
        const std::vector<float> got = QAll(q, data);
        int bad = 0;
        for (size_t i = 0; i < data.size(); ++i) {
          const int c = static_cast<int>(i / inner);
          const float s = q.scale[c];
          const float want = TorchFakeQuantize(data[i], s, q.zero_point[c], qmin, qmax);
          ++checked;
          const double exact = std::clamp(std::nearbyint(double(data[i]) / s),
                                          double(qmin - q.zero_point[c]),
                                          double(qmax - q.zero_point[c]));
          differs_from_exact += static_cast<float>(exact * s) != want;
          if (!SameBits(got[i], want) && ++bad <= 5) {
            ADD_FAILURE() << Describe(q) << " channel " << c << ": q(" << data[i] << ") = "
                          << got[i] << ", torch's rule " << want;
          }
        }
      }
    }
  }
  // The inputs do exercise the difference between the two rules.
  EXPECT_GT(differs_from_exact, 100) << "of " << checked;
}

TEST(MaxMagnitude, PerFormat) {
  EXPECT_EQ(MaxMagnitude(Quantizer{}), FLT_MAX);  // fp32
  EXPECT_EQ(MaxMagnitude(MakeMinifloatQuantizer(Parse("minifloat:5:2"), Rounding::kNearestEven)),
            1.75f * 65536);  // bias 15, field 31: 2^16
  EXPECT_EQ(MaxMagnitude(MakeMinifloatQuantizer(Parse("minifloat:1:0"), Rounding::kNearestEven)),
            2.0f);
  EXPECT_EQ(MaxMagnitude(MakeMinifloatQuantizer(Parse("minifloat:8:3"), Rounding::kNearestEven)),
            std::ldexp(1.875f, 127));
  EXPECT_EQ(MaxMagnitude(MakePow2Quantizer(Parse("pow2:6"), 20.0f)), 16.0f);
  Quantizer c = MakeIntQuantizer(Parse("int:8:channel"), {-1.0f, -2.0f}, {1.0f, 2.0f},
                                 Rounding::kNearestEven);
  EXPECT_EQ(MaxMagnitude(c), static_cast<float>(127 * double(2.0f / 127)));
}

TEST(QuantizeInPlace, Fp32IsIdentity) {
  const std::vector<float> v = {1.1f, -3.3f, 0.0f, kInf};
  EXPECT_EQ(QAll(Quantizer{}, v), v);
}

// ---------------------------------------------------------------------------------------------
// Exhaustive agreement with the reference over small widths.

TEST(Exhaustive, FixedAndUfixed) {
  Coverage cov;
  for (const char* kind : {"fixed", "ufixed"}) {
    for (int bits = 1; bits <= 8; ++bits) {
      if (std::string(kind) == "fixed" && bits < 2) continue;
      for (int fl : {-3, -1, 0, 2, bits, bits + 3}) {
        for (Rounding r : kNearest) {
          const NumberFormat f = Parse(absl::StrCat(kind, ":", bits, ":", fl));
          CheckExhaustive(MakeFixedQuantizer(f, 0, r), &cov);
        }
      }
    }
  }
  EXPECT_EQ(cov.quantizers, 2 * (7 + 8) * 6);
  std::printf("fixed/ufixed: %d quantizers, %lld inputs\n", cov.quantizers,
              static_cast<long long>(cov.inputs));
}

TEST(Exhaustive, Minifloat) {
  Coverage cov;
  for (int e = 1; e <= 8; ++e) {
    for (int m = 0; m <= 4; ++m) {
      for (const char* den : {"", ":denormal"}) {
        for (Rounding r : kNearest) {
          const NumberFormat f = Parse(absl::StrCat("minifloat:", e, ":", m, den));
          CheckExhaustive(MakeMinifloatQuantizer(f, r), &cov);
        }
      }
    }
  }
  EXPECT_EQ(cov.quantizers, 8 * 5 * 2 * 2);
  std::printf("minifloat: %d quantizers, %lld inputs\n", cov.quantizers,
              static_cast<long long>(cov.inputs));
}

TEST(Exhaustive, Pow2) {
  Coverage cov;
  for (int bits : {2, 3, 4, 5, 6, 8, 16, 32}) {  // 16 and 32: windows beyond float's range
    for (float max_abs : {0.9f, 0.5f, 1.0f, 1.5f, 3.0f, 1e-3f, 1e30f, FLT_MAX, 1e-42f, 0.0f}) {
      CheckExhaustive(MakePow2Quantizer(Parse(absl::StrCat("pow2:", bits)), max_abs), &cov);
    }
  }
  std::printf("pow2: %d quantizers, %lld inputs\n", cov.quantizers,
              static_cast<long long>(cov.inputs));
}

TEST(Exhaustive, IntTensorAndChannel) {
  Coverage cov;
  const std::vector<std::pair<float, float>> ranges = {
      {-1.7f, 2.3f}, {0.0f, 6.0f}, {-0.001f, 0.002f}, {-4.0f, -1.0f}, {-127.0f, 127.0f},
      {-3.0f, 0.0f}};
  for (int bits = 2; bits <= 8; ++bits) {
    for (const char* sym : {"sym", "asym"}) {
      for (Rounding r : kNearest) {
        for (const auto& [lo, hi] : ranges) {
          const NumberFormat f = Parse(absl::StrCat("int:", bits, ":", sym, ":tensor"));
          CheckExhaustive(MakeIntQuantizer(f, {lo}, {hi}, r), &cov);
        }
        // Per channel: every channel's grid probed inside one [channels, inner] array.
        const NumberFormat f = Parse(absl::StrCat("int:", bits, ":", sym, ":channel"));
        std::vector<float> lo, hi;
        for (const auto& [l, h] : ranges) {
          lo.push_back(l);
          hi.push_back(h);
        }
        const Quantizer q = MakeIntQuantizer(f, lo, hi, r);
        ASSERT_EQ(q.scale.size(), ranges.size());
        std::vector<std::vector<float>> probes;
        size_t inner = 0;
        for (size_t c = 0; c < ranges.size(); ++c) {
          probes.push_back(Probes(ReferenceQuantizer(q, c).Values(), c + 7));
          inner = std::max(inner, probes.back().size());
        }
        std::vector<float> data(inner * ranges.size(), 0.0f);
        for (size_t c = 0; c < ranges.size(); ++c) {
          std::copy(probes[c].begin(), probes[c].end(), data.begin() + c * inner);
        }
        const std::vector<float> got = QAll(q, data);
        int bad = 0;
        for (size_t c = 0; c < ranges.size(); ++c) {
          const ReferenceQuantizer ref(q, c);
          for (size_t i = 0; i < inner; ++i) {
            const float want = ref.Quantize(data[c * inner + i]);
            if (!SameBits(got[c * inner + i], want) && ++bad <= 5) {
              ADD_FAILURE() << Describe(q) << " channel " << c << ": q(" << data[c * inner + i]
                            << ") = " << got[c * inner + i] << ", reference " << want;
            }
          }
        }
        EXPECT_EQ(bad, 0);
        cov.quantizers++;
        cov.inputs += static_cast<int64_t>(data.size());
      }
    }
  }
  std::printf("int: %d quantizers, %lld inputs\n", cov.quantizers,
              static_cast<long long>(cov.inputs));
}

// ---------------------------------------------------------------------------------------------
// Large arrays (the OpenMP path) against the reference, for formats the reference can enumerate.

std::vector<float> LargeInput(size_t n, float span, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.2f * span, 1.2f * span);
  std::uniform_real_distribution<float> log_mag(-40.0f, 40.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0:
      case 1:
        v[i] = uniform(rng);
        break;
      case 2:
        v[i] = std::exp2(log_mag(rng)) * ((rng() & 1) ? 1.0f : -1.0f);
        break;
      default:
        v[i] = (i % 64 == 3) ? 0.0f : uniform(rng) * 1e-3f;
        break;
    }
  }
  return v;
}

TEST(LargeArrays, MatchReference) {
  const size_t n = 150001;  // not a multiple of the block size
  std::vector<Quantizer> qs = {
      MakeFixedQuantizer(Parse("fixed:8"), 3.2f, Rounding::kNearestEven),
      MakeFixedQuantizer(Parse("fixed:16"), 100.0f, Rounding::kNearestAway),
      MakeFixedQuantizer(Parse("ufixed:12"), 7.0f, Rounding::kNearestEven),
      MakeMinifloatQuantizer(Parse("minifloat:4:3"), Rounding::kNearestEven),
      MakeMinifloatQuantizer(Parse("minifloat:5:10:denormal"), Rounding::kNearestEven),  // ~fp16
      MakeMinifloatQuantizer(Parse("minifloat:8:7"), Rounding::kNearestAway),            // ~bf16
      MakeMinifloatQuantizer(Parse("minifloat:8:7:denormal"), Rounding::kNearestEven),
      MakePow2Quantizer(Parse("pow2:6"), 2.5f),
      MakeIntQuantizer(Parse("int:8:asym"), {-0.4f}, {3.1f}, Rounding::kNearestEven),
      MakeIntQuantizer(Parse("int:16"), {-5.0f}, {3.1f}, Rounding::kNearestAway),
  };
  for (const Quantizer& q : qs) {
    const ReferenceQuantizer ref(q);
    const float span = std::min(MaxMagnitude(q), 1e6f);
    EXPECT_EQ(CompareWithReference(q, LargeInput(n, span, 11), ref), 0) << Describe(q);
  }
  // Per channel, 4 channels x 40000.
  const Quantizer c = MakeIntQuantizer(Parse("int:8:asym:channel"), {-1.0f, 0.0f, -30.0f, -1e-3f},
                                       {1.0f, 2.0f, 5.0f, 0.0f}, Rounding::kNearestEven);
  const size_t inner = 40000;
  std::vector<float> data = LargeInput(4 * inner, 3.0f, 5);
  const std::vector<float> got = QAll(c, data);
  int bad = 0;
  for (size_t ch = 0; ch < 4; ++ch) {
    const ReferenceQuantizer ref(c, ch);
    for (size_t i = ch * inner; i < (ch + 1) * inner; ++i) {
      if (!SameBits(got[i], ref.Quantize(data[i])) && ++bad <= 5) {
        ADD_FAILURE() << "channel " << ch << " q(" << data[i] << ") = " << got[i];
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(LargeArrays, WideFormatsAgreeWithSmallCalls) {
  // Wider than the reference can enumerate: the parallel path must equal element-wise calls.
  std::vector<Quantizer> qs = {
      MakeFixedQuantizer(Parse("fixed:28"), 1000.0f, Rounding::kNearestEven),
      MakeFixedQuantizer(Parse("fixed:32"), 1000.0f, Rounding::kNearestAway),
      MakeMinifloatQuantizer(Parse("minifloat:8:23"), Rounding::kNearestEven),
      MakeMinifloatQuantizer(Parse("minifloat:3:28:denormal"), Rounding::kNearestAway),
      MakePow2Quantizer(Parse("pow2:32"), 1000.0f),
      MakeIntQuantizer(Parse("int:32"), {-1000.0f}, {10.0f}, Rounding::kNearestEven),
      MakeIntQuantizer(Parse("int:31:asym"), {-1000.0f}, {10.0f}, Rounding::kNearestAway),
  };
  for (const Quantizer& q : qs) {
    const std::vector<float> in = LargeInput(100003, 1000.0f, 3);
    const std::vector<float> all = QAll(q, in);
    int bad = 0;
    for (size_t i = 0; i < in.size(); i += 7) {
      if (!SameBits(all[i], Q(q, in[i])) && ++bad <= 5) {
        ADD_FAILURE() << Describe(q) << " q(" << in[i] << ")";
      }
      // Inside every range here ([-9.9, 9.9]): within half a step (+ float rounding) of x.
      const float x = in[i];
      if (std::fabs(x) < 9.9f && q.format.kind != FormatKind::kPow2) {
        EXPECT_LE(std::fabs(all[i] - x), std::fabs(x) * 2e-7f + 4e-6f) << Describe(q);
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Stochastic rounding.

std::vector<Quantizer> StochasticQuantizers(uint64_t seed) {
  std::vector<Quantizer> qs = {
      MakeFixedQuantizer(Parse("fixed:8:4"), 0, Rounding::kStochastic),
      MakeFixedQuantizer(Parse("ufixed:6:2"), 0, Rounding::kStochastic),
      MakeFixedQuantizer(Parse("fixed:30:10"), 0, Rounding::kStochastic),
      MakeMinifloatQuantizer(Parse("minifloat:4:3"), Rounding::kStochastic),
      MakeMinifloatQuantizer(Parse("minifloat:4:3:denormal"), Rounding::kStochastic),
      MakeMinifloatQuantizer(Parse("minifloat:8:2"), Rounding::kStochastic),
      MakeIntQuantizer(Parse("int:8:asym"), {-1.0f}, {3.0f}, Rounding::kStochastic),
      MakeIntQuantizer(Parse("int:4"), {-1.0f}, {3.0f}, Rounding::kStochastic),
  };
  for (Quantizer& q : qs) q.seed = seed;
  return qs;
}

TEST(Stochastic, OutputIsAlwaysANeighbour) {
  for (const Quantizer& q : StochasticQuantizers(7)) {
    if (q.format.bits > 22) continue;  // the reference enumerates
    Quantizer nearest = q;
    nearest.rounding = Rounding::kNearestEven;
    const ReferenceQuantizer ref(nearest);
    const std::vector<float> in = Probes(ref.Values(), 3);
    const std::vector<float> out = QAll(q, in);
    int bad = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      if (std::isnan(in[i])) continue;
      const auto [lo, hi] = ref.Neighbors(in[i]);
      const bool ok = out[i] == lo || out[i] == hi;  // on-grid values (lo == hi) never move
      if (!ok && ++bad <= 5) {
        ADD_FAILURE() << Describe(q) << ": q(" << in[i] << ") = " << out[i] << " not in [" << lo
                      << ", " << hi << "]";
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST(Stochastic, UnbiasedMean) {
  struct Case {
    int index;  // into StochasticQuantizers
    float x;
  };
  const float min_normal_4 = 0.015625f;
  const Case cases[] = {
      {0, 0.3f},   {0, -1.23f},           {1, 3.3f},   {2, 0.3f + std::ldexp(1.0f, -12)},
      {3, 1.3f},   {3, -200.0f},          {3, 0.3f * min_normal_4},  // flush region: {0, 2^-6}
      {4, 0.3f * min_normal_4},           {5, 1e-37f}, {5, 2.5e38f},
      {6, 0.123f}, {7, -0.5f},
  };
  const std::vector<Quantizer> qs = StochasticQuantizers(12345);
  const size_t n = 200000;
  for (const Case& c : cases) {
    const Quantizer& q = qs[c.index];
    const std::vector<float> out = QAll(q, std::vector<float>(n, c.x));
    double sum = 0;
    float lo = out[0], hi = out[0];
    for (float v : out) {
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    const double mean = sum / n;
    // Two neighbours differing by one step: standard error <= step / (2 sqrt(n)); allow 5 sigma.
    const double step = static_cast<double>(hi) - lo;
    EXPECT_GT(step, 0) << Describe(q) << " x=" << c.x;
    EXPECT_NEAR(mean, c.x, 5 * step / (2 * std::sqrt(double(n))) + 1e-12 * std::fabs(c.x))
        << Describe(q) << " x=" << c.x << " in [" << lo << ", " << hi << "]";
  }
}

TEST(Stochastic, DeterministicPerSeedAndChunkingInvariant) {
  const std::vector<float> in = LargeInput(123457, 2.0f, 9);
  const std::vector<Quantizer> a = StochasticQuantizers(99), b = StochasticQuantizers(100);
  for (size_t k = 0; k < a.size(); ++k) {
    const std::vector<float> one = QAll(a[k], in);
    EXPECT_EQ(QAll(a[k], in), one) << Describe(a[k]);
    EXPECT_NE(QAll(b[k], in), one) << Describe(a[k]);  // another seed, other draws
    // Chunked calls (small ones on the calling thread, big ones in parallel) with offsets.
    std::vector<float> chunked = in;
    const int64_t cuts[] = {0, 1, 1000, 1001, 60000, 100000, static_cast<int64_t>(in.size())};
    for (size_t c = 0; c + 1 < std::size(cuts); ++c) {
      QuantizeInPlace(a[k], chunked.data() + cuts[c], cuts[c + 1] - cuts[c], cuts[c]);
    }
    EXPECT_EQ(chunked, one) << Describe(a[k]);
  }
}

}  // namespace
}  // namespace bitsweep::quant
