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
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "server/export/qdq.h"
#include "tests/cli/run_binary.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/int8/int8_network.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/trial.h"
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
struct Bound {
  const char* optimization;
  double output_steps;         // max |ours - ORT| in steps of the last layer's output scale
  int argmax_differs;          // of kImages
  int top1_difference;         // images, of kImages
};
constexpr Bound kBounds[] = {{"disabled", 1, 2, 2}, {"all", 3, 8, 6}};

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
  for (const char* model : {"lenet5", "squeezenet-mini", "resnet-mini"}) {
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

int Argmax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// Runs `graph` through `net` on the whole evaluation batch.
engine::Tensor RunOurs(engine::InferenceNetwork& net, const engine::Graph& graph,
                       const engine::Tensor& images) {
  std::map<std::string, engine::Tensor> out;
  absl::Status run = net.Run({{graph.inputs[0].name, &images}}, &out);
  EXPECT_TRUE(run.ok()) << run;
  return out[graph.outputs[0]];
}

// Agreement of ONNX Runtime's logits with ours over the evaluation images.
struct Agreement {
  double max_diff = 0;  // max |ours - ORT|
  double max_out = 0;   // max |ours|
  int top1_ours = 0, top1_ort = 0, argmax_differs = 0;
};

Agreement Compare(const engine::Tensor& ours, const engine::Tensor& theirs,
                  const std::vector<int>& labels) {
  Agreement r;
  const int classes = static_cast<int>(ours.shape()[1]);
  const std::vector<float>& a = ours.floats();
  const std::vector<float>& b = theirs.floats();
  for (size_t i = 0; i < a.size(); ++i) {
    r.max_diff = std::max(r.max_diff, static_cast<double>(std::fabs(a[i] - b[i])));
    r.max_out = std::max(r.max_out, static_cast<double>(std::fabs(a[i])));
  }
  for (int64_t n = 0; n < ours.shape()[0]; ++n) {
    const int ia = Argmax(&a[n * classes], classes), ib = Argmax(&b[n * classes], classes);
    r.top1_ours += ia == labels[n];
    r.top1_ort += ib == labels[n];
    r.argmax_differs += ia != ib;
  }
  return r;
}

TEST_P(OrtAgreementTest, OnnxRuntimeAgreesWithOurExecution) {
  const Case& c = GetParam();
  const std::string model_path = std::string(BITSWEEP_MODELS_DIR) + "/" + c.model + ".onnx";
  const std::string tag = CaseName({c, 0});

  // 1. The trial as a worker reports it (the stored result the export reads). Only its
  // calibrated parameters matter here, so it evaluates just the first kTrialImages.
  v1::EvalSettings settings;
  settings.mutable_dataset()->set_train(kData + "/train");
  settings.mutable_dataset()->set_eval(kData + "/t10k");
  settings.mutable_dataset()->add_mean(kMean);
  settings.mutable_dataset()->add_std(kStd);
  settings.mutable_dataset()->set_eval_limit(kTrialImages);
  settings.mutable_dataset()->set_calibration_samples(kCalibration);
  v1::TrialSpec spec;
  spec.set_config_json(c.config());
  absl::StatusOr<v1::TrialResult> reported =
      executor_->Execute({.hash = c.model, .path = model_path}, settings, spec, {.threads = 2});
  ASSERT_TRUE(reported.ok()) << reported.status();

  // 2. The QDQ model (BuildQdqModel runs the ONNX checker).
  std::string model_bytes;
  {
    std::ifstream in(model_path, std::ios::binary);
    model_bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  absl::StatusOr<std::string> qdq = server::BuildQdqModel(model_bytes, *reported);
  ASSERT_TRUE(qdq.ok()) << qdq.status();
  const fs::path qdq_path = *dir_ / (tag + ".onnx");
  std::ofstream(qdq_path, std::ios::binary) << *qdq;

  // 3. Our execution of the same trial: the int8 path for symmetric configs, the emulation for
  // asymmetric ones. Calibrated on the same split, so its scales must be the reported ones.
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(model_bytes));
  absl::StatusOr<engine::Graph> graph = engine::ImportOnnxModel(proto, {}, model_path);
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(c.config());
  ASSERT_TRUE(config.ok()) << config.status();
  engine::TrialInputs inputs{.graph = &*graph, .eval = trial_eval_, .calibration = calibration_,
                             .config = &*config, .calibration_cache = calibration_cache_,
                             .model_key = c.model, .calibration_key = "train"};
  const engine::EvalOptions eval_options{.batch = kTrialImages, .threads = 2};
  absl::StatusOr<engine::TrialResult> trial = c.int8_path()
                                                  ? engine::int8::RunInt8Trial(inputs, eval_options)
                                                  : engine::RunTrial(inputs, eval_options);
  ASSERT_TRUE(trial.ok()) << trial.status();
  std::unique_ptr<engine::InferenceNetwork> net;
  if (c.int8_path()) {
    auto n = engine::int8::Int8Network::Create(
        *graph, {.batch = kImages, .threads = 2, .plan = &trial->plan});
    ASSERT_TRUE(n.ok()) << n.status();
    net = *std::move(n);
  } else {
    auto n = engine::Network::Create(*graph, {.batch = kImages, .threads = 2,
                                              .quant = &trial->plan});
    ASSERT_TRUE(n.ok()) << n.status();
    net = *std::move(n);
  }
  auto floats = [](const auto& repeated) { return std::vector<float>(repeated.begin(),
                                                                     repeated.end()); };
  for (const v1::LayerResult& layer : reported->layers()) {
    const quant::LayerQuantPlan& p = trial->plan.at(layer.name());
    EXPECT_EQ(floats(layer.inputs().scale()), p.inputs.scale) << layer.name();
    EXPECT_EQ(floats(layer.outputs().scale()), p.outputs.scale) << layer.name();
    EXPECT_EQ(floats(layer.weights().scale()), net->weight_quantizers().at(layer.name()).scale)
        << layer.name();
  }
  const engine::Tensor ours = RunOurs(*net, *graph, eval_->images);
  // This network is the one the trial measured (`bitsweep eval --int8`, or the emulation the
  // worker reported): the same top-1 on the images both scored.
  engine::Tensor first = ours;
  first.floats().resize(kTrialImages * ours.shape()[1]);
  first.Reshape({kTrialImages, ours.shape()[1]});
  const Agreement same = Compare(first, first, eval_->labels);
  EXPECT_NEAR(trial->eval.top1, static_cast<double>(same.top1_ours) / kTrialImages, 1e-9);
  if (!c.int8_path()) {
    EXPECT_NEAR(reported->top1(), trial->eval.top1, 1e-9);
  }

  // 4. ONNX Runtime on the exported model, without and with its graph optimizations.
  // The last layer's output step (per-tensor scale): the unit of the bounds.
  const v1::LayerResult& last = reported->layers(reported->layers_size() - 1);
  ASSERT_EQ(last.outputs().scale_size(), 1) << last.name();
  const double step = last.outputs().scale(0);
  for (const Bound& bound : kBounds) {
    const fs::path out_dir = *dir_ / absl::StrCat(tag, "_", bound.optimization);
    const testing::CommandResult ort = testing::RunCommandLine(absl::StrCat(
        BITSWEEP_NODE, " ", BITSWEEP_ORT_RUN, " --threads 2 --optimization ",
        bound.optimization, " --model ", qdq_path.string(), " --input input=",
        (*dir_ / "images.pb").string(), " --output-dir ", out_dir.string()));
    ASSERT_EQ(ort.exit_code, 0) << ort.out
                                << "\n(ONNX Runtime is installed by deploy/install-deps.sh)";
    absl::StatusOr<engine::Tensor> theirs =
        engine::ReadTensorProtoFile((out_dir / (graph->outputs[0] + ".pb")).string());
    ASSERT_TRUE(theirs.ok()) << theirs.status();
    ASSERT_EQ(theirs->shape(), ours.shape());

    const Agreement r = Compare(ours, *theirs, eval_->labels);
    std::printf("%-34s ORT %-8s max|ours-ORT| %.4f = %.2f%% of max|out| %.2f = %.1f steps; "
                "top-1 %s %.1f%% ORT %.1f%%; argmax differs on %d/%lld\n",
                tag.c_str(), bound.optimization, r.max_diff, 100 * r.max_diff / r.max_out,
                r.max_out, r.max_diff / step, c.int8_path() ? "int8" : "emul",
                100.0 * r.top1_ours / kImages, 100.0 * r.top1_ort / kImages, r.argmax_differs,
                static_cast<long long>(kImages));
    EXPECT_LE(r.max_diff, (bound.output_steps + 0.01) * step) << bound.optimization;
    EXPECT_LE(r.argmax_differs, bound.argmax_differs) << bound.optimization;
    EXPECT_LE(std::abs(r.top1_ours - r.top1_ort), bound.top1_difference) << bound.optimization;
  }
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
