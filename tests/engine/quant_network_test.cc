// Quantization emulation inside the compiled network, against the scalar reference executor with
// the same quantizers applied at the same points (weights before use, layer outputs after their
// fused activations, layer inputs on a private copy). The quantizer math itself is checked against
// the independent enumeration reference in format_test; here the question is placement and the
// fused oneDNN post-op chain (linear -> round -> clip -> pow; fixed point and int) in blocked and
// plain layouts.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/engine/quant_test_util.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/calibration.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

using quant::FormatKind;
using quant::NumberFormat;
using quant::Quantizer;

using testing::Format;
using testing::Random;

Tensor RunEngine(const Graph& graph, const Tensor& x, const quant::QuantPlan* plan,
                 std::unique_ptr<Network>* keep = nullptr) {
  NetworkOptions options;
  options.batch = x.shape()[0];
  options.threads = 2;
  options.quant = plan;
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(graph, options);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return {};
  std::map<std::string, Tensor> out;
  EXPECT_TRUE((*net)->Run({{graph.inputs[0].name, &x}}, &out).ok());
  Tensor result = out[graph.outputs[0]];
  if (keep) *keep = *std::move(net);
  return result;
}

// One Conv (optionally followed by Relu) big enough for 409,600 outputs: the DESIGN note's check.
onnx::ModelProto ConvModel(bool relu, int64_t batch_spatial = 40) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 16, batch_spatial, batch_spatial});
  b.AddInitializer("w", Random({64, 16, 3, 3}, 1, -0.3f, 0.3f));
  b.AddInitializer("b", Random({64}, 2, -0.1f, 0.1f));
  b.AddNode("Conv", "conv", {"x", "w", "b"}, {relu ? "pre" : "y"}, {IntsAttr("pads", {1, 1, 1, 1})});
  if (relu) b.AddNode("Relu", "relu", {"pre"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 64, batch_spatial, batch_spatial});
  return b.Build();
}

int64_t Mismatches(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  int64_t bad = 0;
  for (int64_t i = 0; i < a.num_elements(); ++i) bad += a.floats()[i] != b.floats()[i];
  return bad;
}

// An output quantizer as calibration would make it from the fp32 output range [lo, hi]: fixed
// point from max|x|, int from the range itself.
Quantizer OutputQuantizer(const std::string& format, float lo, float hi) {
  const NumberFormat f = Format(format);
  if (f.kind == FormatKind::kInt) {
    return quant::MakeIntQuantizer(f, {lo}, {hi}, quant::Rounding::kNearestEven);
  }
  return quant::MakeFixedQuantizer(f, std::max(std::fabs(lo), std::fabs(hi)),
                                   quant::Rounding::kNearestEven);
}

void FusedChainCase(const std::string& format, bool relu) {
  const onnx::ModelProto model = ConvModel(relu);
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor x = Random({4, 16, 40, 40}, 3);
  // Output quantizer with the FL calibration would choose for the fp32 output.
  const Tensor fp32 = RunEngine(*graph, x, nullptr);
  const auto [lo, hi] = std::minmax_element(fp32.floats().begin(), fp32.floats().end());
  quant::LayerQuantPlan layer;
  layer.outputs = OutputQuantizer(format, *lo, *hi);
  quant::QuantPlan plan = {{"conv", layer}};
  const Tensor got = RunEngine(*graph, x, &plan);
  ASSERT_EQ(got.num_elements(), 409600);

  // Same accumulation, quantized by the scalar loop: the fused chain must agree exactly.
  Tensor want = fp32;
  quant::QuantizeInPlace(layer.outputs, want.floats().data(), want.num_elements());
  EXPECT_EQ(Mismatches(got, want), 0) << format << (relu ? " after relu" : "");

  // And against the independent reference convolution (double accumulation): the last-bit
  // differences of float accumulation can only move a value near a rounding midpoint by one step.
  absl::StatusOr<std::map<std::string, Tensor>> ref = reference::RunReference(model, {{"x", x}});
  ASSERT_TRUE(ref.ok()) << ref.status();
  Tensor ref_q = ref->at("y");
  quant::QuantizeInPlace(layer.outputs, ref_q.floats().data(), ref_q.num_elements());
  const float step = layer.outputs.format.kind == FormatKind::kInt
                         ? layer.outputs.scale[0]
                         : std::ldexp(1.0f, -layer.outputs.fractional_bits);
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    // (Plus the float rounding of both outputs n * s: int grids are not exact binary values.)
    ASSERT_LE(std::fabs(got.floats()[i] - ref_q.floats()[i]),
              step * 1.001f + 4 * FLT_EPSILON * std::fabs(ref_q.floats()[i]))
        << i;
  }
}

TEST(FusedQuantizationTest, FixedPointChainMatchesScalarInBlockedLayout) {
  FusedChainCase("fixed:8", false);
  FusedChainCase("fixed:4", false);
  FusedChainCase("ufixed:8", true);
  FusedChainCase("fixed:16", true);
}

// The int chain linear(fl(1/s)) -> round -> clip(qmin - zp, qmax - zp) -> pow(s, 1) computes
// PyTorch's rule exactly as format.cc does, symmetric and asymmetric (the zero point shifts the
// clip bounds; after a fused Relu the range starts at 0), narrow and wide.
TEST(FusedQuantizationTest, IntChainMatchesScalarInBlockedLayout) {
  FusedChainCase("int:8", false);
  FusedChainCase("int:8:asym", false);
  FusedChainCase("int:8:asym", true);
  FusedChainCase("int:4", true);
  FusedChainCase("int:16:asym", false);
  FusedChainCase("int:22", false);
}

// Depthwise Conv -> Clip(0, 6) (MobileNet's ReLU6) with a fused fixed-point output: oneDNN 2.6.3
// runs a second eltwise_clip in one chain with the first one's [0, 6], which clipped the codes at
// 6 (0.375 at FL=4) until the quantizer's clip became eltwise_clip_v2 (AppendEltwise).
TEST(FusedQuantizationTest, QuantizerClipAfterFusedRelu6) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 32, 20, 20});
  b.AddInitializer("w", Random({32, 1, 3, 3}, 6, -1.5f, 1.5f));
  b.AddInitializer("lo", Tensor::Float({}, {0.0f}));
  b.AddInitializer("hi", Tensor::Float({}, {6.0f}));
  b.AddNode("Conv", "dw", {"x", "w"}, {"pre"},
            {IntsAttr("pads", {1, 1, 1, 1}), IntAttr("group", 32)});
  b.AddNode("Clip", "relu6", {"pre", "lo", "hi"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 32, 20, 20});
  absl::StatusOr<Graph> graph = ImportOnnxModel(b.Build());
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor x = Random({8, 32, 20, 20}, 7, -2.0f, 2.0f);
  const Tensor fp32 = RunEngine(*graph, x, nullptr);
  float max_abs = 0;
  for (float v : fp32.floats()) max_abs = std::max(max_abs, std::fabs(v));
  ASSERT_EQ(max_abs, 6.0f);  // the activation saturates: the whole [0, 6] range is in use
  quant::LayerQuantPlan layer;
  layer.outputs = quant::MakeFixedQuantizer(Format("fixed:8"), max_abs, quant::Rounding::kNearestEven);
  ASSERT_EQ(layer.outputs.fractional_bits, 4);
  quant::QuantPlan plan = {{"dw", layer}};
  const Tensor got = RunEngine(*graph, x, &plan);
  Tensor want = fp32;
  quant::QuantizeInPlace(layer.outputs, want.floats().data(), want.num_elements());
  EXPECT_EQ(Mismatches(got, want), 0);
  EXPECT_EQ(*std::max_element(got.floats().begin(), got.floats().end()), 6.0f);
}

TEST(FusedQuantizationTest, FixedPointChainMatchesScalarInPlainLayout) {
  // Gemm's destination is plain row-major.
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 256});
  b.AddInitializer("w", Random({128, 256}, 4, -0.2f, 0.2f));
  b.AddNode("Gemm", "fc", {"x", "w"}, {"y"}, {IntAttr("transB", 1)});
  b.AddOutput("y", Shape{kBatchDim, 128});
  const onnx::ModelProto model = b.Build();
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok());
  const Tensor x = Random({3200, 256}, 5);  // 409,600 outputs
  const Tensor fp32 = RunEngine(*graph, x, nullptr);
  for (const char* format : {"fixed:8", "int:8", "int:7:asym"}) {
    quant::LayerQuantPlan layer;
    layer.outputs = OutputQuantizer(format, -4.0f, 3.0f);
    quant::QuantPlan plan = {{"fc", layer}};
    const Tensor got = RunEngine(*graph, x, &plan);
    Tensor want = fp32;
    quant::QuantizeInPlace(layer.outputs, want.floats().data(), want.num_elements());
    EXPECT_EQ(Mismatches(got, want), 0) << format;
  }
}

// A zoo model under a config, engine vs reference with the same quantizers placed by value name.
void ZooCase(const std::string& arch, const std::string& config_json) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {.seed = 2});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, arch);
  ASSERT_TRUE(graph.ok());
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(config_json);
  ASSERT_TRUE(config.ok()) << config.status();
  // Calibrate on one random batch, evaluate on another.
  Dataset calib;
  calib.images = Random({32, 1, 28, 28}, 6, 0.0f, 1.0f);
  calib.labels.assign(32, 0);
  calib.num_classes = 10;
  absl::StatusOr<std::vector<quant::LayerInfo>> layers = InspectLayers(*graph, {1, 28, 28});
  ASSERT_TRUE(layers.ok()) << layers.status();
  absl::StatusOr<std::vector<quant::LayerFormats>> formats =
      quant::ResolveFormats(*config, *layers);
  ASSERT_TRUE(formats.ok()) << formats.status();
  absl::StatusOr<std::map<std::string, quant::ActivationStats>> stats =
      CalibrateActivations(*graph, calib, {.batch = 16});
  ASSERT_TRUE(stats.ok()) << stats.status();
  absl::StatusOr<quant::QuantPlan> plan = quant::BuildQuantPlan(*layers, *formats, *stats, *config);
  ASSERT_TRUE(plan.ok()) << plan.status();

  const Tensor x = Random({4, 1, 28, 28}, 7, 0.0f, 1.0f);
  std::unique_ptr<Network> net;
  const Tensor got = RunEngine(*graph, x, &*plan, &net);

  // Reference: quantize weights in a copy of the model (the engine folds BN first, so BN models
  // are compared only with fp32 weights), outputs where the fused layer's output value appears,
  // and each layer's input where it is produced (these zoo models read every layer input once).
  onnx::ModelProto quantized = *model;
  std::map<std::string, const Quantizer*> at_value;
  for (const Node& n : net->graph().nodes) {
    if (!IsQuantizableLayer(n.op)) continue;
    const quant::LayerQuantPlan& p = plan->at(n.name);
    if (p.outputs.format.kind != FormatKind::kFp32) at_value[n.outputs[0]] = &p.outputs;
    if (p.inputs.format.kind != FormatKind::kFp32) at_value[n.inputs[0]] = &p.inputs;
    auto wq = net->weight_quantizers().find(n.name);
    if (wq == net->weight_quantizers().end()) continue;
    for (auto& init : *quantized.mutable_graph()->mutable_initializer()) {
      if (init.name() != n.inputs[1]) continue;
      absl::StatusOr<Tensor> w = TensorFromProto(init);
      ASSERT_TRUE(w.ok());
      Tensor rows = *w;  // [out_channels, ...] for Conv and transB=1 Gemm (the zoo's layouts)
      quant::QuantizeInPlace(wq->second, rows.floats().data(), rows.num_elements());
      init = TensorToProto(rows, init.name());
    }
  }
  absl::StatusOr<std::map<std::string, Tensor>> ref = reference::RunReference(
      quantized, {{"input", x}}, [&](const std::string& value, Tensor* t) {
        auto it = at_value.find(value);
        if (it != at_value.end()) quant::QuantizeInPlace(*it->second, t->floats().data(), t->num_elements());
      });
  ASSERT_TRUE(ref.ok()) << ref.status();
  const Tensor& want = ref->at("logits");
  ASSERT_EQ(got.shape(), want.shape());
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    worst = std::max(worst, std::fabs(double{got.floats()[i]} - want.floats()[i]));
    scale = std::max(scale, std::fabs(double{want.floats()[i]}));
  }
  // The quantized network differs from fp32 by far more than from the reference emulation: the
  // comparison can see a missing or misplaced quantizer.
  const Tensor fp32 = RunEngine(*graph, x, nullptr);
  double quantization_effect = 0;
  for (int64_t i = 0; i < got.num_elements(); ++i) {
    quantization_effect =
        std::max(quantization_effect, std::fabs(double{got.floats()[i]} - fp32.floats()[i]));
  }
  std::cout << arch << ": engine vs reference " << worst << ", quantized vs fp32 "
            << quantization_effect << ", logit scale " << scale << "\n";
  // A rare rounding flip at a midpoint moves a value by one step; allow a small fraction of the
  // logit scale.
  EXPECT_LT(worst, 0.02 * (scale + 1e-3)) << arch << " " << config_json;
  EXPECT_GT(quantization_effect, 4 * worst) << arch << " " << config_json;
}

TEST(ZooQuantizationTest, FixedEverywhere) {
  const char* config =
      R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";
  for (const char* arch : {"lenet5", "squeezenet-mini", "alexnet-mini"}) ZooCase(arch, config);
}

TEST(ZooQuantizationTest, MixedFormats) {
  ZooCase("lenet5", R"({"conv": {"weights": "pow2:5", "outputs": "minifloat:4:3"},
                        "fc": {"weights": "int:8:sym:channel", "outputs": "int:8:asym"},
                        "layers": {"conv1": {"inputs": "ufixed:8"}}})");
  ZooCase("squeezenet-mini", R"({"default": {"weights": "fixed:6", "outputs": "ufixed:6"},
                                 "rounding": "nearest_away"})");
  ZooCase("lenet5", R"({"default": {"weights": "int:4", "outputs": "int:8"},
                        "calibration": {"method": "percentile", "percentile": 99.9}})");
}

TEST(ZooQuantizationTest, SharedInputIsQuantizedPerConsumer) {
  // x feeds two convs; only conv_a quantizes its input. conv_b must see the fp32 values
  // (Ristretto quantized a shared blob in place for every consumer).
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 2, 6, 6});
  b.AddInitializer("wa", Random({3, 2, 3, 3}, 8));
  b.AddInitializer("wb", Random({3, 2, 3, 3}, 9));
  b.AddNode("Conv", "conv_a", {"x", "wa"}, {"ya"});
  b.AddNode("Conv", "conv_b", {"x", "wb"}, {"yb"});
  b.AddOutput("ya", Shape{kBatchDim, 3, 4, 4});
  b.AddOutput("yb", Shape{kBatchDim, 3, 4, 4});
  const onnx::ModelProto model = b.Build();
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok());
  const Tensor x = Random({2, 2, 6, 6}, 10);
  quant::LayerQuantPlan a;
  a.inputs = quant::MakeFixedQuantizer(Format("fixed:3"), 1.0f, quant::Rounding::kNearestEven);
  quant::QuantPlan plan = {{"conv_a", a}};
  absl::StatusOr<std::unique_ptr<Network>> net =
      Network::Create(*graph, {.batch = 2, .quant = &plan});
  ASSERT_TRUE(net.ok()) << net.status();
  std::map<std::string, Tensor> out;
  ASSERT_TRUE((*net)->Run({{"x", &x}}, &out).ok());

  Tensor xq = x;
  quant::QuantizeInPlace(a.inputs, xq.floats().data(), xq.num_elements());
  absl::StatusOr<std::map<std::string, Tensor>> ra = reference::RunReference(model, {{"x", xq}});
  absl::StatusOr<std::map<std::string, Tensor>> rb = reference::RunReference(model, {{"x", x}});
  ASSERT_TRUE(ra.ok() && rb.ok());
  for (int64_t i = 0; i < out["ya"].num_elements(); ++i) {
    EXPECT_NEAR(out["ya"].floats()[i], ra->at("ya").floats()[i], 1e-5);
    EXPECT_NEAR(out["yb"].floats()[i], rb->at("yb").floats()[i], 1e-5);
  }
}

TEST(ZooQuantizationTest, WeightQuantizersAreReported) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok());
  quant::QuantPlan plan;
  plan["conv1"].weights = Format("fixed:8");
  plan["fc3"].weights = Format("pow2:4");
  std::unique_ptr<Network> net;
  RunEngine(*graph, Random({1, 1, 28, 28}, 11), &plan, &net);
  ASSERT_EQ(net->weight_quantizers().size(), 2u);
  // FL = 8 - (ceil(log2 max|w|) + 1), computed here from the weights themselves.
  float max_abs = 0;
  for (const auto& init : model->graph().initializer()) {
    if (init.name() != graph->nodes[0].inputs[1]) continue;
    absl::StatusOr<Tensor> w = TensorFromProto(init);
    for (float v : w->floats()) max_abs = std::max(max_abs, std::fabs(v));
  }
  const int il = static_cast<int>(std::ceil(std::log2(max_abs))) + 1;
  EXPECT_EQ(net->weight_quantizers().at("conv1").fractional_bits, 8 - il);
  EXPECT_EQ(net->weight_quantizers().at("fc3").format.kind, FormatKind::kPow2);
}

}  // namespace
}  // namespace bitsweep::engine

namespace bitsweep::engine {
namespace {

TEST(CalibrationCacheTest, CalibratesOncePerModelAndSplit) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok());
  Dataset calib;
  calib.images = Random({20, 1, 28, 28}, 12, 0.0f, 1.0f);
  calib.labels.assign(20, 1);
  calib.num_classes = 10;
  Dataset eval = calib;

  CalibrationCache cache;
  absl::StatusOr<ActivationStatsMap> first =
      cache.GetOrCompute(*graph, "lenet5@seed1", calib, "calib20", {.histograms = false});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<ActivationStatsMap> again =
      cache.GetOrCompute(*graph, "lenet5@seed1", calib, "calib20", {.histograms = false});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(cache.computations(), 1);
  EXPECT_EQ(again->at("conv1").outputs.max, first->at("conv1").outputs.max);
  EXPECT_GT(first->at("conv1").outputs.count, 0);

  // Histograms were not computed: a request that needs them calibrates again, and that entry
  // then serves both kinds of request.
  ASSERT_TRUE(cache.GetOrCompute(*graph, "lenet5@seed1", calib, "calib20", {}).ok());
  EXPECT_EQ(cache.computations(), 2);
  ASSERT_TRUE(cache.GetOrCompute(*graph, "lenet5@seed1", calib, "calib20", {.histograms = false}).ok());
  EXPECT_EQ(cache.computations(), 2);
  // Another split is another entry.
  ASSERT_TRUE(cache.GetOrCompute(*graph, "lenet5@seed1", calib, "calib20b", {}).ok());
  EXPECT_EQ(cache.computations(), 3);

  // Trials of several configs on the same model and split share one calibration.
  CalibrationCache trials_cache;
  for (const char* json : {R"({"default": {"outputs": "fixed:8"}})",
                           R"({"default": {"inputs": "fixed:6", "outputs": "fixed:6"}})"}) {
    absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(json);
    ASSERT_TRUE(config.ok());
    TrialInputs in;
    in.graph = &*graph;
    in.eval = &eval;
    in.calibration = &calib;
    in.config = &*config;
    in.calibration_cache = &trials_cache;
    in.model_key = "lenet5@seed1";
    in.calibration_key = "calib20";
    absl::StatusOr<TrialResult> r = RunTrial(in, {.batch = 10});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(trials_cache.computations(), 1);
}

}  // namespace
}  // namespace bitsweep::engine
