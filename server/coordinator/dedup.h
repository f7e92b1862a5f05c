// The deduplication key of a trial: what decides its result. Two trials with the same key are
// evaluated once, across sweeps: the same (model, dataset, config, eval settings) is evaluated
// once (docs/SERVICE.md).
//
//   std::string key = TrialDedupKey(model_hash, spec.settings(), config_hash, trial);
//
// Settings are normalized before hashing so that spelling a default out does not change the key
// (batch 0 and 256 are the same; fine-tuning with steps == 0 is no fine-tuning whatever its other
// fields say). TrialSpec.collect_ranges, stage and label are deliberately not part of the key.
// A sensitivities request (collect_sensitivities and its format lists) is: its result carries
// what a plain trial's does not, so it must not be served from one (trials without it keep the
// key they always had).
#ifndef BITSWEEP_SERVER_COORDINATOR_DEDUP_H_
#define BITSWEEP_SERVER_COORDINATOR_DEDUP_H_

#include <string>

#include "absl/strings/string_view.h"
#include "bitsweep/v1/common.pb.h"

namespace bitsweep::server {

// EvalSettings and FinetuneSpec with their "0 means ..." defaults written out.
v1::EvalSettings NormalizedEvalSettings(const v1::EvalSettings& settings);
v1::FinetuneSpec NormalizedFinetune(const v1::FinetuneSpec& finetune);

// Lower-case hex SHA-256 over the length-prefixed model hash, deterministic serialization of the
// normalized EvalSettings, config hash and the trial's normalized FinetuneSpec, then, for a
// sensitivities trial only, its weight and activation format lists.
std::string TrialDedupKey(absl::string_view model_hash, const v1::EvalSettings& settings,
                          absl::string_view config_hash, const v1::TrialSpec& trial);


}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_DEDUP_H_
