// ExportConfig's manifest: a succeeded trial's per-layer formats as a hardware flow needs them
// (explorer.proto, ExportConfigResponse), as JSON.
//
//   std::string json = BuildConfigManifest(trial, model_hash, canonical_config_json);
//
// {"trial_id", "sweep_id", "model_hash", "config_hash", "config": {...}, "label", "stage",
//  "top1", "top5", "size_bits", "energy_pj", "bops", "macs", "hardware_profile",
//  "layers": [{"name", "class", "weights": {"format", "bits", "fractional_bits" | "scale" and
//              "zero_point" | "max_exponent", "description"}, "inputs": {...}, "outputs": {...}}]}
// A role the worker did not report is omitted from its layer.
#ifndef BITSWEEP_SERVER_COORDINATOR_MANIFEST_H_
#define BITSWEEP_SERVER_COORDINATOR_MANIFEST_H_

#include <string>

#include "absl/strings/string_view.h"
#include "bitsweep/v1/explorer.pb.h"

namespace bitsweep::server {

std::string BuildConfigManifest(const v1::Trial& trial, absl::string_view model_hash,
                                absl::string_view canonical_config_json);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_MANIFEST_H_
