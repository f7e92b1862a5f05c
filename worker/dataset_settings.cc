#include "worker/dataset_settings.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace bitsweep::worker {
namespace {

// Floats in hex notation: exact, so keys differ exactly when the preprocessing does.
std::string FloatsKey(const std::vector<float>& values) {
  return absl::StrJoin(values, ",", [](std::string* out, float v) {
    absl::StrAppend(out, absl::StrFormat("%a", v));
  });
}

engine::Preprocessing BasePreprocessing(const v1::DatasetRef& ref, int channels) {
  engine::Preprocessing pre;
  pre.mean.assign(ref.mean().begin(), ref.mean().end());
  pre.std.assign(ref.std().begin(), ref.std().end());
  pre.channels = channels;
  pre.resize = ref.resize();
  pre.center_crop = ref.center_crop();
  pre.bgr = ref.channel_order() == "bgr";
  pre.skip_bad_images = ref.skip_bad_images();
  return pre;
}

bool IsImageFiles(const std::string& reference) {
  const std::string scheme = engine::DatasetScheme(reference);
  return scheme == "imagefolder" || scheme == "list";
}

}  // namespace

std::string SplitLoad::Key() const {
  const engine::Preprocessing& p = preprocessing;
  return absl::StrCat(reference, "|mean=", FloatsKey(p.mean), "|std=", FloatsKey(p.std),
                      "|limit=", p.limit, p.stratified ? "s" : "", "|channels=", p.channels,
                      "|resize=", p.resize, "|crop=", p.center_crop, "|bgr=", p.bgr,
                      "|skip_bad=", p.skip_bad_images);
}

absl::Status CheckDatasetRef(const v1::DatasetRef& ref) {
  auto non_negative = [](absl::string_view field, int64_t v) -> absl::Status {
    if (v >= 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("settings.dataset.", field, " must be >= 0, got ", v));
  };
  if (absl::Status s = non_negative("eval_limit", ref.eval_limit()); !s.ok()) return s;
  if (absl::Status s = non_negative("calibration_samples", ref.calibration_samples()); !s.ok()) {
    return s;
  }
  if (absl::Status s = non_negative("resize", ref.resize()); !s.ok()) return s;
  if (absl::Status s = non_negative("center_crop", ref.center_crop()); !s.ok()) return s;
  if (!ref.channel_order().empty() && ref.channel_order() != "rgb" &&
      ref.channel_order() != "bgr") {
    return absl::InvalidArgumentError(absl::StrCat(
        "settings.dataset.channel_order must be 'rgb' or 'bgr', got '", ref.channel_order(), "'"));
  }
  return absl::OkStatus();
}

int ModelInputChannels(const engine::Graph& graph) {
  if (graph.inputs.size() != 1) return 0;
  const engine::Shape& shape = graph.inputs[0].shape;
  if (shape.size() != 4 || (shape[1] != 1 && shape[1] != 3)) return 0;
  return static_cast<int>(shape[1]);
}

SplitLoad EvalSplit(const v1::DatasetRef& ref, int channels) {
  SplitLoad split{ref.eval(), BasePreprocessing(ref, channels)};
  split.preprocessing.limit = ref.eval_limit();
  split.preprocessing.stratified = ref.eval_stratified();
  return split;
}

std::optional<SplitLoad> CalibrationSplit(const v1::DatasetRef& ref, int channels) {
  const std::string& reference = !ref.calibration().empty() ? ref.calibration() : ref.train();
  if (reference.empty()) return std::nullopt;
  SplitLoad split{reference, BasePreprocessing(ref, channels)};
  split.preprocessing.limit =
      ref.calibration_samples() > 0 ? ref.calibration_samples() : kDefaultCalibrationSamples;
  split.preprocessing.stratified = IsImageFiles(reference);
  return split;
}

std::optional<SplitLoad> TrainSplit(const v1::DatasetRef& ref, int channels, int64_t limit) {
  if (ref.train().empty()) return std::nullopt;
  SplitLoad split{ref.train(), BasePreprocessing(ref, channels)};
  split.preprocessing.limit = limit;
  split.preprocessing.stratified = limit > 0 && IsImageFiles(ref.train());
  return split;
}

absl::StatusOr<engine::Dataset> LoadSplit(const SplitLoad& split,
                                          const engine::LoadOptions& options) {
  absl::StatusOr<engine::Dataset> ds =
      engine::LoadDataset(split.reference, split.preprocessing, options);
  if (ds.ok() && ds->skipped_images > 0) {
    std::fprintf(stderr, "dataset '%s': skipped %lld bad image%s (first: %s)\n",
                 split.reference.c_str(), static_cast<long long>(ds->skipped_images),
                 ds->skipped_images == 1 ? "" : "s", ds->skipped_names.front().c_str());
  }
  return ds;
}

std::string DefaultCacheDir(absl::string_view sub) {
  namespace fs = std::filesystem;
  if (const char* d = std::getenv("BITSWEEP_CACHE_DIR"); d != nullptr && d[0] != '\0') {
    return (fs::path(d) / std::string(sub)).string();
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] != '\0') {
    return (fs::path(xdg) / "bitsweep" / std::string(sub)).string();
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return (fs::path(home) / ".cache" / "bitsweep" / std::string(sub)).string();
  }
  return absl::StrCat("/tmp/bitsweep-", sub);
}

}  // namespace bitsweep::worker
