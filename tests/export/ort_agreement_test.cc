// QDQ exports in ONNX Runtime: every int:8 trial of the committed zoo models (models/: lenet5,
// squeezenet-mini, resnet-mini), symmetric and asymmetric, per tensor and per channel, is run
// by a worker's TrialExecutor (what the service stores), exported with BuildQdqModel (which runs
// the ONNX checker), loaded and run by ONNX Runtime (npm's onnxruntime-node through
// tests/export/ort/ort_run.js) on 1,000 Fashion-MNIST test images, and compared with our own
// execution of the same trial on the same images: the true int8 path (worker/engine/int8/, what
// `bitsweep eval --int8` runs) for symmetric configs, the emulation (what `bitsweep eval
// --config` runs) for asymmetric ones, which the int8 path refuses.
//
// ONNX Runtime runs each model twice:
// - graph optimizations off: it executes the QDQ graph as written (float operators on
//   dequantized values), the export's literal meaning. Our codes differ only where a value lies
//   within float rounding of a rounding tie (summation order) or beyond the calibrated range
//   (QuantizeLinear saturates at -128, our symmetric grid at -127).
// - all optimizations (ORT's default, what users get): it fuses the QDQ groups into integer
//   QLinearConv / QGemm kernels and, doing so, rounds each float bias to int32 units of
//   s_in * s_w (we keep biases in float) and requantizes with its own float multiplier; that
//   moves some accumulators across a rounding boundary, so some activation codes differ by one
//   and the logits by a few output steps.
// Measured on this data (docs/QUANTIZATION.md, "QDQ export"), in steps of the last quantized
// layer's output scale (squeezenet-mini averages its last conv's codes, so its logits move by
// fractions of a step): without optimizations at most 1 step, argmax different on at most 1 of
// 1,000 images (a near-tie of two averaged logits), top-1 by at most 0.1 point; with them at most
// 2 steps, argmax different on at most 5 images, top-1 by at most 0.4 point. Asserted just above
// that: without optimizations <= 1 step, <= 2 argmax changes, top-1 within 0.2 point; with them
// <= 3 steps, <= 8 argmax changes, top-1 within 0.6 point. A step is compared with 1% slack for
// the float rounding of (code - zero point) * scale.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/cli/run_binary.h"
#include "tests/export/ort_agreement.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/trial_executor.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kImages = 1000;          // Fashion-MNIST t10k, the first ones
constexpr int64_t kTrialImages = 50;       // the trials' own evaluation (their plan is needed)
constexpr int64_t kCalibration = 1000;     // train, the first ones (the service's default)
constexpr float kMean = 0.2860f, kStd = 0.3530f;
const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;

// The bounds (see the top of the file), per ONNX Runtime graph optimization level.
const std::vector<testing::OrtBound> kBounds = {{"disabled", 1, 2, 2}, {"all", 3, 8, 6}};

// Not a zoo file: testing::BiasFreeLinearMlp (MatMul weights through Transpose and Identity, as
// PyTorch exports a bias-free Linear), written by the suite's set-up.
constexpr char kMlp[] = "bias-free-linear-mlp";

struct Case {
  std::string model;       // file in models/
  std::string weights;     // int:8 weight format
  std::string activations;  // int:8 activation format
  bool int8_path() const { return activations == "int:8:sym"; }
  std::string config() const {
    return absl::StrCat(R"({"default": {"weights": ")", weights, R"(", "inputs": ")", activations,
                        R"(", "outputs": ")", activations, R"("}})");
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " " << c.config(); }

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string name = absl::StrCat(info.param.model, "_", info.param.weights.substr(6), "_",
                                  info.param.activations.substr(6));
  std::replace_if(name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
  return name;
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* model : {"lenet5", "squeezenet-mini", "resnet-mini", kMlp}) {
    for (const char* granularity : {"tensor", "channel"}) {
      cases.push_back({model, absl::StrCat("int:8:sym:", granularity), "int:8:sym"});
      cases.push_back({model, absl::StrCat("int:8:asym:", granularity), "int:8:asym"});
    }
  }
  return cases;
}

class OrtAgreementTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::path(::testing::TempDir()) /
                        absl::StrCat("ort_agreement_", ::getpid()));
    fs::create_directories(*dir_);
    engine::Preprocessing eval_pre{.mean = {kMean}, .std = {kStd}, .limit = kImages};
    engine::Preprocessing calibration_pre{.mean = {kMean}, .std = {kStd}, .limit = kCalibration};
    absl::StatusOr<engine::Dataset> eval = engine::LoadDataset(kData + "/t10k", eval_pre);
    absl::StatusOr<engine::Dataset> calibration =
        engine::LoadDataset(kData + "/train", calibration_pre);
    ASSERT_TRUE(eval.ok()) << eval.status();
    ASSERT_TRUE(calibration.ok()) << calibration.status();
    eval_ = new engine::Dataset(*std::move(eval));
    trial_eval_ = new engine::Dataset(*eval_);
    trial_eval_->images.floats().resize(kTrialImages * engine::NumElements(eval_->sample_shape()));
    trial_eval_->images.Reshape({kTrialImages, 1, 28, 28});
    trial_eval_->labels.resize(kTrialImages);
    calibration_ = new engine::Dataset(*std::move(calibration));
    // The images exactly as our networks see them (normalized), for ONNX Runtime.
    ASSERT_TRUE(engine::WriteTensorProtoFile((*dir_ / "images.pb").string(), "input",
                                             eval_->images).ok());
    executor_ = new worker::TrialExecutor();
    calibration_cache_ = new engine::CalibrationCache();
    ASSERT_TRUE(engine::SaveModel(testing::BiasFreeLinearMlp(), ModelPath(kMlp)).ok());
  }
  static std::string ModelPath(const std::string& model) {
    return model == kMlp ? (*dir_ / (model + ".onnx")).string()
                         : std::string(BITSWEEP_MODELS_DIR) + "/" + model + ".onnx";
  }
  static void TearDownTestSuite() {
    delete calibration_cache_;
    delete executor_;
    delete calibration_;
    delete trial_eval_;
    delete eval_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  static fs::path* dir_;
  static engine::Dataset* eval_;
  static engine::Dataset* trial_eval_;  // the first kTrialImages of eval_
  static engine::Dataset* calibration_;
  static worker::TrialExecutor* executor_;
  static engine::CalibrationCache* calibration_cache_;  // one calibration per model
};

fs::path* OrtAgreementTest::dir_ = nullptr;
engine::Dataset* OrtAgreementTest::eval_ = nullptr;
engine::Dataset* OrtAgreementTest::trial_eval_ = nullptr;
engine::Dataset* OrtAgreementTest::calibration_ = nullptr;
worker::TrialExecutor* OrtAgreementTest::executor_ = nullptr;
engine::CalibrationCache* OrtAgreementTest::calibration_cache_ = nullptr;

TEST_P(OrtAgreementTest, OnnxRuntimeAgreesWithOurExecution) {
  const Case& c = GetParam();
  // The trial evaluates just the first kTrialImages: only its calibrated parameters matter.
  v1::EvalSettings settings;
  settings.mutable_dataset()->set_train(kData + "/train");
  settings.mutable_dataset()->set_eval(kData + "/t10k");
  settings.mutable_dataset()->add_mean(kMean);
  settings.mutable_dataset()->add_std(kStd);
  settings.mutable_dataset()->set_eval_limit(kTrialImages);
  settings.mutable_dataset()->set_calibration_samples(kCalibration);
  testing::CheckOrtAgreement(
      {.model_path = ModelPath(c.model),
       .model_key = c.model,
       .config_json = c.config(),
       .int8_path = c.int8_path(),
       .settings = settings,
       .calibration = calibration_,
       .trial_eval = trial_eval_,
       .calibration_key = "train",
       .cache = calibration_cache_,
       .eval = eval_,
       .eval_tensor_path = (*dir_ / "images.pb").string(),
       .input_name = "input",
       .work_dir = *dir_,
       .tag = CaseName({c, 0}),
       .executor = executor_},
      kBounds);
}

INSTANTIATE_TEST_SUITE_P(Zoo, OrtAgreementTest, ::testing::ValuesIn(AllCases()), CaseName);

// ort_run.js itself, on ONNX's backend node tests whose operators are exact in any runtime: the
// tensors it reads (float, int64, uint8, inputs named by the file or by NAME=) and writes (float,
// double, int64, uint8, bool) equal ONNX's expected outputs byte for byte.
TEST(OrtRunTest, ReadsAndWritesTensorsLikeOnnxsNodeTests) {
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("ort_run_", ::getpid());
  for (const char* name : {"test_gather_0", "test_cast_FLOAT_to_DOUBLE",
                           "test_argmax_default_axis_example", "test_add_uint8", "test_equal",
                           "test_quantizelinear", "test_dequantizelinear_axis"}) {
    const fs::path test = fs::path(BITSWEEP_ONNX_TESTDATA_DIR) / "node" / name;
    onnx::ModelProto model;
    {
      std::ifstream in(test / "model.onnx", std::ios::binary);
      ASSERT_TRUE(model.ParseFromIstream(&in)) << test;
    }
    std::string inputs;
    for (int i = 0; i < model.graph().input_size(); ++i) {
      const fs::path file = test / "test_data_set_0" / absl::StrCat("input_", i, ".pb");
      // The first input by the name stored in the file, the others by NAME=.
      inputs += i == 0 ? absl::StrCat(" --input ", file.string())
                       : absl::StrCat(" --input ", model.graph().input(i).name(), "=",
                                      file.string());
    }
    const testing::CommandResult r = testing::RunCommandLine(absl::StrCat(
        BITSWEEP_NODE, " ", BITSWEEP_ORT_RUN, " --model ", (test / "model.onnx").string(), inputs,
        " --output-dir ", (dir / name).string()));
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.out;
    for (int i = 0; i < model.graph().output_size(); ++i) {
      onnx::TensorProto expected, written;
      std::ifstream e(test / "test_data_set_0" / absl::StrCat("output_", i, ".pb"),
                      std::ios::binary);
      std::ifstream w(dir / name / (model.graph().output(i).name() + ".pb"), std::ios::binary);
      ASSERT_TRUE(expected.ParseFromIstream(&e)) << name;
      ASSERT_TRUE(written.ParseFromIstream(&w)) << name << ": " << r.out;
      EXPECT_EQ(written.name(), model.graph().output(i).name()) << name;
      EXPECT_EQ(written.data_type(), expected.data_type()) << name;
      EXPECT_EQ(std::vector<int64_t>(written.dims().begin(), written.dims().end()),
                std::vector<int64_t>(expected.dims().begin(), expected.dims().end()))
          << name;
      ASSERT_FALSE(expected.raw_data().empty()) << name;
      EXPECT_EQ(written.raw_data(), expected.raw_data()) << name;
    }
  }
  // Errors name the problem.
  const testing::CommandResult missing = testing::RunCommandLine(absl::StrCat(
      BITSWEEP_NODE, " ", BITSWEEP_ORT_RUN, " --model /nonexistent.onnx --input x=/dev/null",
      " --output-dir ", dir.string()));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("/nonexistent.onnx"), std::string::npos) << missing.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bitsweep
