#include "tests/export/ort_agreement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "server/export/qdq.h"
#include "tests/cli/run_binary.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/int8/int8_network.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::testing {
namespace {

namespace fs = std::filesystem;

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

std::vector<float> Floats(const google::protobuf::RepeatedField<float>& repeated) {
  return {repeated.begin(), repeated.end()};
}

}  // namespace

void CheckOrtAgreement(const OrtAgreementCase& c, const std::vector<OrtBound>& bounds) {
  const int64_t images = c.eval->size(), trial_images = c.trial_eval->size();

  // 1. The trial as a worker reports it (the stored result the export reads).
  v1::TrialSpec spec;
  spec.set_config_json(c.config_json);
  absl::StatusOr<v1::TrialResult> reported = c.executor->Execute(
      {.hash = c.model_key, .path = c.model_path}, c.settings, spec, {.threads = c.threads});
  ASSERT_TRUE(reported.ok()) << reported.status();

  // 2. The QDQ model (BuildQdqModel runs the ONNX checker).
  std::string model_bytes;
  {
    std::ifstream in(c.model_path, std::ios::binary);
    model_bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  absl::StatusOr<std::string> qdq = server::BuildQdqModel(model_bytes, *reported);
  ASSERT_TRUE(qdq.ok()) << qdq.status();
  const fs::path qdq_path = c.work_dir / (c.tag + ".onnx");
  std::ofstream(qdq_path, std::ios::binary) << *qdq;

  // 3. Our execution of the same trial, calibrated on the same split, so its scales must be the
  // reported ones.
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(model_bytes));
  absl::StatusOr<engine::Graph> graph = engine::ImportOnnxModel(proto, {}, c.model_path);
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<quant::QuantConfig> config =
      quant::ParseQuantConfig(c.config_json);
  ASSERT_TRUE(config.ok()) << config.status();
  engine::TrialInputs inputs{.graph = &*graph, .eval = c.trial_eval,
                             .calibration = c.calibration, .config = &*config,
                             .calibration_cache = c.cache, .model_key = c.model_key,
                             .calibration_key = c.calibration_key};
  const engine::EvalOptions eval_options{.batch = trial_images, .threads = c.threads};
  absl::StatusOr<engine::TrialResult> trial =
      c.int8_path ? engine::int8::RunInt8Trial(inputs, eval_options)
                  : engine::RunTrial(inputs, eval_options);
  ASSERT_TRUE(trial.ok()) << trial.status();
  std::unique_ptr<engine::InferenceNetwork> net;
  if (c.int8_path) {
    auto n = engine::int8::Int8Network::Create(
        *graph, {.batch = images, .threads = c.threads, .plan = &trial->plan});
    ASSERT_TRUE(n.ok()) << n.status();
    net = *std::move(n);
  } else {
    auto n = engine::Network::Create(*graph, {.batch = images, .threads = c.threads,
                                              .quant = &trial->plan});
    ASSERT_TRUE(n.ok()) << n.status();
    net = *std::move(n);
  }
  for (const v1::LayerResult& layer : reported->layers()) {
    const quant::LayerQuantPlan& p = trial->plan.at(layer.name());
    EXPECT_EQ(Floats(layer.inputs().scale()), p.inputs.scale) << layer.name();
    EXPECT_EQ(Floats(layer.outputs().scale()), p.outputs.scale) << layer.name();
    EXPECT_EQ(Floats(layer.weights().scale()), net->weight_quantizers().at(layer.name()).scale)
        << layer.name();
  }
  const engine::Tensor ours = RunOurs(*net, *graph, c.eval->images);
  if (c.int8_path) {
    // Our own two executions of the trial differ too (exact integer accumulation against fp32
    // emulation: codes at rounding ties flip): the noise floor ORT's differences compare with.
    auto emulation = engine::Network::Create(*graph, {.batch = images, .threads = c.threads,
                                                      .quant = &trial->plan});
    ASSERT_TRUE(emulation.ok()) << emulation.status();
    const Agreement floor =
        Compare(ours, RunOurs(**emulation, *graph, c.eval->images), c.eval->labels);
    std::printf("%-34s ours: int8 vs emulation max %.4f = %.1f steps; argmax differs on %d/%lld\n",
                c.tag.c_str(), floor.max_diff,
                floor.max_diff / reported->layers(reported->layers_size() - 1).outputs().scale(0),
                floor.argmax_differs, static_cast<long long>(images));
  }
  ASSERT_EQ(ours.shape().size(), 2u);
  // This network is the one the trial measured (`bitsweep eval --int8`, or the emulation the
  // worker reported): the same top-1 on the images both scored (the comparison images start
  // with the trial's).
  engine::Tensor first = ours;
  first.floats().resize(trial_images * ours.shape()[1]);
  first.Reshape({trial_images, ours.shape()[1]});
  const Agreement same = Compare(first, first, c.trial_eval->labels);
  EXPECT_NEAR(trial->eval.top1, static_cast<double>(same.top1_ours) / trial_images, 1e-9);
  if (!c.int8_path) {
    EXPECT_NEAR(reported->top1(), trial->eval.top1, 1e-9);
  }

  // 4. ONNX Runtime on the exported model at each optimization level. The last layer's output
  // step (per-tensor scale) is the unit of the bounds.
  const v1::LayerResult& last = reported->layers(reported->layers_size() - 1);
  ASSERT_EQ(last.outputs().scale_size(), 1) << last.name();
  const double step = last.outputs().scale(0);
  for (const OrtBound& bound : bounds) {
    const fs::path out_dir = c.work_dir / absl::StrCat(c.tag, "_", bound.optimization);
    const CommandResult ort = RunCommandLine(absl::StrCat(
        BITSWEEP_NODE, " ", BITSWEEP_ORT_RUN, " --threads ", c.threads, " --optimization ",
        bound.optimization, " --model ", qdq_path.string(), " --input ", c.input_name, "=",
        c.eval_tensor_path, " --output-dir ", out_dir.string()));
    ASSERT_EQ(ort.exit_code, 0) << ort.out
                                << "\n(ONNX Runtime is installed by deploy/install-deps.sh)";
    absl::StatusOr<engine::Tensor> theirs =
        engine::ReadTensorProtoFile((out_dir / (graph->outputs[0] + ".pb")).string());
    ASSERT_TRUE(theirs.ok()) << theirs.status();
    ASSERT_EQ(theirs->shape(), ours.shape());

    const Agreement r = Compare(ours, *theirs, c.eval->labels);
    std::printf("%-34s ORT %-8s max|ours-ORT| %.4f = %.2f%% of max|out| %.2f = %.1f steps; "
                "top-1 %s %.1f%% ORT %.1f%%; argmax differs on %d/%lld\n",
                c.tag.c_str(), bound.optimization, r.max_diff, 100 * r.max_diff / r.max_out,
                r.max_out, r.max_diff / step, c.int8_path ? "int8" : "emul",
                100.0 * r.top1_ours / images, 100.0 * r.top1_ort / images, r.argmax_differs,
                static_cast<long long>(images));
    std::fflush(stdout);
    // A step is compared with 1% slack for the float rounding of (code - zero point) * scale.
    EXPECT_LE(r.max_diff, (bound.output_steps + 0.01) * step) << bound.optimization;
    EXPECT_LE(r.argmax_differs, bound.argmax_differs) << bound.optimization;
    EXPECT_LE(std::abs(r.top1_ours - r.top1_ort), bound.top1_difference) << bound.optimization;
  }
}

onnx::ModelProto BiasFreeLinearMlp() {
  uint32_t state = 2026;
  auto weights = [&state](int64_t out, int64_t in) {
    std::vector<float> w(out * in);
    const float bound = 3.0f / std::sqrt(static_cast<float>(in));
    for (float& v : w) {
      state = state * 1664525u + 1013904223u;
      v = bound * (2.0f * static_cast<float>(state >> 8) / static_cast<float>(1u << 24) - 1.0f);
    }
    return engine::Tensor::Float({out, in}, std::move(w));
  };
  engine::OnnxGraphBuilder b("bias_free_linear_mlp", /*opset=*/13);
  b.AddInput("input", {engine::kBatchDim, 1, 28, 28});
  b.AddInitializer("fc1.weight", weights(64, 784));
  b.AddInitializer("fc2.weight", weights(10, 64));
  b.AddNode("Flatten", "/Flatten", {"input"}, {"flat"});
  b.AddNode("Transpose", "/fc1/Transpose", {"fc1.weight"}, {"fc1.weight_t"},
            {engine::IntsAttr("perm", {1, 0})});
  b.AddNode("MatMul", "/fc1/MatMul", {"flat", "fc1.weight_t"}, {"h"});
  b.AddNode("Relu", "/relu/Relu", {"h"}, {"h_relu"});
  b.AddNode("Identity", "/fc2/Identity", {"fc2.weight"}, {"fc2.weight_shared"});
  b.AddNode("Transpose", "/fc2/Transpose", {"fc2.weight_shared"}, {"fc2.weight_t"});
  b.AddNode("MatMul", "/fc2/MatMul", {"h_relu", "fc2.weight_t"}, {"output"});
  b.AddOutput("output", engine::Shape{engine::kBatchDim, 10});
  return b.Build();
}

}  // namespace bitsweep::testing
