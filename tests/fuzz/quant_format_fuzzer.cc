// Fuzzes the number-format parser and the quantizers behind it (quant/format.h),
// differentially against the scalar reference of tests/reference/quant_reference.h.
//
// Input: a format string, then (after a '\n') a settings byte, two floats and up to 256 float
// values (little-endian). Settings: bits 0-1 rounding (0 nearest_even, 1 nearest_away,
// 2 stochastic), bit 2 Ristretto-compatible activations, bits 4-5 channels - 1 (per-channel int).
// The first float is the calibrated max|x| (fixed, pow2) or the low end of the range (int), the
// second the high end (int).
// Properties: a parse error has a message; FormatToString parses back to the same format;
// QuantizeInPlace matches the reference bit for bit under nearest rounding (stochastic: one of
// the two neighbours), for formats of at most 12 bits; finite inputs give finite outputs no larger
// in magnitude than MaxMagnitude.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/reference/quant_reference.h"
#include "quant/format.h"

namespace bitsweep::quant {
namespace {

bool SameBits(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// The format's code count is small enough for the reference's enumeration to be quick.
bool ReferenceAffordable(const NumberFormat& f) { return f.bits <= 12; }

}  // namespace
}  // namespace bitsweep::quant

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep::quant;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string_view text = input.substr(0, newline);
  absl::StatusOr<NumberFormat> format = ParseFormat(text);
  if (!format.ok()) {
    FUZZ_CHECK(!format.status().message().empty());
    return 0;
  }
  const std::string canonical = FormatToString(*format);
  absl::StatusOr<NumberFormat> again = ParseFormat(canonical);
  FUZZ_CHECK(again.ok() && *again == *format);
  if (newline == std::string_view::npos) return 0;

  std::string_view rest = input.substr(newline + 1);
  if (rest.empty()) return 0;
  const uint8_t settings = static_cast<uint8_t>(rest[0]);
  rest.remove_prefix(1);
  if (rest.size() < 3 * 4) return 0;
  std::vector<float> floats(std::min<size_t>(rest.size() / 4, 258));
  std::memcpy(floats.data(), rest.data(), floats.size() * 4);
  const float a = floats[0], b = floats[1];
  std::vector<float> values(floats.begin() + 2, floats.end());

  const Rounding rounding = (settings & 3) == 1   ? Rounding::kNearestAway
                            : (settings & 3) == 2 ? Rounding::kStochastic
                                                  : Rounding::kNearestEven;
  const int channels = format->per_channel ? 1 + ((settings >> 4) & 3) : 1;
  Quantizer q;
  switch (format->kind) {
    case FormatKind::kFp32:
      q.format = *format;
      break;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
      q = MakeFixedQuantizer(*format, a, rounding, (settings & 4) != 0);
      break;
    case FormatKind::kMinifloat:
      q = MakeMinifloatQuantizer(*format, rounding);
      break;
    case FormatKind::kPow2:
      q = MakePow2Quantizer(*format, a);
      break;
    case FormatKind::kInt: {
      std::vector<float> lo, hi;
      for (int c = 0; c < channels; ++c) {  // channel c: the range scaled by c + 1
        lo.push_back(a * static_cast<float>(c + 1));
        hi.push_back(b * static_cast<float>(c + 1));
      }
      q = MakeIntQuantizer(*format, lo, hi, rounding);
      break;
    }
  }
  q.seed = settings;
  // Per-channel data is [channels, count / channels]: keep whole channels.
  values.resize(values.size() / channels * channels);
  std::vector<float> out = values;
  QuantizeInPlace(q, out.data(), static_cast<int64_t>(out.size()));

  const float max_magnitude = MaxMagnitude(q);
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isfinite(values[i])) {
      FUZZ_CHECK(std::isfinite(out[i]));
      FUZZ_CHECK(std::fabs(out[i]) <= max_magnitude);
    }
  }
  if (format->kind == FormatKind::kFp32 || !ReferenceAffordable(*format)) return 0;
  const int64_t per_channel = static_cast<int64_t>(values.size()) / channels;
  for (int c = 0; c < channels; ++c) {
    Quantizer nearest = q;
    if (rounding == Rounding::kStochastic) nearest.rounding = Rounding::kNearestEven;
    const bitsweep::reference::ReferenceQuantizer ref(nearest, c);
    for (int64_t j = 0; j < per_channel; ++j) {
      const size_t i = static_cast<size_t>(c * per_channel + j);
      if (rounding != Rounding::kStochastic) {
        if (!SameBits(out[i], ref.Quantize(values[i]))) {
          std::fprintf(stderr, "%s: q(%a) = %a, reference %a\n", canonical.c_str(), values[i],
                       out[i], ref.Quantize(values[i]));
          FUZZ_CHECK(false);
        }
      } else if (!std::isnan(values[i])) {
        const auto [lo, hi] = ref.Neighbors(values[i]);
        FUZZ_CHECK(out[i] == lo || out[i] == hi);
      }
    }
  }
  return 0;
}
