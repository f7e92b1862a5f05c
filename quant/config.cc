#include "quant/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace bitsweep::quant {
namespace {

using Json = nlohmann::json;

absl::Status PathError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config ", path, ": ", what));
}

absl::Status CheckKeys(const Json& object, const std::string& path,
                       const std::vector<std::string>& allowed) {
  if (!object.is_object()) return PathError(path, "must be a JSON object");
  for (const auto& [key, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return PathError(path.empty() ? key : path + "." + key,
                       absl::StrCat("unknown key (expected one of: ", absl::StrJoin(allowed, ", "),
                                    ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RoleFormats> ParseRoles(const Json& object, const std::string& path) {
  RETURN_IF_ERROR(CheckKeys(object, path, {"weights", "inputs", "outputs"}));
  RoleFormats roles;
  for (auto [key, slot] : {std::pair{"weights", &roles.weights}, std::pair{"inputs", &roles.inputs},
                           std::pair{"outputs", &roles.outputs}}) {
    if (!object.contains(key)) continue;
    const Json& v = object.at(key);
    const std::string where = path + "." + key;
    if (!v.is_string()) return PathError(where, "must be a format string such as \"fixed:8\"");
    absl::StatusOr<NumberFormat> f = ParseFormat(v.get<std::string>());
    if (!f.ok()) return PathError(where, std::string(f.status().message()));
    *slot = *f;
  }
  return roles;
}

Json RolesToJson(const RoleFormats& roles) {
  Json j = Json::object();
  if (roles.weights) j["weights"] = FormatToString(*roles.weights);
  if (roles.inputs) j["inputs"] = FormatToString(*roles.inputs);
  if (roles.outputs) j["outputs"] = FormatToString(*roles.outputs);
  return j;
}

}  // namespace

absl::StatusOr<QuantConfig> ParseQuantConfig(const std::string& json_text) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    return absl::InvalidArgumentError(absl::StrCat("config is not valid JSON: ", e.what()));
  }
  RETURN_IF_ERROR(CheckKeys(root, "", {"default", "conv", "fc", "layers", "rounding", "seed",
                                       "calibration", "ristretto_activations"}));
  QuantConfig config;
  if (root.contains("default")) {
    ASSIGN_OR_RETURN(config.default_formats, ParseRoles(root["default"], "default"));
  }
  if (root.contains("conv")) { ASSIGN_OR_RETURN(config.conv, ParseRoles(root["conv"], "conv")); }
  if (root.contains("fc")) { ASSIGN_OR_RETURN(config.fc, ParseRoles(root["fc"], "fc")); }
  if (root.contains("layers")) {
    const Json& layers = root["layers"];
    if (!layers.is_object()) return PathError("layers", "must map layer names to role objects");
    for (const auto& [name, roles] : layers.items()) {
      ASSIGN_OR_RETURN(config.layers[name], ParseRoles(roles, "layers." + name));
    }
  }
  if (root.contains("rounding")) {
    if (!root["rounding"].is_string()) return PathError("rounding", "must be a string");
    absl::StatusOr<Rounding> r = ParseRounding(root["rounding"].get<std::string>());
    if (!r.ok()) return PathError("rounding", std::string(r.status().message()));
    config.rounding = *r;
  }
  if (root.contains("seed")) {
    if (!root["seed"].is_number_unsigned()) return PathError("seed", "must be an integer >= 0");
    config.seed = root["seed"].get<uint64_t>();
  }
  if (root.contains("ristretto_activations")) {
    if (!root["ristretto_activations"].is_boolean()) {
      return PathError("ristretto_activations", "must be true or false");
    }
    config.ristretto_activations = root["ristretto_activations"].get<bool>();
  }
  if (root.contains("calibration")) {
    const Json& c = root["calibration"];
    RETURN_IF_ERROR(CheckKeys(c, "calibration", {"method", "percentile"}));
    if (c.contains("method")) {
      if (!c["method"].is_string()) return PathError("calibration.method", "must be a string");
      absl::StatusOr<CalibrationMethod> m = ParseCalibrationMethod(c["method"].get<std::string>());
      if (!m.ok()) return PathError("calibration.method", std::string(m.status().message()));
      config.calibration.method = *m;
    }
    if (c.contains("percentile")) {
      if (!c["percentile"].is_number()) return PathError("calibration.percentile", "must be a number");
      const double p = c["percentile"].get<double>();
      if (!(p > 0 && p <= 100)) {
        return PathError("calibration.percentile", absl::StrCat(p, " is not in (0, 100]"));
      }
      config.calibration.percentile = p;
    }
  }
  return config;
}

absl::StatusOr<QuantConfig> ReadQuantConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<QuantConfig> config = ParseQuantConfig(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

std::string CanonicalJson(const QuantConfig& config) {
  Json j = Json::object();  // nlohmann's object is a std::map: keys come out sorted
  if (!config.default_formats.empty()) j["default"] = RolesToJson(config.default_formats);
  if (!config.conv.empty()) j["conv"] = RolesToJson(config.conv);
  if (!config.fc.empty()) j["fc"] = RolesToJson(config.fc);
  Json layers = Json::object();
  for (const auto& [name, roles] : config.layers) {
    if (!roles.empty()) layers[name] = RolesToJson(roles);
  }
  if (!layers.empty()) j["layers"] = layers;
  j["rounding"] = std::string(RoundingName(config.rounding));
  j["seed"] = config.seed;
  Json calibration = {{"method", std::string(CalibrationMethodName(config.calibration.method))}};
  if (config.calibration.method == CalibrationMethod::kPercentile) {
    calibration["percentile"] = config.calibration.percentile;
  }
  j["calibration"] = calibration;
  j["ristretto_activations"] = config.ristretto_activations;
  return j.dump();
}

std::string ConfigHash(const QuantConfig& config) {
  return Sha256Hex(CanonicalJson(config));
}

absl::StatusOr<std::vector<LayerFormats>> ResolveFormats(const QuantConfig& config,
                                                         const std::vector<LayerInfo>& layers) {
  std::vector<std::string> names;
  for (const LayerInfo& l : layers) names.push_back(l.name);
  for (const auto& [name, roles] : config.layers) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config layers.", name, ": no quantizable layer has that name (layers: ",
          absl::StrJoin(names, ", "), ")"));
    }
  }
  std::vector<LayerFormats> resolved;
  for (const LayerInfo& layer : layers) {
    const RoleFormats& by_class = layer.layer_class == LayerClass::kConv ? config.conv : config.fc;
    auto by_layer = config.layers.find(layer.name);
    auto pick = [&](std::optional<NumberFormat> RoleFormats::*role) {
      if (by_layer != config.layers.end() && by_layer->second.*role) return *(by_layer->second.*role);
      if (by_class.*role) return *(by_class.*role);
      if (config.default_formats.*role) return *(config.default_formats.*role);
      return NumberFormat{};  // fp32
    };
    LayerFormats f{pick(&RoleFormats::weights), pick(&RoleFormats::inputs),
                   pick(&RoleFormats::outputs)};
    for (auto [role, format] : {std::pair{"inputs", &f.inputs}, std::pair{"outputs", &f.outputs}}) {
      if (format->kind == FormatKind::kPow2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer '", layer.name, "' ", role, ": pow2 is a weight format (activations need "
            "fixed, ufixed, minifloat, int or fp32)"));
      }
      if (format->kind == FormatKind::kInt && format->per_channel) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer '", layer.name, "' ", role, ": per-channel int is for weights only"));
      }
    }
    resolved.push_back(f);
  }
  return resolved;
}

}  // namespace bitsweep::quant
