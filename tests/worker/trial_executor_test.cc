// TrialExecutor on the committed LeNet-5 and Fashion-MNIST: its results equal the engine's own
// (Evaluate, RunTrial) on the same data, every TrialResult field a hardware flow needs is filled,
// errors are classified, and concurrent executions give the sequential results.
#include "worker/trial_executor.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/trial.h"

namespace bitsweep::worker {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = BITSWEEP_MODELS_DIR "/lenet5.onnx";
constexpr char kEvalSplit[] = "idx:" BITSWEEP_FASHION_MNIST_DIR "/t10k";
constexpr char kTrainSplit[] = "idx:" BITSWEEP_FASHION_MNIST_DIR "/train";
constexpr int64_t kEvalLimit = 500;
constexpr int64_t kCalibrationSamples = 200;
constexpr float kMean = 0.2860f, kStd = 0.3530f;
constexpr int kThreads = 2;

constexpr char kFixed8[] =
    R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";
constexpr char kInt8[] =
    R"({"default": {"weights": "int:8:sym:channel", "outputs": "int:8:asym"}})";
constexpr char kMixed[] =
    R"({"conv": {"weights": "pow2:5"}, "fc": {"weights": "minifloat:4:3", "outputs": "ufixed:6"}})";

ModelRef Lenet() { return {.hash = "lenet5-test-key", .path = kModel}; }

v1::EvalSettings Settings() {
  v1::EvalSettings s;
  v1::DatasetRef* d = s.mutable_dataset();
  d->set_train(kTrainSplit);
  d->set_eval(kEvalSplit);
  d->add_mean(kMean);
  d->add_std(kStd);
  d->set_eval_limit(kEvalLimit);
  d->set_calibration_samples(kCalibrationSamples);
  return s;
}

v1::TrialSpec Spec(const std::string& config_json) {
  v1::TrialSpec spec;
  spec.set_config_json(config_json);
  return spec;
}

engine::Preprocessing Prep(int64_t limit) {
  engine::Preprocessing p;
  p.mean = {kMean};
  p.std = {kStd};
  p.limit = limit;
  return p;
}

// Timing fields differ between runs of the same trial; everything else must not.
v1::TrialResult WithoutTimes(v1::TrialResult r) {
  r.clear_wall_seconds();
  r.clear_images_per_second();
  return r;
}

class TrialExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    executor_ = new TrialExecutor({.threads = kThreads});
    auto graph = engine::ImportOnnxFile(kModel);
    ASSERT_TRUE(graph.ok()) << graph.status();
    graph_ = new engine::Graph(*std::move(graph));
    auto eval = engine::LoadDataset(kEvalSplit, Prep(kEvalLimit));
    ASSERT_TRUE(eval.ok()) << eval.status();
    eval_ = new engine::Dataset(*std::move(eval));
    auto calibration = engine::LoadDataset(kTrainSplit, Prep(kCalibrationSamples));
    ASSERT_TRUE(calibration.ok()) << calibration.status();
    calibration_ = new engine::Dataset(*std::move(calibration));
  }
  static void TearDownTestSuite() {
    delete executor_;
    delete graph_;
    delete eval_;
    delete calibration_;
  }

  static TrialExecutor* executor_;
  static engine::Graph* graph_;
  static engine::Dataset* eval_;
  static engine::Dataset* calibration_;
};

TrialExecutor* TrialExecutorTest::executor_ = nullptr;
engine::Graph* TrialExecutorTest::graph_ = nullptr;
engine::Dataset* TrialExecutorTest::eval_ = nullptr;
engine::Dataset* TrialExecutorTest::calibration_ = nullptr;

TEST_F(TrialExecutorTest, Fp32ConfigMatchesEvaluate) {
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), Settings(), Spec("{}"));
  ASSERT_TRUE(r.ok()) << r.status();

  auto expected = engine::Evaluate(*graph_, *eval_, {.batch = 256, .threads = kThreads});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(r->top1(), expected->top1);
  EXPECT_EQ(r->top5(), expected->top5);
  EXPECT_DOUBLE_EQ(r->loss(), expected->loss);
  EXPECT_EQ(r->samples(), kEvalLimit);
  EXPECT_GT(r->top1(), 0.8);  // a 90% model on 500 samples

  EXPECT_EQ(r->engine_version(), kEngineVersion);
  EXPECT_EQ(r->hardware_profile(), "horowitz-isscc2014-45nm");
  EXPECT_GT(r->wall_seconds(), 0);
  EXPECT_GT(r->images_per_second(), 0);
  EXPECT_FALSE(r->has_top1_before_finetune());
  EXPECT_TRUE(r->worker_id().empty());  // the Worker fills it

  ASSERT_FALSE(r->layers().empty());
  int64_t weight_bits = 0, macs = 0, bops = 0;
  double energy = 0;
  for (const v1::LayerResult& l : r->layers()) {
    SCOPED_TRACE(l.name());
    EXPECT_FALSE(l.name().empty());
    EXPECT_THAT(l.layer_class(), ::testing::AnyOf("conv", "fc"));
    for (const v1::QuantParams* q : {&l.weights(), &l.inputs(), &l.outputs()}) {
      EXPECT_EQ(q->format(), "fp32");
      EXPECT_EQ(q->bits(), 32);
      EXPECT_FALSE(q->has_fractional_bits());
      EXPECT_EQ(q->description(), "fp32");
    }
    EXPECT_GT(l.macs(), 0);
    EXPECT_GT(l.weight_count(), 0);
    EXPECT_GE(l.weight_bits(), 32 * l.weight_count());
    EXPECT_EQ(l.bops(), l.macs() * 32 * 32);
    EXPECT_FALSE(l.has_input_range());  // not asked for
    weight_bits += l.weight_bits();
    macs += l.macs();
    bops += l.bops();
    energy += l.energy_pj();
  }
  EXPECT_EQ(r->size_bits(), weight_bits);
  EXPECT_EQ(r->macs(), macs);
  EXPECT_EQ(r->bops(), bops);
  EXPECT_NEAR(r->energy_pj(), energy, 1e-6 * energy);
  EXPECT_GT(r->activation_bits(), 0);
  EXPECT_GT(r->peak_activation_bits(), 0);
  EXPECT_LE(r->peak_activation_bits(), r->activation_bits());
}

TEST_F(TrialExecutorTest, Fixed8MatchesRunTrialAndCarriesFractionalBits) {
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), Settings(), Spec(kFixed8));
  ASSERT_TRUE(r.ok()) << r.status();

  auto config = quant::ParseQuantConfig(kFixed8);
  ASSERT_TRUE(config.ok()) << config.status();
  engine::TrialInputs in;
  in.graph = graph_;
  in.eval = eval_;
  in.calibration = calibration_;
  in.config = &*config;
  auto expected = engine::RunTrial(in, {.batch = 256, .threads = kThreads});
  ASSERT_TRUE(expected.ok()) << expected.status();

  EXPECT_EQ(r->top1(), expected->eval.top1);
  EXPECT_DOUBLE_EQ(r->loss(), expected->eval.loss);
  EXPECT_EQ(r->size_bits(), expected->cost.total.weight_bits);
  EXPECT_DOUBLE_EQ(r->energy_pj(), expected->cost.total.energy_pj);
  EXPECT_EQ(r->bops(), expected->cost.total.bops);
  EXPECT_EQ(r->peak_activation_bits(), expected->cost.peak_activation_bits);

  ASSERT_EQ(r->layers_size(), static_cast<int>(expected->layers.size()));
  for (int i = 0; i < r->layers_size(); ++i) {
    const v1::LayerResult& l = r->layers(i);
    SCOPED_TRACE(l.name());
    EXPECT_EQ(l.name(), expected->layers[i].name);
    const auto& plan = expected->plan.at(l.name());
    const auto& weights = expected->eval.weight_quantizers.at(l.name());
    for (const v1::QuantParams* q : {&l.weights(), &l.inputs(), &l.outputs()}) {
      EXPECT_EQ(q->format(), "fixed:8");
      EXPECT_EQ(q->bits(), 8);
      ASSERT_TRUE(q->has_fractional_bits());
      EXPECT_THAT(q->description(), HasSubstr("FL="));
      EXPECT_TRUE(q->scale().empty());
    }
    EXPECT_EQ(l.weights().fractional_bits(), weights.fractional_bits);
    EXPECT_EQ(l.inputs().fractional_bits(), plan.inputs.fractional_bits);
    EXPECT_EQ(l.outputs().fractional_bits(), plan.outputs.fractional_bits);
    EXPECT_EQ(l.weights().description(), engine::DescribeQuantizer(weights));
    EXPECT_EQ(l.bops(), l.macs() * 8 * 8);
    EXPECT_DOUBLE_EQ(l.energy_pj(), expected->cost.layers[i].energy_pj);
  }
}

TEST_F(TrialExecutorTest, IntAndPow2FormatsCarryTheirParameters) {
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), Settings(), Spec(kInt8));
  ASSERT_TRUE(r.ok()) << r.status();
  for (const v1::LayerResult& l : r->layers()) {
    SCOPED_TRACE(l.name());
    EXPECT_EQ(l.weights().format(), "int:8:sym:channel");
    // One scale per output channel: the first dimension of the weights.
    EXPECT_GT(l.weights().scale_size(), 1);
    EXPECT_EQ(l.weights().zero_point_size(), l.weights().scale_size());
    EXPECT_EQ(l.outputs().format(), "int:8:asym:tensor");
    ASSERT_EQ(l.outputs().scale_size(), 1);
    EXPECT_GT(l.outputs().scale(0), 0);
    EXPECT_EQ(l.outputs().zero_point_size(), 1);
    EXPECT_THAT(l.outputs().description(), HasSubstr("scale="));
    EXPECT_EQ(l.inputs().format(), "fp32");
  }

  absl::StatusOr<v1::TrialResult> mixed = executor_->Execute(Lenet(), Settings(), Spec(kMixed));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  for (const v1::LayerResult& l : mixed->layers()) {
    SCOPED_TRACE(l.name());
    if (l.layer_class() == "conv") {
      EXPECT_EQ(l.weights().format(), "pow2:5");
      EXPECT_TRUE(l.weights().has_max_exponent());
      EXPECT_THAT(l.weights().description(), HasSubstr("e_max="));
    } else {
      EXPECT_EQ(l.weights().format(), "minifloat:4:3");
      EXPECT_EQ(l.weights().bits(), 8);
      EXPECT_EQ(l.outputs().format(), "ufixed:6");
      EXPECT_TRUE(l.outputs().has_fractional_bits());
    }
  }
}

TEST_F(TrialExecutorTest, CollectRangesFillsCalibrationRanges) {
  v1::TrialSpec spec = Spec("{}");
  spec.set_collect_ranges(true);
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), Settings(), spec);
  ASSERT_TRUE(r.ok()) << r.status();

  auto stats = engine::CalibrateActivations(*graph_, *calibration_,
                                            {.threads = kThreads, .histograms = false});
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_FALSE(r->layers().empty());
  for (const v1::LayerResult& l : r->layers()) {
    SCOPED_TRACE(l.name());
    ASSERT_TRUE(l.has_input_range());
    ASSERT_TRUE(l.has_output_range());
    const auto& s = stats->at(l.name());
    EXPECT_EQ(l.input_range().min(), s.inputs.min);
    EXPECT_EQ(l.input_range().max(), s.inputs.max);
    EXPECT_EQ(l.input_range().count(), s.inputs.count);
    EXPECT_EQ(l.output_range().min(), s.outputs.min);
    EXPECT_EQ(l.output_range().max(), s.outputs.max);
    EXPECT_GT(l.input_range().count(), 0);
    EXPECT_LT(l.input_range().min(), l.input_range().max());
  }
  // Normalized inputs of the first layer go below zero; they come from 200 calibration images.
  EXPECT_LT(r->layers(0).input_range().min(), 0);
  EXPECT_EQ(r->layers(0).input_range().count() % kCalibrationSamples, 0);
}

TEST_F(TrialExecutorTest, CollectSensitivitiesReportsTracesAndEveryFormat) {
  v1::TrialSpec spec = Spec(R"({"seed": 7})");
  spec.set_collect_sensitivities(true);
  for (const char* f : {"fixed:8", "fixed:3"}) {
    spec.add_sensitivity_weight_formats(f);
    spec.add_sensitivity_activation_formats(f);
  }
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), Settings(), spec);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->layers_size(), 5);
  for (const v1::LayerResult& l : r->layers()) {
    SCOPED_TRACE(l.name());
    EXPECT_TRUE(std::isfinite(l.hessian_trace()));
    EXPECT_GT(l.hessian_trace_stderr(), 0);
    ASSERT_EQ(l.weight_sensitivities_size(), 2);
    ASSERT_EQ(l.activation_sensitivities_size(), 2);
    for (int i = 0; i < 2; ++i) {
      const v1::FormatSensitivity& w = l.weight_sensitivities(i);
      EXPECT_EQ(w.format(), spec.sensitivity_weight_formats(i));
      EXPECT_DOUBLE_EQ(w.loss_increase(),
                       0.5 * l.hessian_trace() / l.weight_count() * w.squared_error());
      const v1::FormatSensitivity& a = l.activation_sensitivities(i);
      EXPECT_EQ(a.format(), spec.sensitivity_activation_formats(i));
      EXPECT_EQ(a.loss_increase(), a.measured_loss_increase());
    }
    EXPECT_GT(l.weight_sensitivities(1).squared_error(), l.weight_sensitivities(0).squared_error());
  }
  // The probes follow the config's seed: the same trial again gives the same traces.
  absl::StatusOr<v1::TrialResult> again = executor_->Execute(Lenet(), Settings(), spec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->layers(2).hessian_trace(), r->layers(2).hessian_trace());

  spec.set_sensitivity_weight_formats(1, "fixd:3");
  absl::StatusOr<v1::TrialResult> bad = executor_->Execute(Lenet(), Settings(), spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(IsPermanentError(bad.status())) << bad.status();
  EXPECT_THAT(bad.status().message(), HasSubstr("spec.sensitivity_weight_formats[1]"));
}

TEST_F(TrialExecutorTest, BadConfigIsAPermanentErrorNamingTheProblem) {
  absl::StatusOr<v1::TrialResult> r =
      executor_->Execute(Lenet(), Settings(), Spec(R"({"default": {"weights": "fixd:8"}})"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("fixd:8"));
  EXPECT_THAT(r.status().message(), HasSubstr("spec.config_json"));
  v1::TrialError error = TrialErrorFromStatus(r.status());
  EXPECT_TRUE(error.permanent());
  EXPECT_THAT(error.message(), HasSubstr("fixd:8"));

  // A layer selector naming no layer of this model.
  r = executor_->Execute(Lenet(), Settings(),
                         Spec(R"({"layers": {"no_such_layer": {"weights": "fixed:8"}}})"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("no_such_layer"));

  // Impossible width.
  r = executor_->Execute(Lenet(), Settings(), Spec(R"({"default": {"weights": "fixed:0"}})"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
}

TEST_F(TrialExecutorTest, BadSettingsArePermanentErrors) {
  v1::EvalSettings missing = Settings();
  missing.mutable_dataset()->set_eval("idx:/nonexistent/t10k");
  absl::StatusOr<v1::TrialResult> r = executor_->Execute(Lenet(), missing, Spec("{}"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/t10k"));

  v1::EvalSettings bad_profile = Settings();
  bad_profile.set_hardware_profile_json(R"({"no_such_constant": 1})");
  r = executor_->Execute(Lenet(), bad_profile, Spec("{}"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("hardware_profile_json"));
  EXPECT_THAT(r.status().message(), HasSubstr("no_such_constant"));

  v1::EvalSettings negative = Settings();
  negative.set_batch(-1);
  r = executor_->Execute(Lenet(), negative, Spec("{}"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();

  // Quantized activations need a calibration split.
  v1::EvalSettings no_train = Settings();
  no_train.mutable_dataset()->clear_train();
  r = executor_->Execute(Lenet(), no_train, Spec(kFixed8));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();

  r = executor_->Execute({.hash = "missing-model", .path = "/nonexistent/model.onnx"}, Settings(),
                         Spec("{}"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentError(r.status())) << r.status();
}

TEST_F(TrialExecutorTest, TransientErrorsAreNotPermanent) {
  EXPECT_FALSE(IsPermanentError(absl::InternalError("oneDNN failed")));
  EXPECT_FALSE(IsPermanentError(absl::ResourceExhaustedError("out of memory")));
  EXPECT_FALSE(IsPermanentError(absl::UnavailableError("x")));
  EXPECT_FALSE(TrialErrorFromStatus(absl::DataLossError("truncated")).permanent());
  EXPECT_TRUE(IsPermanentError(absl::UnimplementedError("op")));
  EXPECT_TRUE(IsPermanentError(absl::FailedPreconditionError("shape")));

  std::atomic<bool> cancelled{true};
  absl::StatusOr<v1::TrialResult> r =
      executor_->Execute(Lenet(), Settings(), Spec("{}"), {.cancelled = &cancelled});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(IsPermanentError(r.status()));
}

TEST_F(TrialExecutorTest, HardwareProfileJsonIsUsedAndNamed) {
  v1::EvalSettings settings = Settings();
  settings.set_hardware_profile_json(
      R"({"name": "test-process", "dram_read_32bit_pj": 64.0, "int8_mult_pj": 0.1})");
  absl::StatusOr<v1::TrialResult> custom = executor_->Execute(Lenet(), settings, Spec(kFixed8));
  ASSERT_TRUE(custom.ok()) << custom.status();
  absl::StatusOr<v1::TrialResult> standard = executor_->Execute(Lenet(), Settings(), Spec(kFixed8));
  ASSERT_TRUE(standard.ok()) << standard.status();
  EXPECT_EQ(custom->hardware_profile(), "test-process");
  EXPECT_LT(custom->energy_pj(), standard->energy_pj());  // DRAM 10x cheaper
  EXPECT_EQ(custom->size_bits(), standard->size_bits());
  EXPECT_EQ(custom->top1(), standard->top1());
}

TEST_F(TrialExecutorTest, CachesDatasetsModelsAndCalibrations) {
  TrialExecutor executor({.threads = kThreads});
  for (const char* config : {kFixed8, kFixed8, "{}", kInt8}) {
    absl::StatusOr<v1::TrialResult> r = executor.Execute(Lenet(), Settings(), Spec(config));
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(executor.model_imports(), 1);
  EXPECT_EQ(executor.dataset_loads(), 2);  // the evaluation split and the calibration split
  // fixed:8 calibrates with max only; int:8 asym needs no histogram either (max calibrator).
  EXPECT_EQ(executor.calibrations(), 1);
}

TEST_F(TrialExecutorTest, FinetuningSetsTop1BeforeFinetune) {
  v1::TrialSpec spec = Spec(R"({"default": {"weights": "fixed:4", "outputs": "fixed:8"}})");
  spec.mutable_finetune()->set_steps(3);
  spec.mutable_finetune()->set_batch(32);
  absl::StatusOr<v1::TrialResult> tuned = executor_->Execute(Lenet(), Settings(), spec);
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  ASSERT_TRUE(tuned->has_top1_before_finetune());

  // Before fine-tuning is the plain trial.
  absl::StatusOr<v1::TrialResult> plain =
      executor_->Execute(Lenet(), Settings(), Spec(spec.config_json()));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(tuned->top1_before_finetune(), plain->top1());
  EXPECT_GT(tuned->top1(), 0.5);
  EXPECT_EQ(tuned->samples(), kEvalLimit);
  EXPECT_EQ(tuned->size_bits(), plain->size_bits());
  EXPECT_EQ(tuned->layers(0).weights().format(), "fixed:4");
  EXPECT_TRUE(tuned->layers(0).weights().has_fractional_bits());
}

// Runs `configs` on two threads, each with its own executor or with one shared executor, and
// compares with sequential runs: the engine has no shared mutable state that trials could race on
// (OpenMP thread counts are per calling thread; oneDNN's primitive cache is thread-safe).
void ExpectConcurrentEqualsSequential(bool shared_executor) {
  const std::vector<std::string> configs = {kFixed8, kInt8, kMixed, "{}"};
  std::vector<v1::TrialResult> sequential;
  {
    TrialExecutor executor({.threads = 1});
    for (const std::string& c : configs) {
      auto r = executor.Execute(Lenet(), Settings(), Spec(c));
      ASSERT_TRUE(r.ok()) << r.status();
      sequential.push_back(WithoutTimes(*r));
    }
  }
  auto shared = std::make_shared<TrialExecutor>(TrialExecutorOptions{.threads = 1});
  std::vector<v1::TrialResult> concurrent(configs.size());
  std::vector<absl::Status> statuses(configs.size());
  auto run = [&](size_t first) {
    std::shared_ptr<TrialExecutor> executor =
        shared_executor ? shared : std::make_shared<TrialExecutor>(TrialExecutorOptions{.threads = 1});
    for (size_t i = first; i < configs.size(); i += 2) {
      auto r = executor->Execute(Lenet(), Settings(), Spec(configs[i]));
      statuses[i] = r.status();
      if (r.ok()) concurrent[i] = WithoutTimes(*r);
    }
  };
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  for (size_t i = 0; i < configs.size(); ++i) {
    SCOPED_TRACE(configs[i]);
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    std::string diff;
    google::protobuf::util::MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differencer.Compare(sequential[i], concurrent[i])) << diff;
  }
  if (shared_executor) {
    EXPECT_EQ(shared->model_imports(), 1);
  }
}

TEST_F(TrialExecutorTest, TwoExecutorsOnTwoThreadsGiveSequentialResults) {
  ExpectConcurrentEqualsSequential(/*shared_executor=*/false);
}

TEST_F(TrialExecutorTest, OneExecutorOnTwoThreadsGivesSequentialResults) {
  ExpectConcurrentEqualsSequential(/*shared_executor=*/true);
}

}  // namespace
}  // namespace bitsweep::worker
