// Buffer reuse in the compiled network (InferenceCompilerOptions::reuse_buffers): values whose
// lifetimes do not overlap share one arena. A network with reuse must give exactly the outputs
// it gives without (bit for bit, fp32 and every emulated format, with and without an observer),
// in less activation memory; and on a graph with long-lived values (a residual skip read after a
// chain of layers, a value read by a later Concat, an intermediate graph output) it must match
// the scalar reference executor too.
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quant/config.h"
#include "quant/plan.h"
#include "tests/engine/quant_test_util.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/calibration.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

using testing::Random;

struct Outputs {
  std::map<std::string, Tensor> values;
  int64_t activation_bytes = 0;
};

// Runs `graph` on `x` twice (the arena holds the first run's values when the second starts).
Outputs RunNet(const Graph& graph, const Tensor& x, const quant::QuantPlan* plan, bool reuse,
               bool observed = false) {
  NetworkOptions options;
  options.batch = x.shape()[0];
  options.threads = 2;
  options.quant = plan;
  options.reuse_buffers = reuse;
  if (observed) options.observer = [](const std::string&, bool, const float*, int64_t) {};
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(graph, options);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return {};
  Outputs out;
  out.activation_bytes = (*net)->activation_bytes();
  for (int run = 0; run < 2; ++run) {
    const absl::Status status = (*net)->Run({{graph.inputs[0].name, &x}}, &out.values);
    EXPECT_TRUE(status.ok()) << status;
  }
  return out;
}

bool BitIdentical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.num_elements() > 0 &&
         std::memcmp(a.floats().data(), b.floats().data(), a.num_elements() * sizeof(float)) == 0;
}

quant::QuantPlan PlanFor(const Graph& graph, const std::string& format,
                         const std::string& rounding) {
  Dataset calib;
  calib.images = Random({16, 1, 28, 28}, 6, 0.0f, 1.0f);
  calib.labels.assign(16, 0);
  calib.num_classes = 10;
  absl::StatusOr<std::vector<quant::LayerInfo>> layers = InspectLayers(graph, {1, 28, 28});
  absl::StatusOr<std::map<std::string, quant::ActivationStats>> stats =
      CalibrateActivations(graph, calib, {.batch = 16});
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(
      "{\"default\": {\"weights\": \"" + format + "\", \"inputs\": \"" + format +
      "\", \"outputs\": \"" + format + "\"}, \"rounding\": \"" + rounding + "\"}");
  EXPECT_TRUE(layers.ok() && stats.ok() && config.ok());
  if (!layers.ok() || !stats.ok() || !config.ok()) return {};
  absl::StatusOr<std::vector<quant::LayerFormats>> formats =
      quant::ResolveFormats(*config, *layers);
  EXPECT_TRUE(formats.ok()) << formats.status();
  if (!formats.ok()) return {};
  absl::StatusOr<quant::QuantPlan> plan =
      quant::BuildQuantPlan(*layers, *formats, *stats, *config);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : quant::QuantPlan{};
}

class ZooReuseTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooReuseTest, SameOutputsInLessMemory) {
  const std::string arch = GetParam();
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {.seed = 5});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, arch);
  ASSERT_TRUE(graph.ok()) << graph.status();
  // Batch 32: the larger convolutions run (and are quantized) sub-batch by sub-batch.
  const Tensor x = Random({32, 1, 28, 28}, 12, 0.0f, 1.0f);
  const std::string output = graph->outputs[0];
  {
    const Outputs own = RunNet(*graph, x, nullptr, false);
    const Outputs shared = RunNet(*graph, x, nullptr, true);
    EXPECT_TRUE(BitIdentical(shared.values.at(output), own.values.at(output))) << arch;
    EXPECT_LT(shared.activation_bytes, own.activation_bytes) << arch;
  }
  for (const auto& [format, rounding] : std::vector<std::pair<std::string, std::string>>{
           {"fixed:8", "nearest_even"}, {"int:8:asym", "nearest_even"},
           {"minifloat:4:3", "nearest_away"}, {"int:8", "stochastic"}}) {
    const quant::QuantPlan plan = PlanFor(*graph, format, rounding);
    for (bool observed : {false, true}) {
      const Outputs own = RunNet(*graph, x, &plan, false, observed);
      const Outputs shared = RunNet(*graph, x, &plan, true, observed);
      EXPECT_TRUE(BitIdentical(shared.values.at(output), own.values.at(output)))
          << arch << " " << format << " " << rounding << " observed=" << observed;
      EXPECT_LT(shared.activation_bytes, own.activation_bytes) << arch << " " << format;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooReuseTest, ::testing::ValuesIn(zoo::ArchitectureNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// stem -> s; s -> depthwise -> pointwise -> relu -> conv -> t; u = s + t (the skip outlives the
// chain); v = concat(u, s) (s read once more, later still); head(v) -> y. Graph outputs: y and
// the stem's s, which must survive to the end although no step reads it after the Concat.
onnx::ModelProto ResidualModel() {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 4, 10, 10});
  b.AddInitializer("w_stem", Random({8, 4, 3, 3}, 31, -0.4f, 0.4f));
  b.AddInitializer("w_dw", Random({8, 1, 3, 3}, 32, -0.5f, 0.5f));
  b.AddInitializer("w_pw", Random({16, 8, 1, 1}, 33, -0.4f, 0.4f));
  b.AddInitializer("w_c", Random({8, 16, 3, 3}, 34, -0.2f, 0.2f));
  b.AddInitializer("w_head", Random({6, 16, 1, 1}, 35, -0.4f, 0.4f));
  b.AddNode("Conv", "stem", {"x", "w_stem"}, {"s"}, {IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("Conv", "dw", {"s", "w_dw"}, {"d"},
            {IntsAttr("pads", {1, 1, 1, 1}), IntAttr("group", 8)});
  b.AddNode("Conv", "pw", {"d", "w_pw"}, {"p"});
  b.AddNode("Relu", "relu", {"p"}, {"r"});
  b.AddNode("Conv", "conv", {"r", "w_c"}, {"t"}, {IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("Add", "add", {"s", "t"}, {"u"});
  b.AddNode("Concat", "cat", {"u", "s"}, {"v"}, {IntAttr("axis", 1)});
  b.AddNode("Conv", "head", {"v", "w_head"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 6, 10, 10});
  b.AddOutput("s", Shape{kBatchDim, 8, 10, 10});
  return b.Build();
}

TEST(BufferReuseTest, LongLivedValuesAreNotOverwritten) {
  const onnx::ModelProto model = ResidualModel();
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor x = Random({3, 4, 10, 10}, 36);
  absl::StatusOr<std::map<std::string, Tensor>> expected =
      reference::RunReference(model, {{"x", x}});
  ASSERT_TRUE(expected.ok()) << expected.status();
  const Outputs own = RunNet(*graph, x, nullptr, false);
  const Outputs shared = RunNet(*graph, x, nullptr, true);
  for (const std::string name : {"y", "s"}) {
    EXPECT_TRUE(BitIdentical(shared.values.at(name), own.values.at(name))) << name;
    const Tensor& want = expected->at(name);
    const Tensor& got = shared.values.at(name);
    ASSERT_EQ(got.shape(), want.shape()) << name;
    double largest = 0, worst = 0;
    for (int64_t i = 0; i < want.num_elements(); ++i) {
      largest = std::max(largest, std::fabs(double{want.floats()[i]}));
      worst = std::max(worst, std::fabs(double{got.floats()[i]} - want.floats()[i]));
    }
    EXPECT_LE(worst, 1e-5 * largest) << name;
  }
  EXPECT_LT(shared.activation_bytes, own.activation_bytes);
}

TEST(EvalSubBatchTest, SizesTheSubBatchByActivationMemory) {
  EXPECT_EQ(EvalSubBatch(256, 4 << 20), 256);   // fits: the whole batch
  EXPECT_EQ(EvalSubBatch(256, 128 << 20), 32);  // 0.5 MiB per image: 16 MiB of them
  EXPECT_EQ(EvalSubBatch(256, 112 << 20), 32);  // at most 36 images: 8 runs of 32, not 7 x 36 + 4
  EXPECT_EQ(EvalSubBatch(100, 1000 << 20), 1);  // 10 MiB per image: one at a time
  EXPECT_EQ(EvalSubBatch(1, 1000 << 20), 1);
}

// An evaluation batch too large for the cache runs as sub-batches through a network compiled
// for the sub-batch: the scores are those of an evaluation at that batch, bit for bit, including
// a last partial sub-batch of each batch of 200 and the dataset's padded last batch (450 images).
TEST(EvalSubBatchTest, SubBatchesGiveTheScoresOfThatBatch) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("alexnet-mini", {.seed = 2});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "alexnet-mini");
  ASSERT_TRUE(graph.ok()) << graph.status();
  Dataset data;
  data.images = Random({450, 1, 28, 28}, 40, 0.0f, 1.0f);
  for (int64_t i = 0; i < 450; ++i) data.labels.push_back(static_cast<int>(i % 10));
  data.num_classes = 10;
  absl::StatusOr<std::unique_ptr<Network>> net =
      Network::Create(*graph, {.batch = 200, .threads = 2});
  ASSERT_TRUE(net.ok()) << net.status();
  const int64_t sub = EvalSubBatch(200, (*net)->activation_bytes());
  ASSERT_LT(sub, 200) << "alexnet-mini at batch 200 should not fit: "
                      << (*net)->activation_bytes() << " bytes";
  EXPECT_NE(200 % sub, 0) << "sub-batch " << sub << ": no partial sub-batch to check";
  absl::StatusOr<EvalResult> whole = Evaluate(*graph, data, {.batch = 200, .threads = 2});
  absl::StatusOr<EvalResult> one = Evaluate(*graph, data, {.batch = sub, .threads = 2});
  ASSERT_TRUE(whole.ok() && one.ok());
  EXPECT_EQ(whole->top1, one->top1);
  EXPECT_EQ(whole->top5, one->top5);
  EXPECT_EQ(whole->loss, one->loss);  // the same scores: the same sum in the same order
  EXPECT_EQ(whole->samples, 450);
}

}  // namespace
}  // namespace bitsweep::engine
