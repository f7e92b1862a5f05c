// Where the emulation applies its quantizers (inference_compiler.h): an output quantizer moved past
// a max pooling, a consumer's input quantizer applied in its producer's pass, an input quantized
// in place when every reader quantizes it alike, a Conv run and quantized sub-batch by sub-batch
// -- each must give bit-for-bit the values of the plain placement (every quantizer exactly where
// the plan puts it, inputs on private copies, whole-batch primitives). The plain placement is
// what the network compiles while an observer watches the layers, so the same network with and
// without a no-op observer is the comparison. Also: the float int kernel against
// the enumeration reference at and around every rounding midpoint.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/quant_test_util.h"
#include "tests/reference/quant_reference.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/calibration.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

using quant::Quantizer;
using quant::Rounding;
using testing::Format;
using testing::Random;

// Runs `graph` on `x`; with `observed`, a no-op observer makes the network place every quantizer
// exactly where the plan puts it.
Tensor RunNet(const Graph& graph, const Tensor& x, const quant::QuantPlan* plan, bool observed) {
  if (!observed) return testing::RunEmulation(graph, x, plan);
  return testing::RunEmulation(graph, x, plan,
                               [](const std::string&, bool, const float*, int64_t) {});
}

// Elements whose values differ (-0 and +0 are the same value).
int64_t Differences(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  int64_t bad = 0;
  for (int64_t i = 0; i < a.num_elements(); ++i) {
    const float u = a.floats()[i], v = b.floats()[i];
    bad += !(u == v || (std::isnan(u) && std::isnan(v)));
  }
  return bad;
}

// Layers and calibration statistics of `graph` (one random calibration batch).
struct Calibrated {
  std::vector<quant::LayerInfo> layers;
  std::map<std::string, quant::ActivationStats> stats;
};

Calibrated Calibrate(const Graph& graph) {
  Dataset calib;
  calib.images = Random({32, 1, 28, 28}, 6, 0.0f, 1.0f);
  calib.labels.assign(32, 0);
  calib.num_classes = 10;
  absl::StatusOr<std::vector<quant::LayerInfo>> layers = InspectLayers(graph, {1, 28, 28});
  EXPECT_TRUE(layers.ok()) << layers.status();
  absl::StatusOr<std::map<std::string, quant::ActivationStats>> stats =
      CalibrateActivations(graph, calib, {.batch = 16});
  EXPECT_TRUE(stats.ok()) << stats.status();
  if (!layers.ok() || !stats.ok()) return {};
  return {*std::move(layers), *std::move(stats)};
}

quant::QuantPlan PlanFor(const Calibrated& c, const std::string& config_json) {
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(config_json);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return {};
  absl::StatusOr<std::vector<quant::LayerFormats>> formats =
      quant::ResolveFormats(*config, c.layers);
  EXPECT_TRUE(formats.ok()) << formats.status();
  if (!formats.ok()) return {};
  absl::StatusOr<quant::QuantPlan> plan =
      quant::BuildQuantPlan(c.layers, *formats, c.stats, *config);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : quant::QuantPlan{};
}

std::string Uniform(const std::string& format, const std::string& rounding = "nearest_even") {
  return "{\"default\": {\"weights\": \"" + format + "\", \"inputs\": \"" + format +
         "\", \"outputs\": \"" + format + "\"}, \"rounding\": \"" + rounding + "\"}";
}

class ZooPlacementTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooPlacementTest, MovedQuantizersGiveThePlainPlacementsValues) {
  const std::string arch = GetParam();
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {.seed = 3});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, arch);
  ASSERT_TRUE(graph.ok());
  // Batch 64: the passes run in parallel blocks, and the larger convolutions' outputs (over 4 MiB:
  // squeezenet-mini's and alexnet-mini's first) are computed and quantized sub-batch by sub-batch.
  const Tensor x = Random({64, 1, 28, 28}, 11, 0.0f, 1.0f);
  const Tensor fp32 = RunNet(*graph, x, nullptr, false);
  const Calibrated calibrated = Calibrate(*graph);
  for (const std::string& config :
       {Uniform("fixed:8"), Uniform("fixed:6", "nearest_away"), Uniform("int:8"),
        Uniform("int:8:asym"), Uniform("int:5", "nearest_away"), Uniform("minifloat:4:3"),
        Uniform("minifloat:3:2:denormal", "nearest_away"), Uniform("int:8", "stochastic"),
        Uniform("minifloat:4:3", "stochastic"),
        std::string(R"({"default": {"weights": "pow2:5", "inputs": "fixed:8", "outputs": "int:8"},
            "fc": {"outputs": "minifloat:4:3"}})")}) {
    const quant::QuantPlan plan = PlanFor(calibrated, config);
    const Tensor moved = RunNet(*graph, x, &plan, false);
    const Tensor plain = RunNet(*graph, x, &plan, true);
    EXPECT_EQ(Differences(moved, plain), 0) << arch << " " << config;
    // The comparison can see quantization at all: the logits moved away from fp32.
    EXPECT_GT(Differences(moved, fp32), 0) << arch << " " << config;
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooPlacementTest,
                         ::testing::Values("lenet5", "squeezenet-mini", "resnet-mini",
                                           "alexnet-mini"));

// conv1 -> pool -> {conv2, conv3} -> concat -> pool -> {conv4, conv7} -> Add -> Relu -> {conv5,
// conv6}: every movement the compiler makes, against the scalar reference executor with each
// quantizer exactly at its plan point (tolerance: float vs double accumulation).
TEST(PlacementTest, HandMadeGraphAgainstTheScalarReference) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 3, 12, 12});
  b.AddInitializer("w1", Random({8, 3, 3, 3}, 21, -0.5f, 0.5f));
  b.AddInitializer("w2", Random({4, 8, 1, 1}, 22, -0.5f, 0.5f));
  b.AddInitializer("w3", Random({4, 8, 3, 3}, 23, -0.3f, 0.3f));
  b.AddInitializer("w4", Random({8, 8, 3, 3}, 24, -0.3f, 0.3f));
  b.AddInitializer("w5", Random({8, 8, 1, 1}, 25, -0.5f, 0.5f));
  b.AddInitializer("w6", Random({8, 8, 1, 1}, 26, -0.5f, 0.5f));
  b.AddInitializer("w7", Random({8, 8, 1, 1}, 28, -0.5f, 0.5f));
  b.AddNode("Conv", "conv1", {"x", "w1"}, {"c1"}, {IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("MaxPool", "pool1", {"c1"}, {"p1"},
            {IntsAttr("kernel_shape", {2, 2}), IntsAttr("strides", {2, 2})});
  b.AddNode("Conv", "conv2", {"p1", "w2"}, {"c2"});
  b.AddNode("Conv", "conv3", {"p1", "w3"}, {"c3"}, {IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("Concat", "cat", {"c2", "c3"}, {"cat"}, {IntAttr("axis", 1)});
  b.AddNode("MaxPool", "pool2", {"cat"}, {"p2"},
            {IntsAttr("kernel_shape", {2, 2}), IntsAttr("strides", {2, 2})});
  b.AddNode("Conv", "conv4", {"p2", "w4"}, {"c4"}, {IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("Conv", "conv7", {"p2", "w7"}, {"c7"});
  b.AddNode("Add", "add", {"c4", "c7"}, {"sum"});
  b.AddNode("Relu", "relu", {"sum"}, {"r"});
  b.AddNode("Conv", "conv5", {"r", "w5"}, {"c5"});
  b.AddNode("Conv", "conv6", {"r", "w6"}, {"c6"});
  b.AddNode("Add", "out", {"c5", "c6"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 8, 3, 3});
  const onnx::ModelProto model = b.Build();
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor x = Random({4, 3, 12, 12}, 27);

  auto int_q = [](float lo, float hi, const char* f) {
    return quant::MakeIntQuantizer(Format(f), {lo}, {hi}, Rounding::kNearestEven);
  };
  const Quantizer mini = quant::MakeMinifloatQuantizer(Format("minifloat:4:3"),
                                                       Rounding::kNearestEven);
  quant::QuantPlan plan;
  plan["conv1"].outputs = int_q(-2.0f, 2.5f, "int:6:asym");     // moved past pool1
  plan["conv2"].inputs = mini;                                   // p1 read by conv2 and conv3
  plan["conv3"].inputs = mini;                                   //   alike: in place
  plan["conv2"].outputs = int_q(-1.5f, 1.5f, "int:8");
  plan["conv3"].outputs = quant::MakeFixedQuantizer(Format("fixed:8"), 2.0f,
                                                    Rounding::kNearestEven);  // fused
  plan["conv4"].inputs = int_q(-1.0f, 1.0f, "int:7");  // applied in conv2's pass (and after
  plan["conv7"].inputs = int_q(-1.0f, 1.0f, "int:7");  // conv3's fused chain)
  plan["conv5"].inputs = int_q(0.0f, 3.0f, "int:8:asym");        // r read by conv5, conv6 alike
  plan["conv6"].inputs = int_q(0.0f, 3.0f, "int:8:asym");
  plan["conv5"].outputs = mini;
  const Tensor moved = RunNet(*graph, x, &plan, false);
  const Tensor plain = RunNet(*graph, x, &plan, true);
  EXPECT_EQ(Differences(moved, plain), 0);

  const std::map<std::string, std::vector<const Quantizer*>> at_value = {
      {"c1", {&plan["conv1"].outputs}},
      {"p1", {&plan["conv2"].inputs}},
      {"c2", {&plan["conv2"].outputs}},
      {"c3", {&plan["conv3"].outputs}},
      {"p2", {&plan["conv4"].inputs}},
      {"r", {&plan["conv5"].inputs}},
      {"c5", {&plan["conv5"].outputs}}};
  absl::StatusOr<std::map<std::string, Tensor>> ref = reference::RunReference(
      model, {{"x", x}}, [&](const std::string& value, Tensor* t) {
        auto it = at_value.find(value);
        if (it == at_value.end()) return;
        for (const Quantizer* q : it->second) {
          quant::QuantizeInPlace(*q, t->floats().data(), t->num_elements());
        }
      });
  ASSERT_TRUE(ref.ok()) << ref.status();
  const Tensor& want = ref->at("y");
  const Tensor fp32 = RunNet(*graph, x, nullptr, false);
  double worst = 0, effect = 0;
  for (int64_t i = 0; i < want.num_elements(); ++i) {
    worst = std::max(worst, std::fabs(double{moved.floats()[i]} - want.floats()[i]));
    effect = std::max(effect, std::fabs(double{moved.floats()[i]} - fp32.floats()[i]));
  }
  // A midpoint met through a different accumulation order moves one value by one step.
  EXPECT_LT(worst, 0.05);
  EXPECT_GT(effect, 10 * worst);
}

// The float int kernel computes PyTorch's rule round(fl(x * fl(1/s))) as the enumeration reference
// states it: every midpoint (k + 1/2) * s, the floats
// around it, and values far outside the range, for many scales, both nearest roundings,
// symmetric and asymmetric, widths up to the float kernel's limit and beyond (double kernel).
TEST(IntKernelTest, MidpointsAgreeWithTheEnumerationReference) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> log_scale(-20.0f, 20.0f);
  int64_t checked = 0;
  for (const char* f : {"int:8", "int:8:asym", "int:3", "int:12:asym", "int:16", "int:18"}) {
    for (Rounding r : {Rounding::kNearestEven, Rounding::kNearestAway}) {
      for (int trial = 0; trial < 6; ++trial) {
        const float m = std::exp2(log_scale(rng));
        const float lo = trial % 2 ? -m : -0.3f * m;
        const Quantizer q = quant::MakeIntQuantizer(Format(f), {lo}, {m}, r);
        const reference::ReferenceQuantizer ref(q);
        const std::vector<float> values = ref.Values();
        std::vector<float> probes;
        const size_t stride = std::max<size_t>(1, values.size() / 4096);
        for (size_t i = 0; i + 1 < values.size(); i += stride) {
          const long double mid = (static_cast<long double>(values[i]) + values[i + 1]) / 2;
          float v = static_cast<float>(mid);
          for (int k = 0; k < 4; ++k) v = std::nextafter(v, -FLT_MAX);
          for (int k = 0; k < 9; ++k, v = std::nextafter(v, FLT_MAX)) probes.push_back(v);
          probes.push_back(values[i]);
        }
        for (float v : {values.front() * 3, values.back() * 3, FLT_MAX, -FLT_MAX, 0.0f, -0.0f,
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity(), FLT_TRUE_MIN}) {
          probes.push_back(v);
        }
        std::vector<float> got = probes;
        quant::QuantizeInPlace(q, got.data(), static_cast<int64_t>(got.size()));
        int bad = 0;
        for (size_t i = 0; i < probes.size(); ++i) {
          const float want = ref.Quantize(probes[i]);
          if (std::memcmp(&got[i], &want, sizeof(float)) != 0 && ++bad <= 5) {
            ADD_FAILURE() << f << " scale " << q.scale[0] << " zp " << q.zero_point[0]
                          << ": q(" << probes[i] << ") = " << got[i] << ", reference " << want;
          }
        }
        checked += static_cast<int64_t>(probes.size());
      }
    }
  }
  std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()};
  quant::QuantizeInPlace(quant::MakeIntQuantizer(Format("int:8"), {-1.0f}, {1.0f},
                                                 Rounding::kNearestEven),
                         nan.data(), 1);
  EXPECT_TRUE(std::isnan(nan[0]));
  EXPECT_GT(checked, 100000);
}

}  // namespace
}  // namespace bitsweep::engine
