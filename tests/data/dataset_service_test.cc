// Image datasets through the service's path and the CLI: a TrialExecutor given an imagefolder:
// evaluation split scores the committed LeNet-5 exactly as on the IDX split it was written from,
// later trials and later executors decode nothing (in-memory and on-disk caches), and a worker
// lacking the data fails permanently naming the path; `bitsweep eval` through the shared dataset
// flags agrees with the IDX path.
#include <sys/types.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cli/run_binary.h"
#include "worker/trial_executor.h"

namespace bitsweep::worker {
namespace {

namespace fs = std::filesystem;

constexpr char kModel[] = BITSWEEP_LENET5_MODEL;
constexpr char kFashion[] = BITSWEEP_FASHION_MNIST_DIR;
constexpr char kPngFolder[] = "imagefolder:" BITSWEEP_IMAGE_FIXTURES_DIR "/fashion/png";
constexpr char kFixed8[] =
    R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";
constexpr char kFixed4[] =
    R"({"default": {"weights": "fixed:4", "inputs": "fixed:8", "outputs": "fixed:8"}})";

v1::EvalSettings Settings(const std::string& eval, int64_t eval_limit) {
  v1::EvalSettings s;
  v1::DatasetRef* d = s.mutable_dataset();
  d->set_train(absl::StrCat("idx:", kFashion, "/train"));
  d->set_eval(eval);
  d->add_mean(0.2860f);
  d->add_std(0.3530f);
  d->set_eval_limit(eval_limit);
  d->set_calibration_samples(200);
  return s;
}

v1::TrialSpec Spec(const char* config) {
  v1::TrialSpec spec;
  spec.set_config_json(config);
  return spec;
}

class DatasetServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = absl::StrCat(fs::temp_directory_path().string(), "/bitsweep-dataset-service-",
                          getpid());
    fs::remove_all(cache_);
  }
  void TearDown() override { fs::remove_all(cache_); }
  std::string cache_;
};

TEST_F(DatasetServiceTest, ImageFolderTrialsEqualIdxAndDecodeOnce) {
  const ModelRef model{.hash = "lenet5-dataset-test", .path = kModel};
  TrialExecutor idx_executor;
  absl::StatusOr<v1::TrialResult> from_idx = idx_executor.Execute(
      model, Settings(absl::StrCat("idx:", kFashion, "/t10k"), 1000), Spec(kFixed8));
  ASSERT_TRUE(from_idx.ok()) << from_idx.status();

  {
    TrialExecutor executor({.dataset_cache_dir = cache_});
    absl::StatusOr<v1::TrialResult> first =
        executor.Execute(model, Settings(kPngFolder, 0), Spec(kFixed8));
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->samples(), 1000);
    EXPECT_EQ(first->top1(), from_idx->top1());
    EXPECT_EQ(first->top5(), from_idx->top5());
    EXPECT_EQ(executor.images_decoded(), 1000);
    absl::StatusOr<v1::TrialResult> second =
        executor.Execute(model, Settings(kPngFolder, 0), Spec(kFixed4));
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(executor.images_decoded(), 1000);  // the second trial decoded nothing
  }
  // A new executor (another worker process on the machine) reads the on-disk cache.
  TrialExecutor later({.dataset_cache_dir = cache_});
  absl::StatusOr<v1::TrialResult> again =
      later.Execute(model, Settings(kPngFolder, 0), Spec(kFixed8));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->top1(), from_idx->top1());
  EXPECT_EQ(later.images_decoded(), 0);
  EXPECT_EQ(later.dataset_loads(), 2);  // evaluation and calibration splits, from caches

  // A stratified evaluation subset.
  v1::EvalSettings stratified = Settings(kPngFolder, 100);
  stratified.mutable_dataset()->set_eval_stratified(true);
  absl::StatusOr<v1::TrialResult> subset = later.Execute(model, stratified, Spec(kFixed8));
  ASSERT_TRUE(subset.ok()) << subset.status();
  EXPECT_EQ(subset->samples(), 100);
}

TEST_F(DatasetServiceTest, MissingDataIsAPermanentErrorNamingThePath) {
  TrialExecutor executor({.dataset_cache_dir = cache_});
  const std::string missing = "/nonexistent/bitsweep/val";
  absl::StatusOr<v1::TrialResult> r =
      executor.Execute({.hash = "lenet5-dataset-test", .path = kModel},
                       Settings(absl::StrCat("imagefolder:", missing), 0), Spec(kFixed8));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), missing)) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "settings.dataset.eval")) << r.status();

  v1::EvalSettings bad_order = Settings(kPngFolder, 0);
  bad_order.mutable_dataset()->set_channel_order("grb");
  r = executor.Execute({.hash = "lenet5-dataset-test", .path = kModel}, bad_order, Spec(kFixed8));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "channel_order")) << r.status();
}

nlohmann::json EvalJson(const std::string& args) {
  const bitsweep::testing::CommandResult r = bitsweep::testing::RunCommandLine(absl::StrCat(
      "BITSWEEP_CACHE_DIR=", fs::temp_directory_path().string(), "/bitsweep-dataset-cli-",
      getpid(), " ", BITSWEEP_BINARY, " eval --model ", kModel,
      " --mean 0.2860 --std 0.3530 --json ", args));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const size_t brace = r.out.rfind("\n{");
  return nlohmann::json::parse(r.out.substr(brace == std::string::npos ? 0 : brace + 1),
                               nullptr, /*allow_exceptions=*/false);
}

TEST(DatasetCliTest, EvalThroughImageFolderEqualsIdx) {
  const nlohmann::json idx = EvalJson(absl::StrCat("--dataset idx:", kFashion, "/t10k --limit 1000"));
  const nlohmann::json png = EvalJson(absl::StrCat("--dataset ", kPngFolder));
  ASSERT_TRUE(idx.is_object() && png.is_object());
  EXPECT_EQ(png["samples"], 1000);
  EXPECT_EQ(png["top1"], idx["top1"]);
  const nlohmann::json subset = EvalJson(absl::StrCat("--dataset ", kPngFolder, " --eval-limit 50"));
  ASSERT_TRUE(subset.is_object());
  EXPECT_EQ(subset["samples"], 50);

  const bitsweep::testing::CommandResult both = bitsweep::testing::RunCommandLine(absl::StrCat(
      BITSWEEP_BINARY, " eval --model ", kModel, " --dataset ", kPngFolder,
      " --limit 10 --eval-limit 10"));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(both.out, "--eval_limit")) << both.out;
  const bitsweep::testing::CommandResult missing = bitsweep::testing::RunCommandLine(absl::StrCat(
      BITSWEEP_BINARY, " eval --model ", kModel, " --dataset imagefolder:/nonexistent/x"));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(missing.out, "/nonexistent/x")) << missing.out;
  // A sweep needs a calibration split besides a single evaluation folder.
  const bitsweep::testing::CommandResult submit = bitsweep::testing::RunCommandLine(absl::StrCat(
      BITSWEEP_BINARY, " submit --server 127.0.0.1:1 --model ", kModel, " --dataset ",
      kPngFolder));
  EXPECT_EQ(submit.exit_code, 1) << submit.out;
  EXPECT_TRUE(absl::StrContains(submit.out, "--calibration_data")) << submit.out;
  fs::remove_all(absl::StrCat(fs::temp_directory_path().string(), "/bitsweep-dataset-cli-",
                              getpid()));
}

// `bitsweep local` carries the image preprocessing in the sweep spec to its workers.
TEST(DatasetCliTest, LocalSweepOnAnImageFolder) {
  const std::string dir = absl::StrCat(fs::temp_directory_path().string(),
                                       "/bitsweep-dataset-local-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  const bitsweep::testing::CommandResult r = bitsweep::testing::RunCommandLine(absl::StrCat(
      "BITSWEEP_CACHE_DIR=", dir, "/cache ", BITSWEEP_BINARY, " local --model ", kModel,
      " --dataset ", kPngFolder, " --train-data ", kPngFolder,
      " --mean 0.2860 --std 0.3530 --center-crop 28 --eval-limit 300 --calibration-samples 100",
      " --strategy grid --grid 'conv.weights=fixed:8,fixed:4' --workers 1 --db ", dir, "/r.db"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "frontier of sweep 1")) << r.out;
  // The decoded evaluation subset and calibration subset landed in the dataset cache.
  int cached = 0;
  for (const auto& entry : fs::directory_iterator(absl::StrCat(dir, "/cache/datasets"))) {
    cached += entry.path().extension() == ".pixels";
  }
  EXPECT_EQ(cached, 2);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitsweep::worker
