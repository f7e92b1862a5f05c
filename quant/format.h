// Number formats and their quantizers: the math of bitsweep (README lists the formats;
// docs/QUANTIZATION.md says where each quantizer is applied).
//
// A NumberFormat is what a user asks for ("fixed:8", "minifloat:4:3", "int:8:asym:channel"); a
// Quantizer is a format with its calibrated parameters (FL, exponent window, scale and zero point)
// and a rounding mode: everything needed to compute q(x). QuantizeInPlace is the fast, vectorized
// (OpenMP) implementation the engine runs; tests compare it bit-exactly against the independent
// scalar reference in tests/reference/quant_reference.h.
//
//   ASSIGN_OR_RETURN(NumberFormat f, ParseFormat("fixed:8"));
//   Quantizer q = MakeFixedQuantizer(f, /*max_abs=*/3.2f, Rounding::kNearestEven);  // FL = 5
//   QuantizeInPlace(q, data.data(), data.size());
//
// Formats (B = total bits, 1..32 where the format allows):
//   fp32                      unquantized.
//   fixed:B[:FL]              q(x) = clamp(round(x*2^FL), -2^(B-1), 2^(B-1)-1) * 2^-FL   (B >= 2)
//   ufixed:B[:FL]             q(x) = clamp(round(x*2^FL), 0, 2^B-1) * 2^-FL              (B >= 1)
//                             FL may be negative or exceed B. Without FL, calibration picks it:
//                             signed IL = ceil(log2 max|x|) + 1, unsigned IL = ceil(log2 max|x|),
//                             FL = B - IL (Ristretto-compatible activations: signed IL without +1).
//   minifloat:E:M[:denormal]  sign, E exponent bits (bias 2^(E-1)-1), M mantissa bits (E >= 1,
//                             M >= 0, 1+E+M <= 32). Ristretto semantics: no Inf/NaN (the all-ones
//                             exponent is an ordinary exponent; overflow saturates to the largest
//                             magnitude), no denormals (magnitudes below the smallest normal flush
//                             to zero: below half of it round to 0, from half up round to the
//                             smallest normal under nearest rounding). ":denormal" adds IEEE-like
//                             denormals (exponent field 0 encodes m * 2^(1-bias-M)).
//   pow2:B                    weights only. Sign bit plus a (B-1)-bit exponent code; code 0 is
//                             zero, codes 1..2^(B-1)-1 are the exponents e_max-2^(B-1)+2 .. e_max,
//                             e_max = round(log2 max|w|) from calibration. q(w) = 0 for w == 0 or
//                             when log2|w| rounds (to nearest, ties up) below the window;
//                             otherwise sign(w) * 2^min(round(log2|w|), e_max). B >= 2.
//   int:B[:sym|asym][:tensor|channel]
//                             integer affine, default sym:tensor. sym: q in [-(2^(B-1)-1),
//                             2^(B-1)-1], zero point 0, scale = T / (2^(B-1)-1). asym: q in
//                             [0, 2^B-1], scale = (hi - lo) / (2^B-1) over [lo, hi] (extended to
//                             include 0), zero point = round(-lo/scale). q(x) = (clamp(round(
//                             fl(x * inv)) + zp, qmin, qmax) - zp) * s, inv = fl(1/s) in float
//                             arithmetic: PyTorch's fake quantization rule (bit-exact with
//                             torch.fake_quantize_per_tensor_affine), not the exact quotient x/s.
//                             channel: one scale per output channel (dimension 0 of a weight
//                             tensor); weights only. B >= 2.
// Rounding (fixed, ufixed, minifloat mantissa, int): nearest_even (default; oneDNN's
// eltwise_round), nearest_away (Ristretto's CPU), stochastic (floor(v + u), u ~ U[0,1) from a
// seeded counter-based generator, so a given seed always gives the same result).
#ifndef BITSWEEP_QUANT_FORMAT_H_
#define BITSWEEP_QUANT_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace bitsweep::quant {

enum class FormatKind { kFp32, kFixed, kUfixed, kMinifloat, kPow2, kInt };
enum class Rounding { kNearestEven, kNearestAway, kStochastic };

struct NumberFormat {
  FormatKind kind = FormatKind::kFp32;
  int bits = 32;                        // total storage bits (minifloat: 1 + E + M)
  std::optional<int> fractional_bits;   // fixed/ufixed: FL when given
  int exponent_bits = 0;                // minifloat E
  int mantissa_bits = 0;                // minifloat M
  bool denormals = false;               // minifloat ":denormal"
  bool symmetric = true;                // int
  bool per_channel = false;             // int ":channel"

  bool operator==(const NumberFormat&) const = default;
};

// Parses a format string (see above). Errors name the string and the problem: unknown format,
// bad or missing numbers, widths outside the format's range (fixed:0, minifloat:0:3, int:33).
absl::StatusOr<NumberFormat> ParseFormat(std::string_view text);
// Canonical text: ParseFormat(FormatToString(f)) == f, defaults written out
// ("int:8" -> "int:8:sym:tensor"; "fixed:8" stays "fixed:8"; "fixed:8:3" keeps FL).
std::string FormatToString(const NumberFormat& format);

absl::StatusOr<Rounding> ParseRounding(std::string_view text);  // nearest_even|nearest_away|stochastic
std::string_view RoundingName(Rounding rounding);

// A format with everything needed to compute q(x).
struct Quantizer {
  NumberFormat format;
  Rounding rounding = Rounding::kNearestEven;
  uint64_t seed = 0;              // stochastic rounding
  int fractional_bits = 0;        // fixed / ufixed
  int max_exponent = 0;           // pow2: e_max
  std::vector<float> scale;       // int: 1 (per tensor) or one per channel
  std::vector<int32_t> zero_point;  // int: same length as scale
};

// FL for fixed/ufixed from the calibrated max|x| (max_abs == 0 gives FL = B - 1 for signed, B for
// unsigned). ristretto_activations drops the +1 of the signed integer length.
int FixedFractionalBits(const NumberFormat& format, float max_abs, bool ristretto_activations);
// Builders. FL/e_max/scale come from the given statistics unless the format fixes them.
Quantizer MakeFixedQuantizer(const NumberFormat& format, float max_abs, Rounding rounding,
                             bool ristretto_activations = false);
Quantizer MakeMinifloatQuantizer(const NumberFormat& format, Rounding rounding);
Quantizer MakePow2Quantizer(const NumberFormat& format, float max_abs);
// lo/hi: one entry per channel for per-channel formats, else one entry (the clip range chosen by
// a calibrator; symmetric formats use max(|lo|, |hi|)).
Quantizer MakeIntQuantizer(const NumberFormat& format, const std::vector<float>& lo,
                           const std::vector<float>& hi, Rounding rounding);

// q(x) in place over `count` values. For per-channel quantizers the data is [channels, count /
// channels] row-major. `offset` is the index of data[0] within the whole tensor, so stochastic
// rounding draws the same u for the same element however the tensor is split across calls.
void QuantizeInPlace(const Quantizer& q, float* data, int64_t count, int64_t offset = 0);

// An int quantizer's grid for one channel (0 for per-tensor ones), as every int kernel uses it:
// q(x) = clamp(round(fl(x * inverse)), lo, hi) * scale, with inverse = fl(1 / scale) and
// [lo, hi] = [qmin - zp, qmax - zp]. For code outside format.cc that computes the same q
// (the engine's fused post-op chain, the int8 network, the ONNX export).
struct IntGrid {
  float scale = 1;    // sanitized: within [FLT_MIN, FLT_MAX]
  float inverse = 1;  // fl(1 / scale)
  double lo = 0, hi = 0;
};
IntGrid IntGridOf(const Quantizer& q, size_t channel);
// The reciprocal every int quantizer multiplies by, fl(1 / s) (PyTorch's inv_scale): code
// k = round_half_even(fl(x * IntInverse(s))). The int8 path and the QDQ export use it too.
inline float IntInverse(double scale) { return 1.0f / static_cast<float>(scale); }

// The largest finite magnitude a quantizer can output (fp32: FLT_MAX). Used by energy/size
// reports and by tests.
float MaxMagnitude(const Quantizer& q);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_FORMAT_H_
