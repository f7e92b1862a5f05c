#include "client/dataset_flags.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/flag_values.h"
#include "common/status_macros.h"
#include "worker/dataset_settings.h"

ABSL_FLAG(std::string, dataset, "",
          "dataset: idx:DIR (a folder in MNIST naming: DIR/train and DIR/t10k splits), or one "
          "split: idx:PREFIX (e.g. idx:/usr/share/datasets/fashion-mnist/t10k), "
          "npy:IMAGES.npy,LABELS.npy, imagefolder:DIR (DIR/CLASS/IMAGE.jpg|png) or "
          "list:FILE.csv (path,label lines)");
ABSL_FLAG(std::string, train_data, "", "training split (train, finetune, calibration)");
ABSL_FLAG(std::string, eval_data, "", "evaluation split (eval, train and finetune reports)");
ABSL_FLAG(std::string, calibration_data, "",
          "calibration split (default: the training split, e.g. idx:DIR/train beside an "
          "idx:DIR/t10k --dataset)");
ABSL_FLAG(std::string, calibration_dataset, "", "the older name of --calibration_data");
ABSL_FLAG(std::string, mean, "",
          "per-channel mean subtracted after scaling pixels to [0,1], e.g. 0.2860 or "
          "0.485,0.456,0.406");
ABSL_FLAG(std::string, std, "", "per-channel standard deviation divided by, e.g. 0.3530");
ABSL_FLAG(int64_t, limit, 0, "only the first N samples of the split the command reads (0: all)");
ABSL_FLAG(int64_t, eval_limit, 0,
          "evaluate a class-stratified subset of N samples (deterministic; 0: all)");
ABSL_FLAG(int64_t, calibration_samples, 1000,
          "calibration samples: the first N of idx/npy splits, a class-stratified subset of "
          "imagefolder/list splits");
ABSL_FLAG(int64_t, resize, 0,
          "image datasets: resize the shorter side to N pixels (bilinear with antialiasing, as "
          "torchvision's Resize on PIL images; 0: no resizing)");
ABSL_FLAG(int64_t, center_crop, 0, "image datasets: centre crop N x N after resizing (0: none)");
ABSL_FLAG(std::string, channel_order, "rgb", "image datasets: rgb or bgr");
ABSL_FLAG(bool, skip_bad_images, false,
          "image datasets: leave files that cannot be decoded out (counted) instead of failing");
ABSL_FLAG(int32_t, channels, 0,
          "train on image datasets: 1 (grayscale) or 3 (RGB) channels; other commands use the "
          "model input's channels (0)");

namespace bitsweep::cli {
namespace {

std::string Sibling(const std::string& split, absl::string_view from, absl::string_view to) {
  return absl::StrCat(split.substr(0, split.size() - from.size()), to);
}

}  // namespace

bool DatasetFlagsGiven() {
  return !absl::GetFlag(FLAGS_dataset).empty() || !absl::GetFlag(FLAGS_train_data).empty() ||
         !absl::GetFlag(FLAGS_eval_data).empty();
}

absl::StatusOr<DatasetFlags> DatasetFlagsFromCommandLine(DatasetUse use, bool data_is_local) {
  DatasetFlags flags;
  v1::DatasetRef& ref = flags.ref;
  std::string train = absl::GetFlag(FLAGS_train_data), eval = absl::GetFlag(FLAGS_eval_data);
  if (const std::string dataset = absl::GetFlag(FLAGS_dataset); !dataset.empty()) {
    const bool idx = absl::StartsWith(dataset, "idx:");
    std::string dataset_train, dataset_eval;
    if (data_is_local) {
      if (idx && std::filesystem::is_directory(dataset.substr(4))) {
        dataset_train = dataset + "/train";
        dataset_eval = dataset + "/t10k";
      } else if (use == DatasetUse::kTraining) {
        dataset_train = dataset;
        if (absl::EndsWith(dataset, "/train")) dataset_eval = Sibling(dataset, "/train", "/t10k");
      } else {
        dataset_eval = dataset;
        if (absl::EndsWith(dataset, "/t10k")) dataset_train = Sibling(dataset, "/t10k", "/train");
      }
    } else if (absl::EndsWith(dataset, "/train")) {
      dataset_train = dataset;
      dataset_eval = Sibling(dataset, "/train", "/t10k");
    } else if (absl::EndsWith(dataset, "/t10k")) {
      dataset_train = Sibling(dataset, "/t10k", "/train");
      dataset_eval = dataset;
    } else if (idx) {
      dataset_train = dataset + "/train";
      dataset_eval = dataset + "/t10k";
    } else {
      dataset_eval = dataset;  // one split: calibration needs --train_data or --calibration_data
    }
    if (train.empty()) train = dataset_train;
    if (eval.empty()) eval = dataset_eval;
  }
  const bool training = use == DatasetUse::kTraining;
  if ((training ? train : eval).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset is required (or --", training ? "train_data" : "eval_data", " REF)"));
  }
  ref.set_train(train);
  ref.set_eval(eval);
  std::string calibration = absl::GetFlag(FLAGS_calibration_data);
  if (calibration.empty()) calibration = absl::GetFlag(FLAGS_calibration_dataset);
  ref.set_calibration(calibration);
  if (!data_is_local && train.empty() && calibration.empty()) {
    // Every strategy's baseline measures activation ranges on the calibration split.
    return absl::InvalidArgumentError(absl::StrCat(
        "a sweep calibrates on a training or calibration split: --dataset ",
        absl::GetFlag(FLAGS_dataset).empty() ? "" : absl::GetFlag(FLAGS_dataset) + " ",
        "names only the evaluation split; add --train_data REF or --calibration_data REF"));
  }

  ASSIGN_OR_RETURN(std::vector<float> mean, ParseFloatList("mean", absl::GetFlag(FLAGS_mean)));
  ASSIGN_OR_RETURN(std::vector<float> std, ParseFloatList("std", absl::GetFlag(FLAGS_std)));
  *ref.mutable_mean() = {mean.begin(), mean.end()};
  *ref.mutable_std() = {std.begin(), std.end()};

  const int64_t limit = absl::GetFlag(FLAGS_limit);
  const int64_t eval_limit = absl::GetFlag(FLAGS_eval_limit);
  if (limit < 0) return absl::InvalidArgumentError("--limit must be >= 0");
  if (eval_limit < 0) return absl::InvalidArgumentError("--eval_limit must be >= 0");
  if (limit > 0 && eval_limit > 0 && !training) {
    return absl::InvalidArgumentError(
        "--limit (the first N samples) and --eval_limit (a class-stratified subset) exclude each "
        "other");
  }
  if (training) {
    flags.train_limit = limit;
  } else {
    ref.set_eval_limit(eval_limit > 0 ? eval_limit : limit);
  }
  if (eval_limit > 0) {
    ref.set_eval_limit(eval_limit);
    ref.set_eval_stratified(true);
  }
  const int64_t calibration_samples = absl::GetFlag(FLAGS_calibration_samples);
  if (calibration_samples < 1) {
    return absl::InvalidArgumentError("--calibration_samples must be >= 1");
  }
  ref.set_calibration_samples(calibration_samples);

  ref.set_resize(absl::GetFlag(FLAGS_resize));
  ref.set_center_crop(absl::GetFlag(FLAGS_center_crop));
  const std::string order = absl::GetFlag(FLAGS_channel_order);
  if (order != "rgb" && order != "bgr") {
    return absl::InvalidArgumentError(
        absl::StrCat("--channel_order must be rgb or bgr, got '", order, "'"));
  }
  if (order == "bgr") ref.set_channel_order(order);  // "" is rgb: one dedup key for the default
  ref.set_skip_bad_images(absl::GetFlag(FLAGS_skip_bad_images));
  flags.channels = absl::GetFlag(FLAGS_channels);
  if (flags.channels != 0 && flags.channels != 1 && flags.channels != 3) {
    return absl::InvalidArgumentError("--channels must be 1 or 3");
  }
  absl::Status checked = worker::CheckDatasetRef(ref);
  if (!checked.ok()) {
    // Flag names instead of field names.
    return absl::InvalidArgumentError(absl::StrCat(
        "--", absl::StripPrefix(checked.message(), "settings.dataset.")));
  }
  return flags;
}

engine::LoadOptions DatasetLoadOptions(int threads) {
  engine::LoadOptions options;
  options.threads = threads;
  options.cache_dir = worker::DefaultCacheDir("datasets");
  return options;
}

}  // namespace bitsweep::cli
