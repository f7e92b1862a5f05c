// Scalar reference for the number formats of quant/format.h: the yardstick
// QuantizeInPlace is tested against (bit-exactly).
//
// Independent of the engine's kernels by construction: it enumerates every code of the format,
// turns each into its exact value (long double), sorts them, and answers q(x) by looking for the
// representable value nearest to x. No bit tricks, no magic constants, deliberately slow to build
// (one pass over all codes); lookups are a binary search. Use it for narrow formats only: a grid
// of more than 2^22 codes aborts (fixed:23+, int:23+, minifloat with E + M > 22).
//
//   quant::Quantizer q = MakeFixedQuantizer(f, 3.2f, Rounding::kNearestEven);
//   reference::ReferenceQuantizer ref(q);             // or ReferenceQuantize(q, x) for one value
//   float want = ref.Quantize(x);
//   std::vector<float> grid = ref.Values();          // every representable value, ascending
//
// The rules, stated on the grid:
//   * nearest value; a tie (x exactly halfway) goes, under nearest_even, to the value whose code
//     is even (fixed/ufixed: the integer k of k * 2^-FL; int: n of n * s;
//     minifloat: the code field<<M | mantissa, i.e. the even mantissa LSB, for M = 0 the even
//     exponent field), under nearest_away to the value of larger magnitude;
//   * x beyond the extreme values saturates to them (+-Inf included); NaN stays NaN;
//   * minifloat without ":denormal": the tie between 0 and the smallest normal goes to the smallest
//     normal (header rule); the all-ones exponent field is an ordinary exponent, and values a float
//     cannot hold (E = 8: 2^128 and up) are not part of the grid;
//   * pow2: not nearest-in-value but e = floor(log2|x| + 1/2) (log domain, ties up), 0 below the
//     window, 2^e_max above it;
//   * minifloat and pow2 are sign-magnitude: q(x) = sign(x) * q(|x|), so negative values that round
//     to zero give -0.0f; the other formats give +0.0f;
//   * int (PyTorch's fake quantization rule): the grid points are the integers n in
//     [qmin - zp, qmax - zp], and x is placed among them as y = fl(x * fl(1 / s)) in float
//     arithmetic (not the exact x / s); the nearest n to y (ties as above) gives the output
//     float(double(n) * double(s)).
// Stochastic rounding has no single answer: Neighbors(x) gives the two candidates.
#ifndef BITSWEEP_TESTS_REFERENCE_QUANT_REFERENCE_H_
#define BITSWEEP_TESTS_REFERENCE_QUANT_REFERENCE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "quant/format.h"

namespace bitsweep::reference {

class ReferenceQuantizer {
 public:
  // `channel` selects the scale/zero point of a per-channel int quantizer.
  explicit ReferenceQuantizer(const quant::Quantizer& q, int64_t channel = 0);

  // q(x) under the quantizer's (nearest) rounding mode; stochastic quantizers abort.
  float Quantize(float x) const;
  // The representable values bracketing x: lo <= x <= hi, equal when x is representable or
  // saturates. Sign-magnitude formats bracket |x| and apply the sign (so lo <= hi still holds).
  std::pair<float, float> Neighbors(float x) const;
  // Every representable value as a float, ascending, with one zero (+0).
  std::vector<float> Values() const;

 private:
  struct Point {
    long double value;  // exact
    int64_t code;       // parity decides nearest_even ties
    float out;          // what q returns for it
  };
  size_t Upper(long double a) const;  // index of the first point with value >= a (a in range)
  long double Position(float x) const;  // where x lies on the points' value axis
  float Pow2(float x) const;

  quant::Quantizer q_;
  bool sign_magnitude_ = false;  // minifloat, pow2: points hold magnitudes
  std::vector<Point> points_;    // ascending by value
  int pow2_e_min_ = 0, pow2_e_max_ = 0;
  float int_inverse_ = 1;  // int: fl(1 / s)
};

float ReferenceQuantize(const quant::Quantizer& q, float x, int64_t channel = 0);
std::vector<float> RepresentableValues(const quant::Quantizer& q, int64_t channel = 0);

}  // namespace bitsweep::reference

#endif  // BITSWEEP_TESTS_REFERENCE_QUANT_REFERENCE_H_
