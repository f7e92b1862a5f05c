// What a v1::DatasetRef asks the engine to load -- one reading shared by the trial executor (the
// service's workers) and the `bitsweep` engine commands, so `bitsweep eval` and a sweep's trials
// see the same samples.
//
//   RETURN_IF_ERROR(CheckDatasetRef(ref));                      // errors name settings.dataset.*
//   const int channels = ModelInputChannels(graph);             // 1 or 3 from the model, else 0
//   SplitLoad eval = EvalSplit(ref, channels);
//   ASSIGN_OR_RETURN(engine::Dataset ds, LoadSplit(eval, {.threads = 2, .cache_dir = dir}));
//
// Splits: evaluation = `eval` (its first eval_limit samples, or a class-stratified subset of
// that size with eval_stratified); calibration = `calibration`, else `train`: the first
// calibration_samples (default 1000) samples of idx: and npy: splits, a class-stratified subset
// of that size of imagefolder: and list: splits (their files are sorted by class, so the first
// samples would be one class); training = all of `train` (or `limit` samples of it, chosen as
// calibration samples are).
#ifndef BITSWEEP_WORKER_DATASET_SETTINGS_H_
#define BITSWEEP_WORKER_DATASET_SETTINGS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bitsweep/v1/common.pb.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"

namespace bitsweep::worker {

inline constexpr int64_t kDefaultCalibrationSamples = 1000;

// One split to load: a reference and its preprocessing.
struct SplitLoad {
  std::string reference;
  engine::Preprocessing preprocessing;
  // Identifies reference and preprocessing exactly (floats in hex): a cache key.
  std::string Key() const;
};

// Field-level checks (negative sizes, unknown channel order, ...); messages name the field as
// "settings.dataset.<field>".
absl::Status CheckDatasetRef(const v1::DatasetRef& ref);

// The channel count image datasets are converted to for `graph`: its input's C when the input is
// [N, C, H, W] with C 1 or 3; otherwise 0 (the loader's default, RGB).
int ModelInputChannels(const engine::Graph& graph);

SplitLoad EvalSplit(const v1::DatasetRef& ref, int channels);
// nullopt when the reference names neither a calibration nor a training split.
std::optional<SplitLoad> CalibrationSplit(const v1::DatasetRef& ref, int channels);
// The training split (`limit` > 0: `limit` samples of it); nullopt when there is none.
std::optional<SplitLoad> TrainSplit(const v1::DatasetRef& ref, int channels, int64_t limit = 0);

absl::StatusOr<engine::Dataset> LoadSplit(const SplitLoad& split,
                                          const engine::LoadOptions& options);

// BITSWEEP_CACHE_DIR/<sub>, else $XDG_CACHE_HOME/bitsweep/<sub>, else $HOME/.cache/bitsweep/<sub>,
// else /tmp/bitsweep-<sub>. Not created.
std::string DefaultCacheDir(absl::string_view sub);

}  // namespace bitsweep::worker

#endif  // BITSWEEP_WORKER_DATASET_SETTINGS_H_
