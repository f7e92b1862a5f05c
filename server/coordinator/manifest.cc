#include "server/coordinator/manifest.h"

#include <string>

#include "nlohmann/json.hpp"

namespace bitsweep::server {
namespace {

using Json = nlohmann::ordered_json;

Json QuantParamsJson(const v1::QuantParams& params) {
  Json out = Json::object();
  out["format"] = params.format();
  out["bits"] = params.bits();
  if (params.has_fractional_bits()) out["fractional_bits"] = params.fractional_bits();
  if (params.scale_size() > 0) {
    out["scale"] = Json::array();
    for (float scale : params.scale()) out["scale"].push_back(scale);
  }
  if (params.zero_point_size() > 0) {
    out["zero_point"] = Json::array();
    for (int32_t zero_point : params.zero_point()) out["zero_point"].push_back(zero_point);
  }
  if (params.has_max_exponent()) out["max_exponent"] = params.max_exponent();
  if (!params.description().empty()) out["description"] = params.description();
  return out;
}

}  // namespace

std::string BuildConfigManifest(const v1::Trial& trial, absl::string_view model_hash,
                                absl::string_view canonical_config_json) {
  const v1::TrialResult& result = trial.result();
  Json manifest = Json::object();
  manifest["trial_id"] = trial.id();
  manifest["sweep_id"] = trial.sweep_id();
  manifest["model_hash"] = std::string(model_hash);
  manifest["config_hash"] = trial.config_hash();
  // The config as an object, so tools read it without a second parse; the stored text is
  // canonical JSON written by the quant spec library, and falls back to a string if not.
  Json config = Json::parse(canonical_config_json.begin(), canonical_config_json.end(),
                            /*cb=*/nullptr, /*allow_exceptions=*/false);
  manifest["config"] =
      config.is_discarded() ? Json(std::string(canonical_config_json)) : std::move(config);
  manifest["label"] = trial.spec().label();
  manifest["stage"] = trial.spec().stage();
  if (trial.spec().finetune().steps() > 0) {
    manifest["finetune_steps"] = trial.spec().finetune().steps();
  }
  manifest["top1"] = result.top1();
  manifest["top5"] = result.top5();
  if (result.has_top1_before_finetune()) {
    manifest["top1_before_finetune"] = result.top1_before_finetune();
  }
  manifest["size_bits"] = result.size_bits();
  manifest["peak_activation_bits"] = result.peak_activation_bits();
  manifest["energy_pj"] = result.energy_pj();
  manifest["bops"] = result.bops();
  manifest["macs"] = result.macs();
  manifest["hardware_profile"] = result.hardware_profile();
  manifest["engine_version"] = result.engine_version();
  Json layers = Json::array();
  for (const v1::LayerResult& layer : result.layers()) {
    Json entry = Json::object();
    entry["name"] = layer.name();
    entry["class"] = layer.layer_class();
    if (layer.has_weights() && !layer.weights().format().empty()) {
      entry["weights"] = QuantParamsJson(layer.weights());
    }
    if (layer.has_inputs() && !layer.inputs().format().empty()) {
      entry["inputs"] = QuantParamsJson(layer.inputs());
    }
    if (layer.has_outputs() && !layer.outputs().format().empty()) {
      entry["outputs"] = QuantParamsJson(layer.outputs());
    }
    entry["macs"] = layer.macs();
    entry["weight_bits"] = layer.weight_bits();
    entry["energy_pj"] = layer.energy_pj();
    layers.push_back(std::move(entry));
  }
  manifest["layers"] = std::move(layers);
  // NaN or a non-UTF-8 name must not throw out of the coordinator: replace bad bytes.
  return manifest.dump(2, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

}  // namespace bitsweep::server
