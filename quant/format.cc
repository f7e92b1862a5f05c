// Number formats and their quantizers (format.h has the math).
//
// Decisions the header leaves open, kept in one place:
//   * NaN inputs stay NaN in every format (a NaN is a bug upstream; quantization must not hide
//     it). +-Inf saturate to the largest magnitude of the format's sign.
//   * Zero results: two's-complement and affine formats (fixed, ufixed, int) have one zero and
//     return +0.0f. Sign-magnitude formats (minifloat, pow2) keep the sign of x, so a negative
//     value that flushes to zero gives -0.0f.
//   * fixed/ufixed FL is limited to [B-127, 126] so that 2^FL, 2^-FL and every representable value
//     are finite normal floats; calibration clamps into that range, ParseFormat rejects others.
//     The kernel runs in float while |k| <= 2^22 (fixed B <= 23, ufixed B <= 22), else in
//     double; for B > 24 the output k * 2^-FL is rounded once to float (k may not fit a float).
//   * int: PyTorch's fake quantization rule, k = round(fl(x * inv)) with inv = fl(1 / s) (float
//     arithmetic, not the exact quotient x / s: a value near a tie of x / s may round to the
//     other neighbour), clamped to [qmin - zp, qmax - zp]; the output of grid integer n is
//     fl(n * s), computed as float(double(n) * double(s)) (the same for |n| <= 2^24). A scale is
//     clamped to [FLT_MIN, FLT_MAX] (an all-zero clip range gives a grid of FLT_MIN steps, not a
//     division by zero); 1 / FLT_MIN is finite.
//     int:32:asym is rejected: its zero point (up to 2^32 - 1) does not fit the int32 field.
//   * minifloat: normal exponents are fields 1 .. 2^E-1 (e = field - bias), field 0 is zero (and
//     the denormals with ":denormal"). Representable values that a float cannot hold are not
//     produced: for E = 8 the all-ones field (2^128) is out of float's range, so the largest
//     output is (2 - 2^-M) * 2^127 (FLT_MAX for M = 23); for M > 23 normal floats are already
//     on the grid. nearest_even picks the value with the even code (sign-magnitude code
//     field<<M | mantissa); for M >= 1 that is the even mantissa LSB, for M = 0 the even exponent
//     field. The flush-to-zero tie (|x| == smallest_normal / 2) rounds up, as the header says.
//   * pow2: "log2|w| rounds to nearest, ties up": a tie would need |w| = 2^(k+1/2), which no float
//     is, so the rule is |w| >= 2^k * sqrt(2) -> 2^(k+1), decided exactly on the float's mantissa
//     bits. e_max is clamped to [-149, 127] (float's range); max|w| == 0 gives e_max = 0. The
//     rounding mode of the quantizer is ignored (pow2 has its own rule).
//   * stochastic: u = (splitmix64(key(seed) + (offset + i + 1) * golden) >> 11) * 2^-53, and
//     r = floor(v + u) evaluated exactly, as floor(v) + (u >= 1 - frac(v)): deterministic per
//     (seed, element index), independent of threading and chunking. For minifloat normals the
//     float's discarded mantissa bits are added to uniform random bits of the same width and
//     truncated (floor(v + u) on that grid: exactly unbiased).
#include "quant/format.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace bitsweep::quant {
namespace {

// ---------------------------------------------------------------------------------------------
// Parsing helpers.

absl::Status Bad(std::string_view text, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("invalid number format \"", std::string(text),
                                                 "\": ", std::string(problem)));
}

std::vector<std::string_view> SplitColons(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t colon = s.find(':', start);
    if (colon == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, colon - start));
    start = colon + 1;
  }
}

// Strict decimal integer: optional '-' (when allowed) and 1..9 digits, nothing else.
bool ParseSmallInt(std::string_view s, bool allow_negative, int* out) {
  bool negative = false;
  if (allow_negative && !s.empty() && s[0] == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 9) return false;
  int value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *out = negative ? -value : value;
  return true;
}

constexpr int kMaxBits = 32;

// FL keeps 2^FL, 2^-FL and every representable value finite normal floats.
int MinFractionalBits(int bits) { return bits - 127; }
constexpr int kMaxFractionalBits = 126;

// ---------------------------------------------------------------------------------------------
// Parallel loop: small arrays run on the calling thread; large ones in static blocks.

constexpr int64_t kParallelMin = 16384;
constexpr int64_t kBlock = 4096;

template <typename Body>  // body(begin, end)
void ForBlocks(int64_t n, const Body& body) {
  if (n <= 0) return;
  if (n < kParallelMin) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) body(b * kBlock, std::min(n, (b + 1) * kBlock));
}

// ---------------------------------------------------------------------------------------------
// The element loops are compiled for the baseline ISA and, as clones picked once at first use,
// for AVX2+FMA and AVX-512 machines (same results: only the vector width differs, and the one
// fused multiply-add below is written as std::fma, exact in every clone).

#if defined(__GNUC__) && defined(__x86_64__)
// name(params) calls the body compiled for AVX-512, AVX2+FMA or the baseline, by what the CPU
// supports (by feature, not by model name: virtual machines report generic models).
#define BITSWEEP_VECTOR_CLONES(name, params, args, body)                                        \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) void name##Avx512    \
      params { body args; }                                                                    \
  __attribute__((target("avx2,fma"))) void name##Avx2 params { body args; }                  \
  void name##Base params { body args; }                                                        \
  void name params {                                                                           \
    static const int level = VectorLevel();                                                    \
    if (level == 2) {                                                                          \
      name##Avx512 args;                                                                       \
    } else if (level == 1) {                                                                   \
      name##Avx2 args;                                                                         \
    } else {                                                                                   \
      name##Base args;                                                                         \
    }                                                                                          \
  }
int VectorLevel() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq");
  return avx512 ? 2 : avx2 ? 1 : 0;
}
#else
#define BITSWEEP_VECTOR_CLONES(name, params, args, body) \
  void name params { body args; }
#endif
// GCC inlines a helper into a clone built for another -march only when it is always_inline.
#define BITSWEEP_INLINE inline __attribute__((always_inline))

// std::bit_cast, always inlined (see BITSWEEP_INLINE).
template <typename To, typename From>
BITSWEEP_INLINE constexpr To BitCast(const From& from) {
  return __builtin_bit_cast(To, from);
}

// ---------------------------------------------------------------------------------------------
// Rounding to integers, branch-free so loops vectorize (no SSE4.1 round instruction is assumed).

// c ? a : b on bit patterns, as masks: GCC does not if-convert a select whose operand is a
// floating-point result it could compute on one path only (trapping math), which would keep
// these loops scalar.
BITSWEEP_INLINE uint32_t Select(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (a & m) | (b & ~m);
}
BITSWEEP_INLINE uint64_t Select(bool c, uint64_t a, uint64_t b) {
  const uint64_t m = 0u - static_cast<uint64_t>(c);
  return (a & m) | (b & ~m);
}
template <typename T>
BITSWEEP_INLINE T SelectF(bool c, T a, T b) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  return BitCast<T>(Select(c, BitCast<U>(a), BitCast<U>(b)));
}

template <typename T>
constexpr T kMagic = T(1.5) * T(1ull << (std::numeric_limits<T>::digits - 1));  // 1.5 * 2^(p-1)

// Nearest integer to v, ties to even (the default FP rounding mode, = std::nearbyint), for
// |v| <= 2^(p-2) (2^22 for float, 2^51 for double). A zero result is +0.
template <typename T>
BITSWEEP_INLINE T RoundEvenSmall(T v) {
  return (v + kMagic<T>) - kMagic<T>;
}

// Nearest integer with the given tie rule (not stochastic), |v| <= 2^(p-2).
template <typename T, Rounding R>
BITSWEEP_INLINE T RoundSmall(T v) {
  T r = RoundEvenSmall(v);
  if constexpr (R == Rounding::kNearestAway) {
    const T d = v - r;  // exact
    r = SelectF((d == T(0.5)) & (v > T(0)), r + T(1), r);
    r = SelectF((d == T(-0.5)) & (v < T(0)), r - T(1), r);
  }
  return r;
}

// floor(v) for |v| <= 2^(p-2).
template <typename T>
inline T FloorSmall(T v) {
  const T r = RoundEvenSmall(v);
  return SelectF(r > v, r - T(1), r);
}

// Nearest integer for 0 <= v (any magnitude; v >= 2^(p-1) is already an integer).
template <Rounding R>
BITSWEEP_INLINE float RoundNonNegative(float v) {
  constexpr float kTwoP23 = 0x1p23f;
  float r = (v + kTwoP23) - kTwoP23;
  r = SelectF(v < kTwoP23, r, v);
  if constexpr (R == Rounding::kNearestAway) r = SelectF(v - r == 0.5f, r + 1.0f, r);
  return r;
}

inline float FloorNonNegative(float v) {
  const float r = RoundNonNegative<Rounding::kNearestEven>(v);
  return SelectF(r > v, r - 1.0f, r);
}

// ---------------------------------------------------------------------------------------------
// Counter-based random numbers for stochastic rounding.

struct Counter {
  uint64_t key;
  explicit Counter(uint64_t seed) : key(SplitMix64Mix(seed ^ 0x6A09E667F3BCC909ull)) {}
  uint64_t Bits(int64_t index) const {
    return SplitMix64Mix(key + (static_cast<uint64_t>(index) + 1) * kSplitMix64Gamma);
  }
  double Uniform(int64_t index) const { return UnitInterval(Bits(index)); }  // [0, 1)
};

// ---------------------------------------------------------------------------------------------
// fixed / ufixed: q = clamp(round(x * 2^FL), lo, hi) * 2^-FL. T = float when every integer in
// [lo, hi] fits RoundEvenSmall<float> (|k| <= 2^22), else double.

struct FixedPlan {
  int fl = 0;
  double lo = 0, hi = 0;  // integer range
};

FixedPlan PlanFixed(const Quantizer& q) {
  const bool is_signed = q.format.kind == FormatKind::kFixed;
  const int bits = std::clamp(q.format.bits, is_signed ? 2 : 1, kMaxBits);
  FixedPlan p;
  p.fl = std::clamp(q.fractional_bits, MinFractionalBits(bits), kMaxFractionalBits);
  if (is_signed) {
    p.lo = -std::ldexp(1.0, bits - 1);
    p.hi = std::ldexp(1.0, bits - 1) - 1;
  } else {
    p.lo = 0;
    p.hi = std::ldexp(1.0, bits) - 1;
  }
  return p;
}

template <typename T, Rounding R>
BITSWEEP_INLINE void FixedKernel(float* data, int64_t begin, int64_t end, const FixedPlan& p) {
  const T scale = std::ldexp(T(1), p.fl), inv = std::ldexp(T(1), -p.fl);
  const T lo = T(p.lo), hi = T(p.hi);
  for (int64_t i = begin; i < end; ++i) {
    T v = T(data[i]) * scale;  // exact: scaling by a power of two
    v = v < lo ? lo : v;       // clamping first is equivalent (integer bounds) and keeps |v|
    v = v > hi ? hi : v;       // small enough for RoundSmall; NaN passes through
    data[i] = static_cast<float>(RoundSmall<T, R>(v) * inv);
  }
}

// The float kernels, as vector clones.
#define BITSWEEP_FIXED_ARGS (float* data, int64_t begin, int64_t end, const FixedPlan& p)
BITSWEEP_VECTOR_CLONES(FixedFloatEven, BITSWEEP_FIXED_ARGS, (data, begin, end, p),
                       (FixedKernel<float, Rounding::kNearestEven>))
BITSWEEP_VECTOR_CLONES(FixedFloatAway, BITSWEEP_FIXED_ARGS, (data, begin, end, p),
                       (FixedKernel<float, Rounding::kNearestAway>))
#undef BITSWEEP_FIXED_ARGS

void FixedStochastic(float* data, int64_t begin, int64_t end, int64_t offset, const FixedPlan& p,
                     const Counter& rng) {
  const double scale = std::ldexp(1.0, p.fl), inv = std::ldexp(1.0, -p.fl);
  for (int64_t i = begin; i < end; ++i) {
    double v = double(data[i]) * scale;
    v = v < p.lo ? p.lo : v;
    v = v > p.hi ? p.hi : v;
    const double f = FloorSmall(v);
    // floor(v + u), exactly; -0 + 0 = +0.
    const double r = f + SelectF(rng.Uniform(offset + i) >= 1.0 - (v - f), 1.0, 0.0);
    data[i] = static_cast<float>(r * inv);
  }
}

void QuantizeFixed(const Quantizer& q, float* data, int64_t count, int64_t offset) {
  const FixedPlan p = PlanFixed(q);
  const bool small = p.hi <= 0x1p22 && p.lo >= -0x1p22;
  if (q.rounding == Rounding::kStochastic) {
    const Counter rng(q.seed);
    ForBlocks(count, [&](int64_t b, int64_t e) { FixedStochastic(data, b, e, offset, p, rng); });
  } else if (q.rounding == Rounding::kNearestAway) {
    ForBlocks(count, [&](int64_t b, int64_t e) {
      small ? FixedFloatAway(data, b, e, p)
            : FixedKernel<double, Rounding::kNearestAway>(data, b, e, p);
    });
  } else {
    ForBlocks(count, [&](int64_t b, int64_t e) {
      small ? FixedFloatEven(data, b, e, p)
            : FixedKernel<double, Rounding::kNearestEven>(data, b, e, p);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// minifloat: bit manipulation on the float. Magnitudes >= the smallest normal round their 23-bit
// mantissa to M bits in the integer domain (a carry moves into the exponent by itself); smaller
// magnitudes live on a uniform grid (step 2^(e_min-M) with denormals, the smallest normal
// without) and are rounded as fixed point; the result is clamped to the largest magnitude.

struct MinifloatPlan {
  int32_t min_normal_bits = 0;  // |x| bits below this: the sub-normal region
  int32_t max_bits = 0;         // largest magnitude
  int shift = 0;                // 23 - M, or 0 when M >= 23 (normal floats already on the grid)
  uint32_t mask = 0;            // (1 << shift) - 1
  float s1 = 1, s2 = 1;         // sub-normal region: v = |x| * s1 * s2 in grid steps
  float step = 1;               // value of one step
  bool denormals = false;
};

MinifloatPlan PlanMinifloat(const NumberFormat& f) {
  const int e_bits = std::clamp(f.exponent_bits, 1, 8);
  const int m_bits = std::clamp(f.mantissa_bits, 0, kMaxBits - 1 - e_bits);
  const int bias = (1 << (e_bits - 1)) - 1;
  const int e_min = 1 - bias;                                   // >= -126
  const int e_max = std::min((1 << e_bits) - 1 - bias, 127);    // E = 8: 128 -> 127
  const int m_eff = std::min(m_bits, 23);
  MinifloatPlan p;
  p.denormals = f.denormals;
  p.min_normal_bits = (e_min + 127) << 23;
  p.max_bits = static_cast<int32_t>((static_cast<uint32_t>(e_max + 127) << 23) |
                                    (((1u << m_eff) - 1) << (23 - m_eff)));
  p.shift = 23 - m_eff;
  p.mask = (p.shift > 0) ? (1u << p.shift) - 1 : 0;
  const int k = f.denormals ? m_bits - e_min : -e_min;  // log2(1 / step), in [-1, 149]
  const int k1 = std::min(k, 127);
  p.s1 = std::ldexp(1.0f, k1);
  p.s2 = std::ldexp(1.0f, k - k1);
  p.step = std::ldexp(1.0f, -k);  // >= 2^-149
  return p;
}

template <Rounding R, bool kDenormals>
BITSWEEP_INLINE void MinifloatKernel(float* data, int64_t begin, int64_t end,
                                     const MinifloatPlan& p) {
  const uint32_t shift = static_cast<uint32_t>(p.shift), mask = p.mask;
  const uint32_t half = mask >> 1;                   // 2^(shift-1) - 1
  const uint32_t one = mask != 0 ? 1u : 0u;          // shift == 0: no rounding at all
  const int32_t min_normal_bits = p.min_normal_bits, max_bits = p.max_bits;
  const float s1 = p.s1, s2 = p.s2, step = p.step;
  const uint32_t half_min_normal_bits = BitCast<uint32_t>(0.5f * BitCast<float>(min_normal_bits));
  for (int64_t i = begin; i < end; ++i) {
    const float x = data[i];
    const uint32_t bits = BitCast<uint32_t>(x);
    const uint32_t sign = bits & 0x80000000u;
    const uint32_t a = bits ^ sign;
    // Normal region: round the mantissa to M bits.
    uint32_t an;
    if constexpr (R == Rounding::kNearestEven) {
      an = (a + half + ((a >> shift) & one)) & ~mask;  // + half, + 1 more if the kept LSB is odd
    } else {
      an = (a + half + one) & ~mask;                   // + 2^(shift-1): ties away from zero
    }
    // Integer comparisons and min/max on the bit patterns (monotone for non-negative floats);
    // an only overflows the int32 range for NaN, which the last line keeps.
    int32_t res;
    if constexpr (kDenormals) {  // sub-normal region: a uniform grid
      const float v = (BitCast<float>(a) * s1) * s2;
      const int32_t as = BitCast<int32_t>(RoundNonNegative<R>(v) * step);
      res = static_cast<int32_t>(a) < min_normal_bits ? as : static_cast<int32_t>(an);
    } else {
      // Below the smallest normal: 0 under half of it, else the smallest normal (ties round up).
      // From half of it up, max(an, smallest normal) is that (an <= it there) and an above it.
      res = std::max(static_cast<int32_t>(an), min_normal_bits);
      res = a < half_min_normal_bits ? 0 : res;
    }
    res = std::min(res, max_bits);
    const uint32_t out = static_cast<uint32_t>(res) | sign;
    data[i] = BitCast<float>(static_cast<int32_t>(a) > 0x7F800000 ? bits : out);  // NaN: itself
  }
}

// The kernels, as vector clones: (rounding, denormals).
#define BITSWEEP_MINIFLOAT_ARGS (float* data, int64_t begin, int64_t end, const MinifloatPlan& p)
BITSWEEP_VECTOR_CLONES(MinifloatEven, BITSWEEP_MINIFLOAT_ARGS, (data, begin, end, p),
                       (MinifloatKernel<Rounding::kNearestEven, false>))
BITSWEEP_VECTOR_CLONES(MinifloatEvenDenormal, BITSWEEP_MINIFLOAT_ARGS, (data, begin, end, p),
                       (MinifloatKernel<Rounding::kNearestEven, true>))
BITSWEEP_VECTOR_CLONES(MinifloatAway, BITSWEEP_MINIFLOAT_ARGS, (data, begin, end, p),
                       (MinifloatKernel<Rounding::kNearestAway, false>))
BITSWEEP_VECTOR_CLONES(MinifloatAwayDenormal, BITSWEEP_MINIFLOAT_ARGS, (data, begin, end, p),
                       (MinifloatKernel<Rounding::kNearestAway, true>))
#undef BITSWEEP_MINIFLOAT_ARGS

void MinifloatStochastic(float* data, int64_t begin, int64_t end, int64_t offset,
                         const MinifloatPlan& p, const Counter& rng) {
  for (int64_t i = begin; i < end; ++i) {
    const float x = data[i];
    if (std::isnan(x)) continue;
    const uint32_t bits = BitCast<uint32_t>(x);
    const uint32_t sign = bits & 0x80000000u;
    const uint32_t a = bits ^ sign;
    const uint64_t h = rng.Bits(offset + i);
    uint32_t res;
    if (static_cast<int32_t>(a) >= p.min_normal_bits) {
      res = (a + (static_cast<uint32_t>(h) & p.mask)) & ~p.mask;  // floor(v + u), u on 2^-shift
    } else {
      const float v = (BitCast<float>(a) * p.s1) * p.s2;
      const float f = FloorNonNegative(v);
      const double u = static_cast<double>(static_cast<int64_t>(h >> 11)) * 0x1p-53;
      const float r = f + SelectF(u >= 1.0 - static_cast<double>(v - f), 1.0f, 0.0f);
      res = BitCast<uint32_t>(r * p.step);
    }
    res = static_cast<int32_t>(res) > p.max_bits ? static_cast<uint32_t>(p.max_bits) : res;
    data[i] = BitCast<float>(res | sign);
  }
}

void QuantizeMinifloat(const Quantizer& q, float* data, int64_t count, int64_t offset) {
  const MinifloatPlan p = PlanMinifloat(q.format);
  auto run = [&](auto kernel) {
    ForBlocks(count, [&](int64_t b, int64_t e) { kernel(data, b, e, p); });
  };
  if (q.rounding == Rounding::kStochastic) {
    const Counter rng(q.seed);
    ForBlocks(count,
              [&](int64_t b, int64_t e) { MinifloatStochastic(data, b, e, offset, p, rng); });
  } else if (q.rounding == Rounding::kNearestAway) {
    p.denormals ? run(MinifloatAwayDenormal) : run(MinifloatAway);
  } else {
    p.denormals ? run(MinifloatEvenDenormal) : run(MinifloatEven);
  }
}

// ---------------------------------------------------------------------------------------------
// pow2.

// The smallest float mantissa field m with 1 + m/2^23 >= sqrt(2): 1 + 0x3504F3/2^23 =
// 1.41421353... < sqrt(2) = 1.41421356... < 1 + 0x3504F4/2^23 = 1.41421365...
constexpr uint32_t kSqrt2Mantissa = 0x3504F4;

// round(log2 |x|), ties up, for finite nonzero x (exact).
int Pow2Exponent(float x) {
  int e;
  const float f = std::frexp(std::fabs(x), &e);  // f in [0.5, 1): |x| = 2f * 2^(e-1)
  const uint32_t mantissa = BitCast<uint32_t>(2.0f * f) & 0x7FFFFF;
  return (e - 1) + (mantissa >= kSqrt2Mantissa ? 1 : 0);
}

struct Pow2Plan {
  int e_min = 0, e_max = 0;
};

Pow2Plan PlanPow2(const Quantizer& q) {
  const int bits = std::clamp(q.format.bits, 2, kMaxBits);
  Pow2Plan p;
  p.e_max = std::clamp(q.max_exponent, -149, 127);
  const int64_t window = (int64_t{1} << (bits - 1)) - 1;  // exponent codes 1 .. window
  // No nonzero float rounds below 2^-149, so a window reaching further changes nothing.
  p.e_min = static_cast<int>(std::max<int64_t>(p.e_max - window + 1, -150));
  return p;
}

void Pow2Kernel(float* data, int64_t begin, int64_t end, const Pow2Plan& p) {
  const int32_t e_min = p.e_min, e_max = p.e_max;
  for (int64_t i = begin; i < end; ++i) {
    const float x = data[i];
    const uint32_t bits = BitCast<uint32_t>(x);
    const uint32_t sign = bits & 0x80000000u;
    const uint32_t a = bits ^ sign;
    const bool tiny = a < 0x00800000u;  // denormal (or zero): normalize exactly
    const float ax = BitCast<float>(a);
    const uint32_t b = Select(tiny, BitCast<uint32_t>(ax * 0x1p64f), a);
    int32_t e = static_cast<int32_t>(b >> 23) - 127 - (tiny ? 64 : 0);
    e += (b & 0x7FFFFFu) >= kSqrt2Mantissa ? 1 : 0;
    e = e > e_max ? e_max : e;
    const float normal = BitCast<float>(static_cast<uint32_t>(e + 127) << 23);
    const float denormal =
        BitCast<float>(static_cast<uint32_t>(e + 127 + 64) << 23) * 0x1p-64f;
    uint32_t out = Select(e >= -126, BitCast<uint32_t>(normal),
                          BitCast<uint32_t>(denormal));
    out = Select((a == 0) | (e < e_min), 0u, out) | sign;
    data[i] = BitCast<float>(Select(a > 0x7F800000u, bits, out));
  }
}

// ---------------------------------------------------------------------------------------------
// int: q = (clamp(round(fl(x * inv)) + zp, qmin, qmax) - zp) * s, inv = fl(1 / s): PyTorch's
// fake quantization rule (torch.fake_quantize_per_tensor_affine), which a oneDNN post-op chain
// computes too (InferenceCompiler::AppendQuantizerPostOps).

struct IntChannel {
  double scale = 1, lo = 0, hi = 0;  // lo/hi: the range of round(x / s), i.e. [qmin-zp, qmax-zp]
};

float SanitizeScale(double s) {
  if (!(s > 0)) return FLT_MIN;  // also NaN
  return static_cast<float>(std::clamp(s, double(FLT_MIN), double(FLT_MAX)));
}

// The scale s, lowered when needed so that n * s stays finite for every |n| <= bound: a range
// near FLT_MAX gives a scale whose extreme codes would otherwise dequantize to infinity.
float CapScale(float s, int64_t bound) {
  const double limit = double(FLT_MAX) / static_cast<double>(bound);
  float cap = static_cast<float>(limit);
  if (static_cast<double>(cap) > limit) cap = std::nextafter(cap, 0.0f);
  return std::min(s, cap);
}

void IntLimits(const NumberFormat& f, int64_t* qmin, int64_t* qmax) {
  if (f.symmetric) {
    const int bits = std::clamp(f.bits, 2, kMaxBits);
    *qmax = (int64_t{1} << (bits - 1)) - 1;
    *qmin = -*qmax;
  } else {
    const int bits = std::clamp(f.bits, 2, kMaxBits - 1);
    *qmin = 0;
    *qmax = (int64_t{1} << bits) - 1;
  }
}

IntChannel PlanIntChannel(const Quantizer& q, size_t c) {
  int64_t qmin, qmax;
  IntLimits(q.format, &qmin, &qmax);
  IntChannel ch;
  ch.scale = SanitizeScale(q.scale[c]);
  const int64_t zp = c < q.zero_point.size() ? q.zero_point[c] : 0;
  ch.lo = static_cast<double>(qmin - zp);
  ch.hi = static_cast<double>(qmax - zp);
  return ch;
}

// Integer ranges beyond +-2^22 (B >= 23): y = fl(x * inv) is rounded and clamped in double (an
// integer-valued float y >= 2^23 is already on the grid), and the output fl(n * s) is the double
// product rounded once to float.
template <Rounding R>
void IntKernel(float* data, int64_t begin, int64_t end, const IntChannel& ch) {
  const double s = ch.scale, lo = ch.lo, hi = ch.hi;
  const float inv = IntInverse(ch.scale);
  for (int64_t i = begin; i < end; ++i) {
    double y = static_cast<double>(data[i] * inv);
    y = y < lo ? lo : y;
    y = y > hi ? hi : y;
    data[i] = static_cast<float>(RoundSmall<double, R>(y) * s);
  }
}

// The same q in float arithmetic, for integer ranges within +-2^22 (B <= 23 symmetric, B <= 22
// asymmetric): clamping y = fl(x * inv) to the integer bounds before rounding gives the same
// result as after and keeps |y| small enough for RoundSmall; n * s with |n| <= 2^22 is fl(n * s)
// exactly as PyTorch's float product. NaN stays NaN (the comparisons keep it, and so does the
// rounding), +-Inf clamp to the extreme codes.
template <Rounding R>
BITSWEEP_INLINE void IntFloatLoop(float* data, int64_t begin, int64_t end, float s, float inv,
                                  float lo, float hi) {
  for (int64_t i = begin; i < end; ++i) {
    float y = data[i] * inv;
    y = y < lo ? lo : y;
    y = y > hi ? hi : y;
    data[i] = RoundSmall<float, R>(y) * s;
  }
}

#define BITSWEEP_INT_ARGS \
  (float* data, int64_t begin, int64_t end, float s, float inv, float lo, float hi)
BITSWEEP_VECTOR_CLONES(IntFloatEven, BITSWEEP_INT_ARGS, (data, begin, end, s, inv, lo, hi),
                       (IntFloatLoop<Rounding::kNearestEven>))
BITSWEEP_VECTOR_CLONES(IntFloatAway, BITSWEEP_INT_ARGS, (data, begin, end, s, inv, lo, hi),
                       (IntFloatLoop<Rounding::kNearestAway>))
#undef BITSWEEP_INT_ARGS

// Nearest-rounding int q over [begin, end): the float kernel when the range allows it.
template <Rounding R>
void IntNearest(float* data, int64_t begin, int64_t end, const IntChannel& ch) {
  if (ch.lo < -0x1p22 || ch.hi > 0x1p22) {
    IntKernel<R>(data, begin, end, ch);
    return;
  }
  const float s = static_cast<float>(ch.scale), inv = IntInverse(ch.scale);
  const float lo = static_cast<float>(ch.lo), hi = static_cast<float>(ch.hi);
  if constexpr (R == Rounding::kNearestEven) {
    IntFloatEven(data, begin, end, s, inv, lo, hi);
  } else {
    IntFloatAway(data, begin, end, s, inv, lo, hi);
  }
}

// floor(y + u) for y = fl(x * inv), in double (exact for every B).
void IntStochastic(float* data, int64_t begin, int64_t end, int64_t offset, const IntChannel& ch,
                   const Counter& rng) {
  const float inv = IntInverse(ch.scale);
  for (int64_t i = begin; i < end; ++i) {
    double y = static_cast<double>(data[i] * inv);
    y = y < ch.lo ? ch.lo : y;
    y = y > ch.hi ? ch.hi : y;
    const double f = FloorSmall(y);
    const double r = f + SelectF(rng.Uniform(offset + i) >= 1.0 - (y - f), 1.0, 0.0);
    data[i] = static_cast<float>(r * ch.scale);
  }
}

void QuantizeInt(const Quantizer& q, float* data, int64_t count, int64_t offset) {
  if (q.scale.empty()) return;  // not a built quantizer: nothing to apply
  if (!q.format.per_channel && q.rounding != Rounding::kStochastic) {
    // One channel, nearest rounding: no per-call allocation (the engine calls this per block).
    const IntChannel ch = PlanIntChannel(q, 0);
    ForBlocks(count, [&](int64_t begin, int64_t end) {
      q.rounding == Rounding::kNearestEven ? IntNearest<Rounding::kNearestEven>(data, begin, end, ch)
                                           : IntNearest<Rounding::kNearestAway>(data, begin, end, ch);
    });
    return;
  }
  std::vector<IntChannel> channels;
  const size_t n_channels = q.format.per_channel ? q.scale.size() : 1;
  for (size_t c = 0; c < n_channels; ++c) channels.push_back(PlanIntChannel(q, c));
  // Precondition: count is a multiple of the channel count; a remainder joins the last channel.
  const int64_t inner = std::max<int64_t>(1, count / static_cast<int64_t>(n_channels));
  const Counter rng(q.seed);
  ForBlocks(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t c = std::min<int64_t>(i / inner, static_cast<int64_t>(n_channels) - 1);
      const bool last = c + 1 == static_cast<int64_t>(n_channels);
      const int64_t stop = last ? end : std::min(end, (c + 1) * inner);
      switch (q.rounding) {
        case Rounding::kNearestEven:
          IntNearest<Rounding::kNearestEven>(data, i, stop, channels[c]);
          break;
        case Rounding::kNearestAway:
          IntNearest<Rounding::kNearestAway>(data, i, stop, channels[c]);
          break;
        case Rounding::kStochastic:
          IntStochastic(data, i, stop, offset, channels[c], rng);
          break;
      }
      i = stop;
    }
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parsing and printing.

absl::StatusOr<NumberFormat> ParseFormat(std::string_view text) {
  if (text.empty()) return Bad(text, "empty format");
  const std::vector<std::string_view> f = SplitColons(text);
  const std::string_view kind = f[0];
  NumberFormat out;
  auto trailing = [&](size_t allowed) -> absl::Status {
    if (f.size() > allowed) {
      return Bad(text, absl::StrCat("unexpected trailing field \"", std::string(f[allowed]), "\""));
    }
    return absl::OkStatus();
  };
  auto width = [&](size_t index, std::string_view what, int lo, int hi, int* value) {
    if (f.size() <= index) return Bad(text, absl::StrCat("missing ", std::string(what)));
    if (!ParseSmallInt(f[index], /*allow_negative=*/false, value)) {
      return Bad(text, absl::StrCat(std::string(what), " \"", std::string(f[index]),
                                    "\" is not a number"));
    }
    if (*value < lo || *value > hi) {
      return Bad(text, absl::StrCat(std::string(what), " must be in ", lo, "..", hi, ", got ",
                                    *value));
    }
    return absl::OkStatus();
  };

  if (kind == "fp32") {
    if (auto s = trailing(1); !s.ok()) return s;
    return out;
  }
  if (kind == "fixed" || kind == "ufixed") {
    const bool is_signed = kind == "fixed";
    out.kind = is_signed ? FormatKind::kFixed : FormatKind::kUfixed;
    if (auto s = width(1, "width", is_signed ? 2 : 1, kMaxBits, &out.bits); !s.ok()) return s;
    if (f.size() > 2) {
      int fl;
      if (!ParseSmallInt(f[2], /*allow_negative=*/true, &fl)) {
        return Bad(text, absl::StrCat("fractional bits \"", std::string(f[2]),
                                      "\" is not a number"));
      }
      if (fl < MinFractionalBits(out.bits) || fl > kMaxFractionalBits) {
        return Bad(text, absl::StrCat("fractional bits must be in ", MinFractionalBits(out.bits),
                                      "..", kMaxFractionalBits,
                                      " (float's range), got ", fl));
      }
      out.fractional_bits = fl;
    }
    if (auto s = trailing(3); !s.ok()) return s;
    return out;
  }
  if (kind == "minifloat") {
    out.kind = FormatKind::kMinifloat;
    if (auto s = width(1, "exponent bits", 1, 8, &out.exponent_bits); !s.ok()) return s;
    if (auto s = width(2, "mantissa bits", 0, kMaxBits - 1 - out.exponent_bits,
                       &out.mantissa_bits);
        !s.ok()) {
      return s;
    }
    out.bits = 1 + out.exponent_bits + out.mantissa_bits;
    if (f.size() > 3) {
      if (f[3] != "denormal") {
        return Bad(text, absl::StrCat("unknown minifloat option \"", std::string(f[3]),
                                      "\" (expected denormal)"));
      }
      out.denormals = true;
    }
    if (auto s = trailing(4); !s.ok()) return s;
    return out;
  }
  if (kind == "pow2") {
    out.kind = FormatKind::kPow2;
    if (auto s = width(1, "width", 2, kMaxBits, &out.bits); !s.ok()) return s;
    if (auto s = trailing(2); !s.ok()) return s;
    return out;
  }
  if (kind == "int") {
    out.kind = FormatKind::kInt;
    if (auto s = width(1, "width", 2, kMaxBits, &out.bits); !s.ok()) return s;
    bool have_symmetry = false, have_granularity = false;
    for (size_t i = 2; i < f.size(); ++i) {
      if ((f[i] == "sym" || f[i] == "asym") && !have_symmetry) {
        have_symmetry = true;
        out.symmetric = f[i] == "sym";
      } else if ((f[i] == "tensor" || f[i] == "channel") && !have_granularity) {
        have_granularity = true;
        out.per_channel = f[i] == "channel";
      } else {
        return Bad(text, absl::StrCat("unexpected int option \"", std::string(f[i]),
                                      "\" (expected sym|asym then tensor|channel, each once)"));
      }
    }
    if (!out.symmetric && out.bits > kMaxBits - 1) {
      return Bad(text, "asymmetric int supports at most 31 bits (the zero point is an int32)");
    }
    return out;
  }
  return Bad(text, absl::StrCat("unknown format \"", std::string(kind),
                                "\" (expected fp32, fixed, ufixed, minifloat, pow2 or int)"));
}

std::string FormatToString(const NumberFormat& f) {
  switch (f.kind) {
    case FormatKind::kFp32:
      return "fp32";
    case FormatKind::kFixed:
    case FormatKind::kUfixed: {
      std::string s = absl::StrCat(f.kind == FormatKind::kFixed ? "fixed:" : "ufixed:", f.bits);
      if (f.fractional_bits) absl::StrAppend(&s, ":", *f.fractional_bits);
      return s;
    }
    case FormatKind::kMinifloat:
      return absl::StrCat("minifloat:", f.exponent_bits, ":", f.mantissa_bits,
                          f.denormals ? ":denormal" : "");
    case FormatKind::kPow2:
      return absl::StrCat("pow2:", f.bits);
    case FormatKind::kInt:
      return absl::StrCat("int:", f.bits, f.symmetric ? ":sym" : ":asym",
                          f.per_channel ? ":channel" : ":tensor");
  }
  return "fp32";
}

absl::StatusOr<Rounding> ParseRounding(std::string_view text) {
  if (text == "nearest_even") return Rounding::kNearestEven;
  if (text == "nearest_away") return Rounding::kNearestAway;
  if (text == "stochastic") return Rounding::kStochastic;
  return absl::InvalidArgumentError(
      absl::StrCat("invalid rounding \"", std::string(text),
                   "\" (expected nearest_even, nearest_away or stochastic)"));
}

std::string_view RoundingName(Rounding rounding) {
  switch (rounding) {
    case Rounding::kNearestEven:
      return "nearest_even";
    case Rounding::kNearestAway:
      return "nearest_away";
    case Rounding::kStochastic:
      return "stochastic";
  }
  return "nearest_even";
}

// ---------------------------------------------------------------------------------------------
// Builders.

int FixedFractionalBits(const NumberFormat& format, float max_abs, bool ristretto_activations) {
  const bool is_signed = format.kind != FormatKind::kUfixed;
  const int bits = std::clamp(format.bits, is_signed ? 2 : 1, kMaxBits);
  int fl;
  if (format.fractional_bits) {
    fl = *format.fractional_bits;
  } else {
    const float m = std::fabs(max_abs);
    if (!(m > 0)) {  // zero (or NaN)
      fl = is_signed ? bits - 1 : bits;
    } else if (std::isinf(m)) {
      fl = MinFractionalBits(bits);
    } else {
      int e;
      const float f = std::frexp(m, &e);  // m = f * 2^e, f in [0.5, 1)
      const int ceil_log2 = f == 0.5f ? e - 1 : e;
      const int il = ceil_log2 + (is_signed && !ristretto_activations ? 1 : 0);
      fl = bits - il;
    }
  }
  return std::clamp(fl, MinFractionalBits(bits), kMaxFractionalBits);
}

Quantizer MakeFixedQuantizer(const NumberFormat& format, float max_abs, Rounding rounding,
                             bool ristretto_activations) {
  Quantizer q;
  q.format = format;
  q.rounding = rounding;
  q.fractional_bits = FixedFractionalBits(format, max_abs, ristretto_activations);
  return q;
}

Quantizer MakeMinifloatQuantizer(const NumberFormat& format, Rounding rounding) {
  Quantizer q;
  q.format = format;
  q.rounding = rounding;
  return q;
}

Quantizer MakePow2Quantizer(const NumberFormat& format, float max_abs) {
  Quantizer q;
  q.format = format;
  const float m = std::fabs(max_abs);
  if (!(m > 0)) {
    q.max_exponent = 0;
  } else if (std::isinf(m)) {
    q.max_exponent = 127;
  } else {
    q.max_exponent = std::clamp(Pow2Exponent(m), -149, 127);
  }
  return q;
}

Quantizer MakeIntQuantizer(const NumberFormat& format, const std::vector<float>& lo,
                           const std::vector<float>& hi, Rounding rounding) {
  Quantizer q;
  q.format = format;
  q.rounding = rounding;
  auto clean = [](float v) { return std::isnan(v) ? 0.0f : v; };
  std::vector<float> l, h;
  const size_t n = std::max<size_t>({lo.size(), hi.size(), 1});
  for (size_t c = 0; c < n; ++c) {
    l.push_back(c < lo.size() ? clean(lo[c]) : 0.0f);
    h.push_back(c < hi.size() ? clean(hi[c]) : 0.0f);
  }
  if (!format.per_channel && n > 1) {  // one range for the tensor: the union
    l = {*std::min_element(l.begin(), l.end())};
    h = {*std::max_element(h.begin(), h.end())};
  }
  int64_t qmin, qmax;
  IntLimits(format, &qmin, &qmax);
  for (size_t c = 0; c < l.size(); ++c) {
    if (format.symmetric) {
      const double t = std::min<double>(std::max(std::fabs(l[c]), std::fabs(h[c])), FLT_MAX);
      q.scale.push_back(CapScale(SanitizeScale(t / static_cast<double>(qmax)), qmax));
      q.zero_point.push_back(0);
    } else {
      const double a = std::max<double>(std::min(l[c], 0.0f), -FLT_MAX);
      const double b = std::min<double>(std::max(h[c], 0.0f), FLT_MAX);
      // Capped for any zero point: |q - zp| <= qmax - qmin.
      const float s = CapScale(SanitizeScale((b - a) / static_cast<double>(qmax - qmin)),
                               qmax - qmin);
      const double zp = std::clamp(std::nearbyint(-a / s), double(qmin), double(qmax));
      q.scale.push_back(s);
      q.zero_point.push_back(static_cast<int32_t>(zp));
    }
  }
  return q;
}

// ---------------------------------------------------------------------------------------------
// Quantization.

void QuantizeInPlace(const Quantizer& q, float* data, int64_t count, int64_t offset) {
  if (count <= 0 || data == nullptr) return;
  switch (q.format.kind) {
    case FormatKind::kFp32:
      return;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
      return QuantizeFixed(q, data, count, offset);
    case FormatKind::kMinifloat:
      return QuantizeMinifloat(q, data, count, offset);
    case FormatKind::kPow2: {
      const Pow2Plan p = PlanPow2(q);
      ForBlocks(count, [&](int64_t b, int64_t e) { Pow2Kernel(data, b, e, p); });
      return;
    }
    case FormatKind::kInt:
      return QuantizeInt(q, data, count, offset);
  }
}

IntGrid IntGridOf(const Quantizer& q, size_t channel) {
  const IntChannel ch = PlanIntChannel(q, channel);
  return {static_cast<float>(ch.scale), IntInverse(ch.scale), ch.lo, ch.hi};
}

float MaxMagnitude(const Quantizer& q) {
  switch (q.format.kind) {
    case FormatKind::kFp32:
      return FLT_MAX;
    case FormatKind::kFixed:
    case FormatKind::kUfixed: {
      const FixedPlan p = PlanFixed(q);
      return static_cast<float>(std::max(p.hi, -p.lo) * std::ldexp(1.0, -p.fl));
    }
    case FormatKind::kMinifloat:
      return BitCast<float>(PlanMinifloat(q.format).max_bits);
    case FormatKind::kPow2:
      return std::ldexp(1.0f, PlanPow2(q).e_max);
    case FormatKind::kInt: {
      float m = 0;
      const size_t n = q.format.per_channel ? q.scale.size() : std::min<size_t>(1, q.scale.size());
      for (size_t c = 0; c < n; ++c) {
        const IntChannel ch = PlanIntChannel(q, c);
        m = std::max(m, static_cast<float>(std::max(ch.hi, -ch.lo) * ch.scale));
      }
      return m;
    }
  }
  return FLT_MAX;
}

}  // namespace bitsweep::quant
