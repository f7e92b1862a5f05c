// Trial configuration: which number format each quantizable layer uses for its weights, inputs and
// outputs, how to round, how to calibrate; its JSON form, canonical serialization and hash.
//
// JSON (every key optional; unknown keys are errors):
//   {"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"},
//    "conv": {...}, "fc": {"weights": "fixed:4"},           // Ristretto's layer classes
//    "layers": {"conv1": {"weights": "pow2:4"}},             // single layers by ONNX node name
//    "rounding": "nearest_even",                             // | nearest_away | stochastic
//    "seed": 0,                                              // stochastic rounding
//    "calibration": {"method": "max", "percentile": 99.99},  // | percentile | mse | entropy
//    "ristretto_activations": false}                         // IL = ceil(log2 max) for activations
// Precedence per role: layers > class > default; a role no selector sets stays fp32.
//
//   ASSIGN_OR_RETURN(QuantConfig c, ParseQuantConfig(text));
//   std::string key = ConfigHash(c);   // same meaning -> same hash
//   ASSIGN_OR_RETURN(std::vector<LayerFormats> f, ResolveFormats(c, network->layers()));
#ifndef BITSWEEP_QUANT_CONFIG_H_
#define BITSWEEP_QUANT_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/layer_info.h"
#include "quant/calibrators.h"
#include "quant/cost_model.h"
#include "quant/format.h"

namespace bitsweep::quant {

struct RoleFormats {
  std::optional<NumberFormat> weights, inputs, outputs;
  bool empty() const { return !weights && !inputs && !outputs; }
};

struct QuantConfig {
  RoleFormats default_formats;
  RoleFormats conv;
  RoleFormats fc;
  std::map<std::string, RoleFormats> layers;
  Rounding rounding = Rounding::kNearestEven;
  uint64_t seed = 0;
  CalibrationOptions calibration;
  bool ristretto_activations = false;
};

// Errors name the JSON path and the value ("layers.conv1.weights: unknown format 'fixd:8'").
absl::StatusOr<QuantConfig> ParseQuantConfig(const std::string& json_text);
absl::StatusOr<QuantConfig> ReadQuantConfigFile(const std::string& path);

// Keys sorted, format strings canonical, unset roles and empty selectors omitted, every scalar
// setting written out: the same bytes for the same meaning.
std::string CanonicalJson(const QuantConfig& config);
// Lower-case hex SHA-256 of CanonicalJson.
std::string ConfigHash(const QuantConfig& config);

// The formats of every layer (parallel to `layers`). Errors name the layer and role: a layer
// selector naming no quantizable layer, pow2 on activations, per-channel int on activations.
absl::StatusOr<std::vector<LayerFormats>> ResolveFormats(const QuantConfig& config,
                                                         const std::vector<LayerInfo>& layers);

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_CONFIG_H_
