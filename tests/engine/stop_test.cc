// Stopping long engine calls (stop.h): evaluation (fp32 emulation and int8), calibration, training,
// RunTrial and FinetuneTrial poll their StopFn before every batch and end with CANCELLED at the
// first batch after it says stop. The StopFn here counts its polls and says stop at the N-th, so
// the tests see exactly how many batches ran -- no timing. Training batches are also counted
// independently, through a fake-quantization hook that runs once per forward pass.
#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/trial.h"

namespace bitsweep::engine {
namespace {

using ::testing::HasSubstr;

const std::string kData = BITSWEEP_FASHION_MNIST_DIR;
const std::string kModel = std::string(BITSWEEP_SOURCE_DIR) + "/models/lenet5.onnx";

// A StopFn that says stop at its `stop_at`-th poll (never when 0), counting every poll.
struct CountingStop {
  explicit CountingStop(int stop_at) : stop_at(stop_at) {}
  StopFn fn() {
    return [this] { return ++polls >= stop_at && stop_at > 0; };
  }
  int stop_at;
  std::atomic<int> polls{0};
};

class StopTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<onnx::ModelProto> model = ReadOnnxModel(kModel);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = new onnx::ModelProto(*std::move(model));
    absl::StatusOr<Graph> graph = ImportOnnxModel(*model_, {}, "lenet5");
    ASSERT_TRUE(graph.ok()) << graph.status();
    graph_ = new Graph(*std::move(graph));
    for (auto [split, limit, out] : {std::tuple{"t10k", 1000, &eval_}, {"train", 640, &train_}}) {
      absl::StatusOr<Dataset> d =
          LoadDataset(absl::StrCat("idx:", kData, "/", split),
                      {.mean = {0.2860f}, .std = {0.3530f}, .limit = limit});
      ASSERT_TRUE(d.ok()) << d.status();
      *out = new Dataset(*std::move(d));
    }
  }

  static inline onnx::ModelProto* model_ = nullptr;
  static inline Graph* graph_ = nullptr;
  static inline Dataset* eval_ = nullptr;   // 1000 test images
  static inline Dataset* train_ = nullptr;  // 640 training images
};

TEST_F(StopTest, EvaluationStopsAtTheNextBatch) {
  // 1000 images in batches of 50: 20 batches, one poll before each.
  CountingStop never(0);
  absl::StatusOr<EvalResult> full =
      Evaluate(*graph_, *eval_, {.batch = 50, .threads = 1, .stop = never.fn()});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(never.polls, 20);
  EXPECT_EQ(full->samples, 1000);

  CountingStop stop(4);  // three batches run, the fourth poll stops
  absl::StatusOr<EvalResult> r =
      Evaluate(*graph_, *eval_, {.batch = 50, .threads = 1, .stop = stop.fn()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("evaluation stopped"));
  EXPECT_EQ(stop.polls, 4);
}

TEST_F(StopTest, Int8EvaluationStopsAtTheNextBatch) {
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(
      R"({"default": {"weights": "int:8:sym:channel", "inputs": "int:8", "outputs": "int:8"}})");
  ASSERT_TRUE(config.ok()) << config.status();
  TrialInputs in{.graph = graph_, .eval = eval_, .calibration = train_, .config = &*config};
  // The plan of an unstopped int8 trial: 7 calibration polls (640 images in batches of 100, one
  // pass for the max calibrator) and 4 evaluation polls (1000 images in batches of 256).
  CountingStop never(0);
  absl::StatusOr<TrialResult> trial =
      int8::RunInt8Trial(in, {.batch = 256, .threads = 1, .stop = never.fn()});
  ASSERT_TRUE(trial.ok()) << trial.status();
  EXPECT_EQ(never.polls, 7 + 4);

  CountingStop stop(3);
  absl::StatusOr<EvalResult> r = int8::EvaluateInt8(
      *graph_, *eval_, {.batch = 50, .threads = 1, .quant = &trial->plan, .stop = stop.fn()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_EQ(stop.polls, 3);

  // A trial stopped during its calibration never evaluates.
  CountingStop early(2);
  absl::StatusOr<TrialResult> stopped =
      int8::RunInt8Trial(in, {.batch = 256, .threads = 1, .stop = early.fn()});
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(stopped.status().message(), HasSubstr("calibration stopped"));
  EXPECT_EQ(early.polls, 2);
}

TEST_F(StopTest, CalibrationStopsInEitherPassAndIsNotCached) {
  // 640 images in batches of 100: 7 batches per pass, two passes with histograms.
  CountingStop never(0);
  absl::StatusOr<ActivationStatsMap> full =
      CalibrateActivations(*graph_, *train_, {.threads = 1, .stop = never.fn()});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(never.polls, 14);

  for (int stop_at : {1, 3, 9}) {  // before the first batch, in the first pass, in the second
    CountingStop stop(stop_at);
    absl::StatusOr<ActivationStatsMap> r =
        CalibrateActivations(*graph_, *train_, {.threads = 1, .stop = stop.fn()});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << stop_at;
    EXPECT_THAT(r.status().message(), HasSubstr("calibration stopped"));
    EXPECT_EQ(stop.polls, stop_at);
  }

  // A stopped calibration leaves nothing in the cache: the next request computes it in full.
  CalibrationCache cache;
  CountingStop stop(2);
  EXPECT_EQ(cache.GetOrCompute(*graph_, "lenet5", *train_, "train:640",
                               {.threads = 1, .stop = stop.fn()})
                .status()
                .code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(cache.computations(), 0);
  absl::StatusOr<ActivationStatsMap> later =
      cache.GetOrCompute(*graph_, "lenet5", *train_, "train:640", {.threads = 1});
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(cache.computations(), 1);
  ASSERT_EQ(later->size(), full->size());
  for (const auto& [layer, stats] : *full) {
    EXPECT_EQ(later->at(layer).outputs.max, stats.outputs.max) << layer;
  }
}

TEST_F(StopTest, TrainingStopsAtTheNextBatch) {
  // Forward passes counted independently of the StopFn: the input hook of the first conv runs
  // once per training batch.
  std::string first_layer;
  for (const Node& n : graph_->nodes) {
    if (n.op == OpKind::kConv && first_layer.empty()) first_layer = n.name;
  }
  ASSERT_FALSE(first_layer.empty());
  int forward_passes = 0;
  TrainOptions options;
  options.epochs = 100;  // 640 images in batches of 64: 10 steps per epoch, 1000 in all
  options.batch = 64;
  options.threads = 1;
  options.quant.inputs = [&](const std::string& layer, float*, int64_t) {
    forward_passes += layer == first_layer;
  };
  CountingStop stop(4);
  options.stop = stop.fn();
  absl::StatusOr<onnx::ModelProto> r = Train(*model_, *train_, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("training stopped"));
  EXPECT_EQ(stop.polls, 4);
  EXPECT_EQ(forward_passes, 3);

  // Unstopped, the same options run every step with one poll each.
  options.epochs = 2;
  forward_passes = 0;
  CountingStop never(0);
  options.stop = never.fn();
  ASSERT_TRUE(Train(*model_, *train_, options).ok());
  EXPECT_EQ(never.polls, 20);
  EXPECT_EQ(forward_passes, 20);
}

TEST_F(StopTest, FinetuneTrialStopsInsideTraining) {
  // Weights only: no calibration. The first RunTrial polls 4 times (1000 images in batches of
  // 256), then training polls once per step of a million; the 7th poll is training's third.
  absl::StatusOr<quant::QuantConfig> config =
      quant::ParseQuantConfig(R"({"default": {"weights": "fixed:6"}})");
  ASSERT_TRUE(config.ok()) << config.status();
  TrialInputs in{.eval = eval_, .config = &*config};
  TrainOptions train_options;
  train_options.max_steps = 1'000'000;
  train_options.batch = 64;
  train_options.threads = 1;
  CountingStop stop(7);
  absl::StatusOr<FinetuneResult> r = FinetuneTrial(
      *model_, in, *train_, train_options, {.batch = 256, .threads = 1, .stop = stop.fn()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("training stopped"));
  EXPECT_EQ(stop.polls, 7);
}

}  // namespace
}  // namespace bitsweep::engine
