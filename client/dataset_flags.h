// The dataset flags of every `bitsweep` command (eval, inspect, train, finetune, submit, local),
// parsed in one place into the v1::DatasetRef a sweep carries; engine commands then load its splits
// through worker/dataset_settings.h exactly as the service's workers do.
//
//   --dataset REF              idx:DIR (DIR/train + DIR/t10k), or one split: idx:PREFIX,
//                              npy:IMAGES.npy,LABELS.npy, imagefolder:DIR, list:FILE.csv
//   --train-data / --eval-data / --calibration-data REF   name splits explicitly
//   --mean / --std             per channel (one value: every channel)
//   --resize N --center-crop N --channel-order rgb|bgr --skip-bad-images   image datasets
//   --limit N                  the first N samples (of the split the command reads)
//   --eval-limit N             a class-stratified subset of N evaluation samples
//   --calibration-samples N    calibration samples (default 1000)
//   --channels 1|3             train: image channels (other commands take the model's)
//
//   ASSIGN_OR_RETURN(DatasetFlags flags, DatasetFlagsFromCommandLine(DatasetUse::kEvaluation,
//                                                                    /*data_is_local=*/true));
#ifndef BITSWEEP_CLIENT_DATASET_FLAGS_H_
#define BITSWEEP_CLIENT_DATASET_FLAGS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "bitsweep/v1/common.pb.h"
#include "worker/engine/dataset.h"

namespace bitsweep::cli {

// The split a command reads when --dataset names a single split.
enum class DatasetUse { kEvaluation, kTraining };

struct DatasetFlags {
  v1::DatasetRef ref;
  int64_t train_limit = 0;  // kTraining: --limit
  int channels = 0;         // --channels (0: the model's)
};

// `data_is_local`: the data is on this machine (engine commands), so `idx:DIR` is recognized as a
// folder by looking, and --dataset stands for the split the command reads (its MNIST-named
// sibling, .../train <-> .../t10k, for the other). Otherwise (submit, local: the workers resolve
// the references) `idx:DIR` always means DIR/train and DIR/t10k and any other single --dataset
// is the evaluation split. Errors name the flag.
absl::StatusOr<DatasetFlags> DatasetFlagsFromCommandLine(DatasetUse use, bool data_is_local);

// Whether any of --dataset, --train-data, --eval-data was given.
bool DatasetFlagsGiven();

// Decoding threads and the dataset cache folder (worker::DefaultCacheDir("datasets")).
engine::LoadOptions DatasetLoadOptions(int threads);

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_DATASET_FLAGS_H_
