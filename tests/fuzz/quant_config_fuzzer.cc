// Fuzzes the quantization config JSON parser (quant/config.h) and what a parsed
// config feeds: canonical JSON and hash, per-layer format resolution and the cost model. Properties:
// a parse error has a message; the canonical form parses back to the same canonical form and hash;
// costs of a resolved config are finite and non-negative.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/fuzz/fuzz_util.h"
#include "quant/layer_info.h"
#include "quant/config.h"
#include "quant/cost_model.h"

namespace bitsweep::quant {
namespace {

// LeNet-5's first conv and last fc layer, as the importer describes them.
std::vector<LayerInfo> Layers() {
  LayerInfo conv{.name = "conv1", .layer_class = LayerClass::kConv, .weight_shape = {6, 1, 5, 5},
                 .input_shape = {1, 1, 28, 28}, .output_shape = {1, 6, 24, 24},
                 .macs = 86400, .weight_count = 150, .bias_count = 6, .fan_in = 25};
  LayerInfo fc{.name = "fc3", .layer_class = LayerClass::kFc, .weight_shape = {84, 10},
               .input_shape = {1, 84}, .output_shape = {1, 10}, .macs = 840,
               .weight_count = 840, .bias_count = 10, .fan_in = 84};
  return {conv, fc};
}

void CheckCost(const LayerCost& c) {
  FUZZ_CHECK(c.weight_bits >= 0 && c.activation_bits >= 0 && c.bops >= 0);
  for (double pj : {c.mult_pj, c.add_pj, c.weight_fetch_pj, c.activation_pj, c.energy_pj}) {
    FUZZ_CHECK(std::isfinite(pj) && pj >= 0);
  }
}

}  // namespace
}  // namespace bitsweep::quant

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep::quant;
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<QuantConfig> config = ParseQuantConfig(text);
  if (!config.ok()) {
    FUZZ_CHECK(!config.status().message().empty());
    return 0;
  }
  const std::string canonical = CanonicalJson(*config);
  absl::StatusOr<QuantConfig> again = ParseQuantConfig(canonical);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(CanonicalJson(*again) == canonical);
  FUZZ_CHECK(ConfigHash(*again) == ConfigHash(*config));

  const std::vector<LayerInfo> layers = Layers();
  absl::StatusOr<std::vector<LayerFormats>> formats = ResolveFormats(*config, layers);
  if (!formats.ok()) {
    FUZZ_CHECK(!formats.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(formats->size() == layers.size());
  const CostReport report = EstimateCost(layers, *formats, DefaultHardwareProfile());
  for (const LayerCost& layer : report.layers) CheckCost(layer);
  CheckCost(report.total);
  return 0;
}
