// The true int8 path (worker/engine/int8/) against hand-computed integer arithmetic, against an
// independent integer re-computation in this file (int64 accumulation of codes, double
// requantization), against the fp32 emulation (network.h with the same plan), and on the
// committed models: |top1(int8) - top1(emulated)| <= 0.1 point on Fashion-MNIST. Configs the
// int8 path cannot run exactly must be errors naming the layer and the reason.
#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/engine/quant_test_util.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/int8/int8_network.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

using int8::Int8Network;
using int8::Int8NetworkOptions;
using quant::FormatKind;
using quant::NumberFormat;
using quant::Quantizer;

using testing::Format;
using testing::Random;

// int:8:sym activation quantizer clipping at +-range.
Quantizer Activation(float range) {
  return quant::MakeIntQuantizer(Format("int:8"), {-range}, {range},
                                 quant::Rounding::kNearestEven);
}

quant::LayerQuantPlan Int8Layer(const std::string& weights, float in_range, float out_range) {
  quant::LayerQuantPlan p;
  p.weights = Format(weights);
  p.inputs = Activation(in_range);
  if (out_range > 0) p.outputs = Activation(out_range);
  return p;
}

Tensor RunInt8(const Graph& graph, const Tensor& x, const quant::QuantPlan& plan,
               std::unique_ptr<Int8Network>* keep = nullptr) {
  Int8NetworkOptions options;
  options.batch = x.shape()[0];
  options.threads = 2;
  options.plan = &plan;
  absl::StatusOr<std::unique_ptr<Int8Network>> net = Int8Network::Create(graph, options);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return {};
  std::map<std::string, Tensor> out;
  absl::Status run = (*net)->Run({{graph.inputs[0].name, &x}}, &out);
  EXPECT_TRUE(run.ok()) << run;
  Tensor result = out[graph.outputs[0]];
  if (keep) *keep = *std::move(net);
  return result;
}

Tensor RunEmulated(const Graph& graph, const Tensor& x, const quant::QuantPlan& plan) {
  return testing::RunEmulation(graph, x, &plan);
}

// Code of x under a symmetric 8-bit scale, computed independently of format.cc by the int
// formats' rule (PyTorch's fake quantization): x as a float times the float reciprocal of the
// scale, rounded half to even.
int64_t CodeOf(double x, double scale) {
  const float inv = 1.0f / static_cast<float>(scale);
  const double y = static_cast<double>(static_cast<float>(x) * inv);
  return static_cast<int64_t>(std::clamp(std::nearbyint(y), -127.0, 127.0));
}

// ---------------------------------------------------------------------------------------------
// Hand-computed: y = x . B with x = [1.0, -0.25], B = [0.25, -1.0]^T.
//   s_in = 1/127: x codes 127, round(-31.75) = -32 (a signed input: the split path).
//   s_w = max|B| / 127 = 1/127: B codes round(31.75) = 32, -127.
//   acc = 127 * 32 + (-32) * (-127) = 8128; y = 8128 / 127^2 = 64 / 127.
//   s_out = 1/127: output code 64, value 64/127.
TEST(Int8LayerTest, GemmMatchesHandComputedCodes) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 2});
  Tensor w = Tensor::Float({2, 1});
  w.floats() = {0.25f, -1.0f};
  b.AddInitializer("w", w);
  b.AddNode("Gemm", "fc", {"x", "w"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 1});
  absl::StatusOr<Graph> graph = ImportOnnxModel(b.Build());
  ASSERT_TRUE(graph.ok()) << graph.status();
  Tensor x = Tensor::Float({1, 2});
  x.floats() = {1.0f, -0.25f};
  const quant::QuantPlan plan = {{"fc", Int8Layer("int:8", 1.0f, 1.0f)}};
  std::unique_ptr<Int8Network> net;
  const Tensor got = RunInt8(*graph, x, plan, &net);
  ASSERT_EQ(got.num_elements(), 1);
  const float s_out = plan.at("fc").outputs.scale[0];
  EXPECT_EQ(got.floats()[0], static_cast<float>(64.0 * s_out));
  EXPECT_NEAR(got.floats()[0], 64.0 / 127.0, 1e-6);
  EXPECT_EQ(RunEmulated(*graph, x, plan).floats()[0], got.floats()[0]);
  std::printf("fc runs on %s\n", net->layer_implementations().at("fc").c_str());
}

// A conv + ReLU big enough to exercise blocked layouts, per-channel weights, bias, clamping of
// inputs beyond the calibrated range, and the split of a signed input; checked element by element
// against int64 accumulation of codes with double requantization. `group` > 1 makes it a grouped
// convolution (group == ic == oc: depthwise), whose signed input is split within each group.
void ConvCase(const std::string& weights_format, bool relu, int64_t ic = 8, int64_t oc = 16,
              int64_t group = 1) {
  const int64_t n = 4, hw = 12;
  const int64_t icg = ic / group, ocg = oc / group;
  const Tensor w = Random({oc, icg, 3, 3}, 11, -0.5f, 0.5f);
  Tensor bias = Random({oc}, 12, -0.2f, 0.2f);
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, ic, hw, hw});
  b.AddInitializer("w", w);
  b.AddInitializer("b", bias);
  b.AddNode("Conv", "conv", {"x", "w", "b"}, {relu ? "pre" : "y"},
            {IntsAttr("pads", {1, 1, 1, 1}), IntAttr("group", group)});
  if (relu) b.AddNode("Relu", "relu", {"pre"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, oc, hw, hw});
  absl::StatusOr<Graph> graph = ImportOnnxModel(b.Build());
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor x = Random({n, ic, hw, hw}, 13);
  // Inputs reach 1.0 but the input range is 0.8 (values beyond it clamp); output range 2.5
  // (1.0 for a depthwise conv, whose nine-term sums are smaller).
  const float out_range = icg == 1 ? 1.0f : 2.5f;
  const quant::QuantPlan plan = {{"conv", Int8Layer(weights_format, 0.8f, out_range)}};
  std::unique_ptr<Int8Network> net;
  const Tensor got = RunInt8(*graph, x, plan, &net);
  ASSERT_EQ(got.num_elements(), n * oc * hw * hw);
  const Quantizer& wq = net->weight_quantizers().at("conv");
  const double s_in = plan.at("conv").inputs.scale[0], s_out = plan.at("conv").outputs.scale[0];

  int64_t off_by_one = 0, saturated = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < oc; ++o) {
      const double s_w = wq.scale[wq.format.per_channel ? o : 0];
      const int64_t first = (o / ocg) * icg;  // the group's first input channel
      for (int64_t y = 0; y < hw; ++y) {
        for (int64_t z = 0; z < hw; ++z) {
          int64_t acc = 0;
          for (int64_t c = 0; c < icg; ++c) {
            for (int64_t ky = 0; ky < 3; ++ky) {
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t yy = y + ky - 1, zz = z + kx - 1;
                if (yy < 0 || yy >= hw || zz < 0 || zz >= hw) continue;
                const double xv = x.floats()[((i * ic + first + c) * hw + yy) * hw + zz];
                const double wv = w.floats()[((o * icg + c) * 3 + ky) * 3 + kx];
                acc += CodeOf(xv, s_in) * CodeOf(wv, s_w);
              }
            }
          }
          double v = acc * s_in * s_w + bias.floats()[o];
          if (relu) v = std::max(v, 0.0);
          const int64_t want = CodeOf(v, s_out);
          saturated += std::abs(want) == 127;
          const float got_v = got.floats()[((i * oc + o) * hw + y) * hw + z];
          const int64_t got_code = std::llround(got_v / s_out);
          ASSERT_EQ(static_cast<float>(got_code * s_out), got_v) << "not on the output grid";
          ASSERT_LE(std::abs(got_code - want), 1) << i << "," << o << "," << y << "," << z;
          off_by_one += got_code != want;
        }
      }
    }
  }
  // The case must exercise the grid, not just its clamps.
  EXPECT_LE(saturated, got.num_elements() / 10) << weights_format;
  // Only float rounding of the requantization near a rounding midpoint can differ.
  EXPECT_LE(off_by_one, got.num_elements() / 1000) << weights_format;
  // And against the fp32 emulation of the same plan.
  const Tensor emulated = RunEmulated(*graph, x, plan);
  int64_t differ = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    ASSERT_LE(std::fabs(got.floats()[i] - emulated.floats()[i]), s_out * 1.001);
    differ += got.floats()[i] != emulated.floats()[i];
  }
  EXPECT_LE(differ, got.num_elements() / 1000) << weights_format;
  std::printf("%s%s, group %lld (%lld -> %lld channels): %lld/%lld outputs one step off the "
              "integer reference, %lld differ from the emulation, %lld saturated; conv runs on "
              "%s\n",
              weights_format.c_str(), relu ? " + relu" : "", static_cast<long long>(group),
              static_cast<long long>(ic), static_cast<long long>(oc),
              static_cast<long long>(off_by_one), static_cast<long long>(got.num_elements()),
              static_cast<long long>(differ), static_cast<long long>(saturated),
              net->layer_implementations().at("conv").c_str());
}

TEST(Int8LayerTest, ConvPerTensorReluMatchesIntegerReference) { ConvCase("int:8", true); }
TEST(Int8LayerTest, ConvPerChannelSignedOutputMatchesIntegerReference) {
  ConvCase("int:8:sym:channel", false);
}
TEST(Int8LayerTest, GroupedConvMatchesIntegerReference) {
  ConvCase("int:8", true, 8, 16, 4);
  ConvCase("int:8:sym:channel", false, 8, 16, 4);
}
TEST(Int8LayerTest, DepthwiseConvMatchesIntegerReference) {
  ConvCase("int:8", true, 32, 32, 32);
  ConvCase("int:8:sym:channel", false, 32, 32, 32);
}
// A channel multiplier of 2: each input channel feeds two outputs.
TEST(Int8LayerTest, DepthwiseMultiplierConvMatchesIntegerReference) {
  ConvCase("int:8:sym:channel", true, 16, 32, 16);
}

// The plan a trial builds for `graph` under `config_json`, calibrated on `calibration`.
absl::StatusOr<quant::QuantPlan> CalibratedPlan(const Graph& graph, const std::string& config_json,
                                                const Tensor& calibration) {
  ASSIGN_OR_RETURN(quant::QuantConfig config, quant::ParseQuantConfig(config_json));
  Dataset calib;
  calib.images = calibration;
  calib.labels.assign(calibration.shape()[0], 0);
  calib.num_classes = 10;
  const Shape& s = calibration.shape();
  ASSIGN_OR_RETURN(std::vector<quant::LayerInfo> layers,
                   InspectLayers(graph, Shape(s.begin() + 1, s.end())));
  ASSIGN_OR_RETURN(std::vector<quant::LayerFormats> formats, quant::ResolveFormats(config, layers));
  ASSIGN_OR_RETURN(ActivationStatsMap stats, CalibrateActivations(graph, calib, {.batch = 32}));
  return quant::BuildQuantPlan(layers, formats, stats, config);
}

// Whole-network outputs of the int8 path against the emulation of the same calibrated plan: a
// code that flips at a rounding midpoint moves later layers by about one output step, so the
// difference stays within 2% of the largest output. Prints each layer's oneDNN kernel.
void ExpectNetworkMatchesEmulation(const Graph& graph, const std::string& config_json,
                                   const Tensor& calibration, const Tensor& x) {
  absl::StatusOr<quant::QuantPlan> plan = CalibratedPlan(graph, config_json, calibration);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::unique_ptr<Int8Network> net;
  const Tensor got = RunInt8(graph, x, *plan, &net);
  ASSERT_NE(net, nullptr);
  const Tensor want = RunEmulated(graph, x, *plan);
  ASSERT_EQ(got.shape(), want.shape());
  ASSERT_EQ(net->layers().size(), plan->size());
  double max_diff = 0, max_abs = 0;
  int64_t equal = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    max_diff = std::max<double>(max_diff, std::fabs(got.floats()[i] - want.floats()[i]));
    max_abs = std::max<double>(max_abs, std::fabs(want.floats()[i]));
    equal += got.floats()[i] == want.floats()[i];
  }
  EXPECT_GT(max_abs, 0);
  EXPECT_LE(max_diff, 0.02 * max_abs) << "max |int8 - emulated| " << max_diff;
  std::printf("%s: max |int8 - emulated| %.3g of max |out| %.3g; %lld/%lld outputs equal\n",
              config_json.c_str(), max_diff, max_abs, static_cast<long long>(equal),
              static_cast<long long>(got.num_elements()));
  for (const auto& [layer, impl] : net->layer_implementations()) {
    std::printf("  %-18s %s\n", layer.c_str(), impl.c_str());
  }
}

constexpr char kPerTensorConfig[] =
    R"({"default": {"weights": "int:8", "inputs": "int:8", "outputs": "int:8"}})";
constexpr char kPerChannelConfig[] =
    R"({"default": {"weights": "int:8:sym:channel", "inputs": "int:8", "outputs": "int:8"}})";

// The squeezenet-mini architecture (fire modules: concatenated branches on different grids,
// shared inputs, max pooling, global average pooling) with random weights.
TEST(Int8LayerTest, SqueezeNetGraphMatchesEmulation) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("squeezenet-mini", {.seed = 3});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "squeezenet-mini");
  ASSERT_TRUE(graph.ok());
  ExpectNetworkMatchesEmulation(*graph, kPerChannelConfig, Random({64, 1, 28, 28}, 21, -0.8f, 2.0f),
                                Random({16, 1, 28, 28}, 22, -0.8f, 2.0f));
}

// A MobileNetV2 inverted residual block and a grouped convolution, as PyTorch exports them:
// expand 1x1 + BatchNorm + ReLU6 (Clip), depthwise 3x3 + BatchNorm + ReLU6, project 1x1 +
// BatchNorm, residual Add with the block's input; then a grouped 3x3 convolution (4 groups) on
// the signed sum (its input split within each group), ReLU, global average pooling and a Linear.
Graph MobileNetLikeGraph() {
  const int64_t c = 8, expanded = 32, hw = 16, classes = 10;
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, c, hw, hw});
  uint64_t seed = 40;
  auto conv_bn = [&](const std::string& name, const std::string& in, int64_t ic, int64_t oc,
                     int64_t kernel, int64_t group, const std::string& out) {
    const float bound = 1.5f / std::sqrt(static_cast<float>(ic / group * kernel * kernel));
    b.AddInitializer(name + ".w", Random({oc, ic / group, kernel, kernel}, ++seed, -bound, bound));
    const int64_t pad = kernel / 2;
    b.AddNode("Conv", name, {in, name + ".w"}, {name + ".conv"},
              {IntsAttr("pads", {pad, pad, pad, pad}), IntAttr("group", group)});
    b.AddInitializer(name + ".bn.scale", Random({oc}, ++seed, 0.5f, 1.5f));
    b.AddInitializer(name + ".bn.bias", Random({oc}, ++seed, -0.2f, 0.2f));
    b.AddInitializer(name + ".bn.mean", Random({oc}, ++seed, -0.1f, 0.1f));
    b.AddInitializer(name + ".bn.var", Random({oc}, ++seed, 0.5f, 1.5f));
    b.AddNode("BatchNormalization", name + ".bn",
              {name + ".conv", name + ".bn.scale", name + ".bn.bias", name + ".bn.mean",
               name + ".bn.var"},
              {out});
  };
  b.AddFloatInitializer("zero", {}, {0.0f});
  b.AddFloatInitializer("six", {}, {6.0f});
  conv_bn("expand", "x", c, expanded, 1, 1, "expand.bn_out");
  b.AddNode("Clip", "expand.relu6", {"expand.bn_out", "zero", "six"}, {"expand.out"});
  conv_bn("dw", "expand.out", expanded, expanded, 3, expanded, "dw.bn_out");
  b.AddNode("Clip", "dw.relu6", {"dw.bn_out", "zero", "six"}, {"dw.out"});
  conv_bn("project", "dw.out", expanded, c, 1, 1, "project.out");
  b.AddNode("Add", "residual", {"x", "project.out"}, {"block.out"});
  conv_bn("grouped", "block.out", c, 2 * c, 3, 4, "grouped.bn_out");
  b.AddNode("Relu", "grouped.relu", {"grouped.bn_out"}, {"grouped.out"});
  b.AddNode("GlobalAveragePool", "gap", {"grouped.out"}, {"pooled"});
  b.AddNode("Flatten", "flatten", {"pooled"}, {"features"});
  b.AddInitializer("fc.w", Random({classes, 2 * c}, ++seed, -0.5f, 0.5f));
  b.AddInitializer("fc.b", Random({classes}, ++seed, -0.1f, 0.1f));
  b.AddNode("Gemm", "fc", {"features", "fc.w", "fc.b"}, {"y"}, {IntAttr("transB", 1)});
  b.AddOutput("y", Shape{kBatchDim, classes});
  absl::StatusOr<Graph> graph = ImportOnnxModel(b.Build());
  EXPECT_TRUE(graph.ok()) << graph.status();
  return graph.ok() ? *std::move(graph) : Graph{};
}

TEST(Int8LayerTest, MobileNetLikeBlockMatchesEmulation) {
  const Graph graph = MobileNetLikeGraph();
  ASSERT_FALSE(graph.nodes.empty());
  const Tensor calibration = Random({64, 8, 16, 16}, 51, -1.5f, 1.5f);
  const Tensor x = Random({16, 8, 16, 16}, 52, -1.5f, 1.5f);
  ExpectNetworkMatchesEmulation(graph, kPerTensorConfig, calibration, x);
  ExpectNetworkMatchesEmulation(graph, kPerChannelConfig, calibration, x);
}

// ---------------------------------------------------------------------------------------------
// Rejections: the error names the layer and the reason; nothing falls back to the emulation.

class Int8RejectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {.seed = 1});
    ASSERT_TRUE(model.ok());
    absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "lenet5");
    ASSERT_TRUE(graph.ok());
    graph_ = *std::move(graph);
    data_.images = Random({20, 1, 28, 28}, 31, -0.8f, 2.0f);
    data_.labels.assign(20, 1);
    data_.num_classes = 10;
  }
  absl::Status Try(const std::string& json) {
    absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(json);
    EXPECT_TRUE(config.ok()) << config.status();
    TrialInputs in;
    in.graph = &graph_;
    in.eval = &data_;
    in.calibration = &data_;
    in.config = &*config;
    return int8::RunInt8Trial(in, {.batch = 10, .threads = 2}).status();
  }
  void ExpectRejected(const std::string& json, const std::string& layer,
                      const std::string& reason) {
    const absl::Status s = Try(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json << ": " << s;
    EXPECT_NE(s.message().find("layer '" + layer + "'"), std::string::npos) << s;
    EXPECT_NE(s.message().find(reason), std::string::npos) << s;
  }
  Graph graph_;
  Dataset data_;
};

TEST_F(Int8RejectionTest, FixedPointIsRejected) {
  ExpectRejected(
      R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})",
      "conv1", "emulated only");
}

TEST_F(Int8RejectionTest, NarrowIntIsRejected) {
  ExpectRejected(R"({"default": {"weights": "int:8", "inputs": "int:8", "outputs": "int:8"},
                     "layers": {"fc2": {"weights": "int:4"}}})",
                 "fc2", "int:4:sym:tensor: oneDNN's int8 primitives hold 8-bit codes");
}

TEST_F(Int8RejectionTest, AsymmetricIsRejected) {
  ExpectRejected(R"({"default": {"weights": "int:8", "inputs": "int:8:asym", "outputs": "int:8"}})",
                 "conv1", "asymmetric activations");
  ExpectRejected(R"({"default": {"weights": "int:8:asym", "inputs": "int:8", "outputs": "int:8"}})",
                 "conv1", "weight zero points");
}

TEST_F(Int8RejectionTest, WeightsOnlyIsRejected) {
  ExpectRejected(R"({"default": {"weights": "int:8"}})", "conv1", "inputs fp32");
}

TEST_F(Int8RejectionTest, RoundingOtherThanNearestEvenIsRejected) {
  ExpectRejected(R"({"default": {"weights": "int:8", "inputs": "int:8", "outputs": "int:8"},
                     "rounding": "nearest_away"})",
                 "conv1", "round half to even");
}

TEST_F(Int8RejectionTest, NothingInt8IsRejected) {
  const absl::Status s = Try(R"({"default": {"weights": "fp32"}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("quantizes no layer to int:8"), std::string::npos) << s;
}

TEST_F(Int8RejectionTest, MixedInt8AndFp32LayersRun) {
  // fc3 stays fp32: an fp32 primitive after dequantizing fc2's codes.
  const absl::Status s = Try(R"({"default": {"weights": "int:8", "inputs": "int:8",
                                             "outputs": "int:8"},
      "layers": {"fc3": {"weights": "fp32", "inputs": "fp32", "outputs": "fp32"}}})");
  EXPECT_TRUE(s.ok()) << s;
}

// ---------------------------------------------------------------------------------------------
// The committed models on Fashion-MNIST: true int8 vs emulated int:8, same calibration and plan.

std::string ModelPath(const std::string& file) {
  // From CMake, not __FILE__: ccache's base_dir makes __FILE__ relative to the build folder.
  return (std::filesystem::path(BITSWEEP_SOURCE_DIR) / "models" / file).string();
}

const Dataset& Split(const std::string& split, int64_t limit) {
  static std::map<std::string, Dataset>* cache = new std::map<std::string, Dataset>;
  const std::string key = split + ":" + std::to_string(limit);
  auto it = cache->find(key);
  if (it == cache->end()) {
    absl::StatusOr<Dataset> d = LoadDataset(
        std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR + "/" + split,
        {{0.2860f}, {0.3530f}, limit});
    EXPECT_TRUE(d.ok()) << d.status();
    it = cache->emplace(key, d.ok() ? *std::move(d) : Dataset{}).first;
  }
  return it->second;
}

void ModelCase(const std::string& file, int64_t eval_samples, const std::string& config_json) {
  absl::StatusOr<Graph> graph = ImportOnnxFile(ModelPath(file));
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(config_json);
  ASSERT_TRUE(config.ok());
  const Dataset& eval = Split("t10k", eval_samples);
  ASSERT_EQ(eval.size(), eval_samples);
  CalibrationCache cache;  // one calibration: both paths get the same plan
  TrialInputs in;
  in.graph = &*graph;
  in.eval = &eval;
  in.calibration = &Split("train", 1000);
  in.config = &*config;
  in.calibration_cache = &cache;
  in.model_key = file;
  in.calibration_key = "train:1000";
  const EvalOptions options{.batch = 256, .threads = 2};
  absl::StatusOr<TrialResult> emulated = RunTrial(in, options);
  ASSERT_TRUE(emulated.ok()) << emulated.status();
  absl::StatusOr<TrialResult> true_int8 = int8::RunInt8Trial(in, options);
  ASSERT_TRUE(true_int8.ok()) << true_int8.status();
  EXPECT_EQ(cache.computations(), 1);
  const double delta = true_int8->eval.top1 - emulated->eval.top1;
  std::printf("%s, %lld images, %s: top1 emulated %.4f, int8 %.4f (delta %+.4f); images/s "
              "emulated %.0f, int8 %.0f\n",
              file.c_str(), static_cast<long long>(eval_samples), config_json.c_str(),
              emulated->eval.top1, true_int8->eval.top1, delta,
              emulated->eval.images_per_second, true_int8->eval.images_per_second);
  EXPECT_LE(std::fabs(delta), 0.001);
  EXPECT_EQ(true_int8->eval.samples, eval_samples);
  EXPECT_EQ(true_int8->layers.size(), emulated->layers.size());
  // Same weight scales as the emulation chose.
  for (const auto& [layer, q] : emulated->eval.weight_quantizers) {
    ASSERT_TRUE(true_int8->eval.weight_quantizers.contains(layer)) << layer;
    EXPECT_EQ(true_int8->eval.weight_quantizers.at(layer).scale, q.scale) << layer;
  }
}

TEST(Int8ModelTest, LeNet5MatchesEmulationWithinATenthOfAPoint) {
  ModelCase("lenet5.onnx", 10000, kPerTensorConfig);
  ModelCase("lenet5.onnx", 10000, kPerChannelConfig);
}

TEST(Int8ModelTest, SqueezeNetMiniMatchesEmulationWithinATenthOfAPoint) {
  ModelCase("squeezenet-mini.onnx", 2000, kPerTensorConfig);
}

}  // namespace
}  // namespace bitsweep::engine
