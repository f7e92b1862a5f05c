// Size, BOPs and energy of one inference under a quantization plan, from a hardware profile
// (docs/COST_MODEL.md works every formula by hand).
//
//   ASSIGN_OR_RETURN(HardwareProfile hw, LoadHardwareProfile("my_process.json"));  // or Default
//   CostReport r = EstimateCost(network->layers(), formats, hw);
//   printf("%.1f pJ, %lld weight bits\n", r.total.energy_pj, r.total.weight_bits);
//
// Per layer: MACs x (E_mult(b_w, b_a) + E_add(b_acc)) + weight bits x E_weight_bit + activation
// bits x E_activation_bit, with b_acc = min(32, b_w + b_a + ceil(log2 fan_in)) for integer-like
// formats and the profile's scaling rules for the rest. BOPs = sum MACs * b_w * b_a.
#ifndef BITSWEEP_QUANT_COST_MODEL_H_
#define BITSWEEP_QUANT_COST_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/layer_info.h"
#include "quant/format.h"

namespace bitsweep::quant {

// Energy constants (pJ) and scaling rules; defaults: Horowitz, ISSCC 2014, 45 nm.
struct HardwareProfile {
  std::string name = "horowitz-isscc2014-45nm";
  double int8_add_pj = 0.03, int32_add_pj = 0.1;    // adders scale linearly in width between
  double int8_mult_pj = 0.2, int32_mult_pj = 3.1;   // integer multipliers scale with b_w * b_a
  double fp16_add_pj = 0.4, fp32_add_pj = 0.9;
  double fp16_mult_pj = 1.1, fp32_mult_pj = 3.7;
  double sram_read_32bit_pj = 5.0;    // 8 KB SRAM
  double dram_read_32bit_pj = 640.0;
  std::string weight_memory = "dram";      // where weights are fetched from: dram | sram
  std::string activation_memory = "sram";  // where activations are read and written: dram | sram
};

HardwareProfile DefaultHardwareProfile();
// JSON file with any subset of the fields above (unknown keys are errors naming the key).
absl::StatusOr<HardwareProfile> LoadHardwareProfile(const std::string& path);
// The same from JSON text (a sweep's settings.hardware_profile_json): `source` names it in errors
// ("hardware profile SOURCE: key 'x' ..."); a profile without "name" is called `default_name`.
absl::StatusOr<HardwareProfile> ParseHardwareProfile(const std::string& json,
                                                     const std::string& source,
                                                     const std::string& default_name);
// A sweep's settings.hardware_profile_json (empty: the default profile), as the planner and the
// worker read it; errors start with "settings.hardware_profile_json: ".
absl::StatusOr<HardwareProfile> SettingsHardwareProfile(const std::string& json);

// The formats one layer uses.
struct LayerFormats {
  NumberFormat weights, inputs, outputs;
};

struct LayerCost {
  std::string name;
  int64_t macs = 0;
  int64_t weight_bits = 0;      // weights at their format's width, + biases at 32 bits, + an
                                // int format's scales and zero points (WeightParameterBits)
  int64_t activation_bits = 0;  // input read + output written, at their formats' widths
  int64_t bops = 0;             // macs * b_w * b_a
  double mult_pj = 0, add_pj = 0, weight_fetch_pj = 0, activation_pj = 0;
  double energy_pj = 0;         // the sum of the four above
};

struct CostReport {
  std::vector<LayerCost> layers;
  LayerCost total;                     // sums (name "total")
  int64_t peak_activation_bits = 0;    // max over layers of input + output bits
  std::string profile_name;
};

// Bits stored with an int format's weights besides the codes: per scale group (the layer, or each
// of its output channels with :channel) a 32-bit float scale and, when asymmetric, a B-bit zero
// point. Fetched with the weights, so part of LayerCost.weight_bits. Other formats store none
// (fixed point's and pow2's one exponent per layer is a shift fixed in the datapath).
inline constexpr int64_t kScaleBits = 32;
int64_t WeightParameterBits(const NumberFormat& weights, int64_t output_channels);

// `formats` is parallel to `layers`.
CostReport EstimateCost(const std::vector<LayerInfo>& layers,
                        const std::vector<LayerFormats>& formats, const HardwareProfile& profile);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_COST_MODEL_H_
