// Scalar reference for the number formats (quant_reference.h). Enumerate, sort, search.
#include "tests/reference/quant_reference.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace bitsweep::reference {

using quant::FormatKind;
using quant::Quantizer;
using quant::Rounding;

namespace {

constexpr int64_t kMaxCodes = int64_t{1} << 22;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "quant_reference: %s\n", what);
  std::abort();
}

void CheckSize(int64_t codes) {
  if (codes > kMaxCodes) Fail("format too wide to enumerate (more than 2^22 codes)");
}

}  // namespace

ReferenceQuantizer::ReferenceQuantizer(const Quantizer& q, int64_t channel) : q_(q) {
  const quant::NumberFormat& f = q.format;
  switch (f.kind) {
    case FormatKind::kFp32:
      Fail("fp32 has no grid");
    case FormatKind::kFixed:
    case FormatKind::kUfixed: {
      const bool is_signed = f.kind == FormatKind::kFixed;
      CheckSize(int64_t{1} << std::min(f.bits, 40));
      const int64_t k_min = is_signed ? -(int64_t{1} << (f.bits - 1)) : 0;
      const int64_t k_max =
          is_signed ? (int64_t{1} << (f.bits - 1)) - 1 : (int64_t{1} << f.bits) - 1;
      for (int64_t k = k_min; k <= k_max; ++k) {
        const long double v = std::ldexp(static_cast<long double>(k), -q.fractional_bits);
        points_.push_back({v, k, static_cast<float>(v)});
      }
      break;
    }
    case FormatKind::kMinifloat: {
      sign_magnitude_ = true;
      const int e_bits = f.exponent_bits, m_bits = f.mantissa_bits;
      CheckSize(int64_t{1} << std::min(e_bits + m_bits, 40));
      const int bias = (1 << (e_bits - 1)) - 1;
      for (int64_t field = 0; field < (int64_t{1} << e_bits); ++field) {
        for (int64_t m = 0; m < (int64_t{1} << m_bits); ++m) {
          long double v;
          if (field == 0) {
            if (!f.denormals && m != 0) continue;  // no denormals: field 0 is zero only
            v = std::ldexp(static_cast<long double>(m), 1 - bias - m_bits);
          } else {
            v = std::ldexp(static_cast<long double>((int64_t{1} << m_bits) + m),
                           static_cast<int>(field) - bias - m_bits);
          }
          if (v > static_cast<long double>(FLT_MAX)) continue;            // beyond float
          if (static_cast<long double>(static_cast<float>(v)) != v) continue;  // not a float
          points_.push_back({v, (field << m_bits) | m, static_cast<float>(v)});
        }
      }
      break;
    }
    case FormatKind::kPow2: {
      sign_magnitude_ = true;
      pow2_e_max_ = q.max_exponent;
      const int64_t window = (int64_t{1} << (f.bits - 1)) - 1;  // codes 1..window
      const int64_t e_min = pow2_e_max_ - window + 1;
      pow2_e_min_ = static_cast<int>(std::max<int64_t>(e_min, -1000));
      points_.push_back({0.0L, 0, 0.0f});
      // Codes whose exponent is below -149 are skipped: no float is that small (none rounds
      // there), and pow2:32 has 2^31 - 1 codes.
      for (int64_t code = std::max<int64_t>(1, -149 - e_min + 1); code <= window; ++code) {
        const int64_t e = e_min + code - 1;
        const long double v = std::ldexp(1.0L, static_cast<int>(e));
        points_.push_back({v, code, static_cast<float>(v)});
      }
      break;
    }
    case FormatKind::kInt: {
      CheckSize(int64_t{1} << std::min(f.bits, 40));
      if (channel < 0 || channel >= static_cast<int64_t>(q.scale.size())) Fail("bad channel");
      const int64_t q_max =
          f.symmetric ? (int64_t{1} << (f.bits - 1)) - 1 : (int64_t{1} << f.bits) - 1;
      const int64_t q_min = f.symmetric ? -q_max : 0;
      const int64_t zp = q.zero_point.at(channel);
      const float s = q.scale[channel];
      // Grid points are the integers n themselves: q rounds y = fl(x * fl(1 / s)) (Position).
      int_inverse_ = 1.0f / s;
      for (int64_t k = q_min; k <= q_max; ++k) {
        const int64_t n = k - zp;
        const float out = static_cast<float>(static_cast<double>(n) * static_cast<double>(s));
        points_.push_back({static_cast<long double>(n), n, out});
      }
      break;
    }
  }
  std::sort(points_.begin(), points_.end(),
            [](const Point& a, const Point& b) { return a.value < b.value; });
}

size_t ReferenceQuantizer::Upper(long double a) const {
  return std::lower_bound(points_.begin(), points_.end(), a,
                          [](const Point& p, long double v) { return p.value < v; }) -
         points_.begin();
}

float ReferenceQuantizer::Pow2(float x) const {
  const long double a = std::fabs(static_cast<long double>(x));
  if (a == 0) return x;
  int e = pow2_e_max_;
  if (!std::isinf(a)) {
    const long double t = std::floor(std::log2(a) + 0.5L);  // ties up
    if (t < pow2_e_min_) return std::copysign(0.0f, x);
    e = std::min(static_cast<int>(t), pow2_e_max_);
  }
  return std::copysign(std::ldexp(1.0f, e), x);
}

long double ReferenceQuantizer::Position(float x) const {
  if (q_.format.kind == FormatKind::kInt) {
    // PyTorch's fake quantization: the float product with the float reciprocal, nothing exact.
    volatile float y = x * int_inverse_;  // one float rounding, as written
    return y;
  }
  return sign_magnitude_ ? std::fabs(static_cast<long double>(x)) : x;
}

float ReferenceQuantizer::Quantize(float x) const {
  if (std::isnan(x)) return x;
  if (q_.rounding == Rounding::kStochastic) Fail("stochastic rounding has no single reference");
  if (q_.format.kind == FormatKind::kPow2) return Pow2(x);
  const long double a = Position(x);
  const Point* pick;
  if (a <= points_.front().value) {
    pick = &points_.front();
  } else if (a >= points_.back().value) {
    pick = &points_.back();
  } else {
    const size_t i = Upper(a);
    const Point& hi = points_[i];
    const Point& lo = points_[i - 1];
    const long double twice = 2 * a, sum = lo.value + hi.value;  // both exact
    if (hi.value == a || twice > sum) {
      pick = &hi;
    } else if (twice < sum) {
      pick = &lo;
    } else if (q_.format.kind == FormatKind::kMinifloat && !q_.format.denormals &&
               lo.value == 0) {
      pick = &hi;  // flush-to-zero: exactly half the smallest normal rounds up
    } else if (q_.rounding == Rounding::kNearestAway) {
      pick = std::fabs(hi.value) > std::fabs(lo.value) ? &hi : &lo;
    } else {
      pick = (hi.code % 2 == 0) ? &hi : &lo;
    }
  }
  return sign_magnitude_ ? std::copysign(pick->out, x) : pick->out;
}

std::pair<float, float> ReferenceQuantizer::Neighbors(float x) const {
  if (std::isnan(x)) return {x, x};
  const long double a = Position(x);
  float lo, hi;
  if (a <= points_.front().value) {
    lo = hi = points_.front().out;
  } else if (a >= points_.back().value) {
    lo = hi = points_.back().out;
  } else {
    const size_t i = Upper(a);
    hi = points_[i].out;
    lo = points_[i].value == a ? hi : points_[i - 1].out;
  }
  if (sign_magnitude_ && std::signbit(x)) return {-hi, -lo};
  return {lo, hi};
}

std::vector<float> ReferenceQuantizer::Values() const {
  std::vector<float> out;
  for (const Point& p : points_) {
    out.push_back(p.out);
    if (sign_magnitude_ && p.value != 0) out.push_back(-p.out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

float ReferenceQuantize(const Quantizer& q, float x, int64_t channel) {
  return ReferenceQuantizer(q, channel).Quantize(x);
}

std::vector<float> RepresentableValues(const Quantizer& q, int64_t channel) {
  return ReferenceQuantizer(q, channel).Values();
}

}  // namespace bitsweep::reference
