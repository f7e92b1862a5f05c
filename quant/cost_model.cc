// Size, BOPs and energy model. The rules, their justification and worked examples are in
// docs/COST_MODEL.md; keep the two in step.
#include "quant/cost_model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace bitsweep::quant {
namespace {

// ---------------------------------------------------------------------------------------------
// Widths and format classes.

// Storage width of one value: fp32 -> 32, minifloat -> 1 + E + M, everything else -> bits.
int Width(const NumberFormat& f) {
  switch (f.kind) {
    case FormatKind::kFp32:
      return 32;
    case FormatKind::kMinifloat:
      return 1 + f.exponent_bits + f.mantissa_bits;
    case FormatKind::kFixed:
    case FormatKind::kUfixed:
    case FormatKind::kPow2:
    case FormatKind::kInt:
      return f.bits;
  }
  return f.bits;
}

bool IsFp32(const NumberFormat& f) { return f.kind == FormatKind::kFp32; }
bool IsMinifloat(const NumberFormat& f) { return f.kind == FormatKind::kMinifloat; }
bool IsPow2(const NumberFormat& f) { return f.kind == FormatKind::kPow2; }

// Minifloat view of an operand for the minifloat multiplier rule: an integer-like operand of
// width b is a mantissa of b - 1 bits (plus its sign) with no exponent.
int MantissaBits(const NumberFormat& f) {
  return IsMinifloat(f) ? f.mantissa_bits : Width(f) - 1;
}
int ExponentBits(const NumberFormat& f) { return IsMinifloat(f) ? f.exponent_bits : 0; }

// ceil(log2(n)) for n >= 1 (0 for n <= 1).
int CeilLog2(int64_t n) {
  int k = 0;
  while (k < 63 && (int64_t{1} << k) < n) ++k;
  return k;
}

// ---------------------------------------------------------------------------------------------
// Scaling rules.

// Integer adder of width b: linear in b through (8, int8_add_pj) and (32, int32_add_pj),
// clamped at 0 (a profile with a steep slope could otherwise go negative at tiny widths).
double IntAddPj(const HardwareProfile& hw, int b) {
  const double slope = (hw.int32_add_pj - hw.int8_add_pj) / 24.0;
  return std::max(0.0, hw.int8_add_pj + (b - 8) * slope);
}

// Integer multiplier of x by y bits: affine in the product x*y through (64, int8_mult_pj) and
// (1024, int32_mult_pj), clamped at 0.
double IntMultPj(const HardwareProfile& hw, int x, int y) {
  const double slope = (hw.int32_mult_pj - hw.int8_mult_pj) / (1024.0 - 64.0);
  return std::max(0.0, hw.int8_mult_pj + (static_cast<double>(x) * y - 64.0) * slope);
}

// Energy of one multiply by the weight and input formats.
double MultPj(const HardwareProfile& hw, const NumberFormat& w, const NumberFormat& a) {
  if (IsFp32(w) || IsFp32(a)) return hw.fp32_mult_pj;
  if (IsPow2(w) || IsPow2(a)) {
    if (IsPow2(w) && IsPow2(a)) {
      // Two exponent codes of b-1 bits add: an adder of max(b_w, b_a) bits (one carry bit).
      return IntAddPj(hw, std::max(Width(w), Width(a)));
    }
    const NumberFormat& p = IsPow2(w) ? w : a;
    const NumberFormat& other = IsPow2(w) ? a : w;
    if (IsMinifloat(other)) {
      // Scaling a float by 2^e adds e to its exponent: max(E, b_pow2 - 1) + 1 bit adder.
      return IntAddPj(hw, std::max(other.exponent_bits, Width(p) - 1) + 1);
    }
    // A shift of the integer operand, priced as an adder of that operand's width.
    return IntAddPj(hw, Width(other));
  }
  if (IsMinifloat(w) || IsMinifloat(a)) {
    // Mantissa product (implicit leading ones included) plus an exponent add.
    return IntMultPj(hw, MantissaBits(w) + 1, MantissaBits(a) + 1) +
           IntAddPj(hw, std::max(ExponentBits(w), ExponentBits(a)) + 1);
  }
  return IntMultPj(hw, Width(w), Width(a));
}

// Energy of one accumulate.
double AddPj(const HardwareProfile& hw, const NumberFormat& w, const NumberFormat& a,
             int64_t fan_in) {
  if (IsFp32(w) || IsFp32(a)) return hw.fp32_add_pj;
  if (IsMinifloat(w) || IsMinifloat(a)) {
    return std::max(Width(w), Width(a)) <= 16 ? hw.fp16_add_pj : hw.fp32_add_pj;
  }
  const int b_acc = std::min(32, Width(w) + Width(a) + CeilLog2(fan_in));
  return IntAddPj(hw, b_acc);
}

double Read32Pj(const HardwareProfile& hw, const std::string& memory) {
  return memory == "sram" ? hw.sram_read_32bit_pj : hw.dram_read_32bit_pj;
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void Accumulate(const LayerCost& layer, LayerCost* total) {
  total->macs += layer.macs;
  total->weight_bits += layer.weight_bits;
  total->activation_bits += layer.activation_bits;
  total->bops += layer.bops;
  total->mult_pj += layer.mult_pj;
  total->add_pj += layer.add_pj;
  total->weight_fetch_pj += layer.weight_fetch_pj;
  total->activation_pj += layer.activation_pj;
  total->energy_pj += layer.energy_pj;
}

// ---------------------------------------------------------------------------------------------
// Profile files.

// Keys a profile file may carry for its readers; their values are not interpreted.
constexpr const char* kDocumentationKeys[] = {"notes", "scaling", "source"};

struct EnergyField {
  const char* key;
  double HardwareProfile::*member;
};
constexpr EnergyField kEnergyFields[] = {
    {"int8_add_pj", &HardwareProfile::int8_add_pj},
    {"int32_add_pj", &HardwareProfile::int32_add_pj},
    {"int8_mult_pj", &HardwareProfile::int8_mult_pj},
    {"int32_mult_pj", &HardwareProfile::int32_mult_pj},
    {"fp16_add_pj", &HardwareProfile::fp16_add_pj},
    {"fp32_add_pj", &HardwareProfile::fp32_add_pj},
    {"fp16_mult_pj", &HardwareProfile::fp16_mult_pj},
    {"fp32_mult_pj", &HardwareProfile::fp32_mult_pj},
    {"sram_read_32bit_pj", &HardwareProfile::sram_read_32bit_pj},
    {"dram_read_32bit_pj", &HardwareProfile::dram_read_32bit_pj},
};

std::string KnownKeys() {
  std::vector<std::string> keys = {"name"};
  for (const EnergyField& f : kEnergyFields) keys.push_back(f.key);
  keys.push_back("weight_memory");
  keys.push_back("activation_memory");
  for (const char* k : kDocumentationKeys) keys.push_back(k);
  return absl::StrJoin(keys, ", ");
}

// `source` names the profile in errors: "'my.json'" for a file, "(settings)" for a sweep's text.
absl::Status KeyError(const std::string& source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("hardware profile ", source, ": key '", key, "' ", what));
}

}  // namespace

HardwareProfile DefaultHardwareProfile() { return HardwareProfile{}; }

absl::StatusOr<HardwareProfile> LoadHardwareProfile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("hardware profile '", path, "' not found"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("hardware profile '", path, "' is a directory, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot open hardware profile '", path, "'"));
  }
  std::stringstream text;
  text << in.rdbuf();
  // A file that does not name itself is named after its file, so results never claim the
  // default profile's name for numbers that are not the default's.
  return ParseHardwareProfile(text.str(), absl::StrCat("'", path, "'"),
                              std::filesystem::path(path).stem().string());
}

absl::StatusOr<HardwareProfile> ParseHardwareProfile(const std::string& json,
                                                     const std::string& source,
                                                     const std::string& default_name) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("hardware profile ", source, " is not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hardware profile ", source, " must be a JSON object"));
  }

  HardwareProfile hw = DefaultHardwareProfile();
  hw.name = default_name;
  for (const auto& [key, value] : doc.items()) {
    if (key == "name") {
      if (!value.is_string()) return KeyError(source, key, "must be a string");
      hw.name = value.get<std::string>();
      if (hw.name.empty()) return KeyError(source, key, "must not be empty");
      continue;
    }
    if (key == "weight_memory" || key == "activation_memory") {
      if (!value.is_string()) return KeyError(source, key, "must be the string \"dram\" or \"sram\"");
      const std::string memory = value.get<std::string>();
      if (memory != "dram" && memory != "sram") {
        return KeyError(source, key, absl::StrCat("is \"", memory, "\"; expected \"dram\" or \"sram\""));
      }
      (key == "weight_memory" ? hw.weight_memory : hw.activation_memory) = memory;
      continue;
    }
    if (std::find(std::begin(kDocumentationKeys), std::end(kDocumentationKeys), key) !=
        std::end(kDocumentationKeys)) {
      continue;
    }
    const EnergyField* field = nullptr;
    for (const EnergyField& f : kEnergyFields) {
      if (key == f.key) field = &f;
    }
    if (field == nullptr) {
      return KeyError(source, key, absl::StrCat("is unknown (known keys: ", KnownKeys(), ")"));
    }
    if (!value.is_number()) return KeyError(source, key, "must be a number (pJ)");
    const double pj = value.get<double>();
    if (!(pj >= 0.0)) return KeyError(source, key, absl::StrCat("must be >= 0 pJ, got ", pj));
    hw.*(field->member) = pj;
  }
  return hw;
}

absl::StatusOr<HardwareProfile> SettingsHardwareProfile(const std::string& json) {
  if (json.empty()) return DefaultHardwareProfile();
  absl::StatusOr<HardwareProfile> profile = ParseHardwareProfile(json, "(settings)", "settings");
  if (!profile.ok()) {
    return absl::Status(profile.status().code(),
                        absl::StrCat("settings.hardware_profile_json: ", profile.status().message()));
  }
  return profile;
}

int64_t WeightParameterBits(const NumberFormat& weights, int64_t output_channels) {
  if (weights.kind != FormatKind::kInt) return 0;
  const int64_t groups = weights.per_channel ? std::max<int64_t>(1, output_channels) : 1;
  return groups * (kScaleBits + (weights.symmetric ? 0 : weights.bits));
}

CostReport EstimateCost(const std::vector<LayerInfo>& layers,
                        const std::vector<LayerFormats>& formats, const HardwareProfile& profile) {
  CostReport report;
  report.profile_name = profile.name;
  report.total.name = "total";
  const double weight_bit_pj = Read32Pj(profile, profile.weight_memory) / 32.0;
  const double activation_bit_pj = Read32Pj(profile, profile.activation_memory) / 32.0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerInfo& l = layers[i];
    // A layer without an entry in `formats` is costed in fp32 (LayerFormats' defaults).
    const LayerFormats f = i < formats.size() ? formats[i] : LayerFormats{};
    const int b_w = Width(f.weights), b_a = Width(f.inputs), b_out = Width(f.outputs);

    LayerCost c;
    c.name = l.name;
    c.macs = l.macs;
    c.weight_bits = l.weight_count * b_w + l.bias_count * 32 +
                    WeightParameterBits(f.weights, l.output_channels);
    c.activation_bits = Product(l.input_shape) * b_a + Product(l.output_shape) * b_out;
    c.bops = l.macs * b_w * b_a;
    c.mult_pj = static_cast<double>(l.macs) * MultPj(profile, f.weights, f.inputs);
    c.add_pj = static_cast<double>(l.macs) * AddPj(profile, f.weights, f.inputs, l.fan_in);
    c.weight_fetch_pj = static_cast<double>(c.weight_bits) * weight_bit_pj;
    c.activation_pj = static_cast<double>(c.activation_bits) * activation_bit_pj;
    c.energy_pj = c.mult_pj + c.add_pj + c.weight_fetch_pj + c.activation_pj;

    report.peak_activation_bits = std::max(report.peak_activation_bits, c.activation_bits);
    Accumulate(c, &report.total);
    report.layers.push_back(std::move(c));
  }
  return report;
}

}  // namespace bitsweep::quant
