#include "server/coordinator/dedup.h"


#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace bitsweep::server {
namespace {

// Proto serialization is only canonical with deterministic map ordering; there are no maps in
// these messages today, but the key must not change if one is added.
std::string DeterministicBytes(const google::protobuf::MessageLite& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return bytes;
}

// Length prefixes keep ("ab", "c") and ("a", "bc") apart.
void AppendField(std::string& out, absl::string_view field) {
  absl::StrAppend(&out, field.size(), ":", field, ";");
}

}  // namespace

v1::EvalSettings NormalizedEvalSettings(const v1::EvalSettings& settings) {
  v1::EvalSettings normalized = settings;
  if (normalized.batch() == 0) normalized.set_batch(256);
  if (normalized.dataset().calibration_samples() == 0) {
    normalized.mutable_dataset()->set_calibration_samples(1000);
  }
  return normalized;
}

v1::FinetuneSpec NormalizedFinetune(const v1::FinetuneSpec& finetune) {
  v1::FinetuneSpec normalized;
  if (finetune.steps() == 0) return normalized;  // no fine-tuning: the other fields do nothing
  normalized = finetune;
  if (normalized.learning_rate() == 0) normalized.set_learning_rate(0.001);
  if (normalized.batch() == 0) normalized.set_batch(64);
  if (normalized.momentum() == 0) normalized.set_momentum(0.9);
  if (normalized.weight_decay() == 0) normalized.set_weight_decay(5e-4);
  if (normalized.seed() == 0) normalized.set_seed(1);
  return normalized;
}

std::string TrialDedupKey(absl::string_view model_hash, const v1::EvalSettings& settings,
                          absl::string_view config_hash, const v1::TrialSpec& trial) {
  std::string material = "bitsweep-trial-v1;";
  AppendField(material, model_hash);
  AppendField(material, DeterministicBytes(NormalizedEvalSettings(settings)));
  AppendField(material, config_hash);
  AppendField(material, DeterministicBytes(NormalizedFinetune(trial.finetune())));
  if (trial.collect_sensitivities()) {
    AppendField(material, "sensitivities");
    for (const std::string& format : trial.sensitivity_weight_formats()) {
      AppendField(material, absl::StrCat("w", format));
    }
    for (const std::string& format : trial.sensitivity_activation_formats()) {
      AppendField(material, absl::StrCat("a", format));
    }
  }
  return Sha256Hex(material);
}


}  // namespace bitsweep::server
