// Hutchinson Hessian traces (worker/engine/train/hessian.h) against the exact Hessian of a tiny
// network, computed independently in double precision by finite differences of the loss; and
// the HAWQ sensitivities of LeNet-5 against the scalar reference quantizer and the inference
// engine's own measurement of the same single-layer configs.
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/reference/quant_reference.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "quant/plan.h"
#include "worker/engine/train/hessian.h"
#include "worker/engine/train/training_network.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine {
namespace {

constexpr int64_t kIn = 4, kHidden = 5, kClasses = 3, kSamples = 16, kBatch = 8;

// x[N, 4] -> Gemm(W1[5, 4], transB, b1) -> Sigmoid -> Gemm(W2[3, 5], transB, b2) -> logits.
struct TinyMlp {
  std::vector<double> w1, b1, w2, b2;
  std::vector<double> x;  // [kSamples, kIn]
  std::vector<int> labels;
};

TinyMlp MakeTinyMlp(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  TinyMlp m;
  // Rounded to float: the network computes with exactly these values.
  auto draw = [&](size_t n, double scale) {
    std::vector<double> v(n);
    for (double& e : v) e = static_cast<float>(scale * normal(rng));
    return v;
  };
  m.w1 = draw(kHidden * kIn, 1.0);
  m.b1 = draw(kHidden, 0.3);
  m.w2 = draw(kClasses * kHidden, 1.5);
  m.b2 = draw(kClasses, 0.3);
  m.x = draw(kSamples * kIn, 1.0);
  std::uniform_int_distribution<int> label(0, kClasses - 1);
  for (int i = 0; i < kSamples; ++i) m.labels.push_back(label(rng));
  return m;
}

std::vector<float> Floats(const std::vector<double>& v) { return {v.begin(), v.end()}; }

onnx::ModelProto ModelOf(const TinyMlp& m) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, kIn});
  b.AddFloatInitializer("w1", {kHidden, kIn}, Floats(m.w1));
  b.AddFloatInitializer("b1", {kHidden}, Floats(m.b1));
  b.AddNode("Gemm", "fc1", {"x", "w1", "b1"}, {"h"}, {IntAttr("transB", 1)});
  b.AddNode("Sigmoid", "sig", {"h"}, {"a"});
  b.AddFloatInitializer("w2", {kClasses, kHidden}, Floats(m.w2));
  b.AddFloatInitializer("b2", {kClasses}, Floats(m.b2));
  b.AddNode("Gemm", "fc2", {"a", "w2", "b2"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, kClasses});
  return b.Build();
}

Dataset DatasetOf(const TinyMlp& m) {
  Dataset d;
  d.reference = "tiny";
  d.images = Tensor::Float({kSamples, kIn});
  for (size_t i = 0; i < m.x.size(); ++i) d.images.floats()[i] = static_cast<float>(m.x[i]);
  d.labels = m.labels;
  d.num_classes = kClasses;
  return d;
}

// The mean cross-entropy of the MLP in double precision, weights w = [W1 | W2] (row-major).
double ReferenceLoss(const TinyMlp& m, const std::vector<double>& w) {
  const double* w1 = w.data();
  const double* w2 = w.data() + kHidden * kIn;
  double total = 0;
  for (int n = 0; n < kSamples; ++n) {
    double a[kHidden];
    for (int h = 0; h < kHidden; ++h) {
      double z = m.b1[h];
      for (int i = 0; i < kIn; ++i) z += w1[h * kIn + i] * m.x[n * kIn + i];
      a[h] = 1.0 / (1.0 + std::exp(-z));
    }
    double logits[kClasses], top = -1e300;
    for (int c = 0; c < kClasses; ++c) {
      double z = m.b2[c];
      for (int h = 0; h < kHidden; ++h) z += w2[c * kHidden + h] * a[h];
      logits[c] = z;
      top = std::max(top, z);
    }
    double sum = 0;
    for (double z : logits) sum += std::exp(z - top);
    total += std::log(sum) + top - logits[m.labels[n]];
  }
  return total / kSamples;
}

// The exact Hessian of ReferenceLoss over the 35 weights, by central differences in double.
std::vector<std::vector<double>> ReferenceHessian(const TinyMlp& m) {
  std::vector<double> w = m.w1;
  w.insert(w.end(), m.w2.begin(), m.w2.end());
  const size_t n = w.size();
  const double h = 1e-4;
  std::vector<std::vector<double>> H(n, std::vector<double>(n));
  auto at = [&](size_t i, double di, size_t j, double dj) {
    std::vector<double> v = w;
    v[i] += di;
    v[j] += dj;
    return ReferenceLoss(m, v);
  };
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j <= i; ++j) {
      H[i][j] = H[j][i] =
          (at(i, h, j, h) - at(i, h, j, -h) - at(i, -h, j, h) + at(i, -h, j, -h)) / (4 * h * h);
    }
  }
  return H;
}

std::unique_ptr<TrainingNetwork> TinyNet(const TinyMlp& m) {
  TrainingNetworkOptions options;
  options.batch = kBatch;
  options.sample_shape = {kIn};
  options.threads = 1;
  absl::StatusOr<std::unique_ptr<TrainingNetwork>> net = TrainingNetwork::Create(ModelOf(m),
                                                                                 options);
  EXPECT_TRUE(net.ok()) << net.status();
  return net.ok() ? *std::move(net) : nullptr;
}

TEST(HutchinsonTest, TracesMatchTheExactHessianWithinTheirStatisticalError) {
  for (const bool per_layer : {true, false}) {
    for (uint64_t seed : {1, 2}) {
      const TinyMlp m = MakeTinyMlp(seed);
      const std::vector<std::vector<double>> H = ReferenceHessian(m);
      std::unique_ptr<TrainingNetwork> net = TinyNet(m);
      ASSERT_NE(net, nullptr);
      const Dataset data = DatasetOf(m);
      const int probes = 400;
      // A small step: the network is smooth, and the test is of the estimator, not the step.
      const HutchinsonOptions options = {.probes = probes, .samples = kSamples,
                                         .relative_step = 1e-3, .seed = seed,
                                         .per_layer = per_layer};
      absl::StatusOr<std::vector<WeightTrace>> traces =
          HutchinsonWeightTraces(*net, data, options);
      ASSERT_TRUE(traces.ok()) << traces.status();
      ASSERT_EQ(traces->size(), 2u);
      // Blocks: W1 = weights [0, 20), W2 = [20, 35).
      const size_t begin[2] = {0, kHidden * kIn};
      const size_t end[2] = {kHidden * kIn, kHidden * kIn + kClasses * kHidden};
      const char* layers[2] = {"fc1", "fc2"};
      for (int l = 0; l < 2; ++l) {
        const WeightTrace& t = (*traces)[l];
        EXPECT_EQ(t.layer, layers[l]);
        EXPECT_EQ(t.count, static_cast<int64_t>(end[l] - begin[l]));
        double exact = 0, variance = 0;
        for (size_t i = begin[l]; i < end[l]; ++i) {
          exact += H[i][i];
          // v_l^T (H v)_l = Tr(H_ll) + sum over pairs: within the block each pair counts twice;
          // pairs with the other block only when it is probed too.
          for (size_t j = 0; j < H.size(); ++j) {
            if (j == i) continue;
            const bool inside = j >= begin[l] && j < end[l];
            if (inside && j < i) continue;
            if (!inside && per_layer) continue;
            variance += (inside ? 4.0 : 1.0) * H[i][j] * H[i][j];
          }
        }
        const double expected_error = std::sqrt(variance / probes);
        SCOPED_TRACE(testing::Message() << "per layer " << per_layer << ", seed " << seed << " "
                                        << t.layer << ": exact " << exact
                                        << ", estimate " << t.trace << " +- " << t.standard_error
                                        << ", expected error " << expected_error);
        EXPECT_GT(std::abs(exact), 1e-3);
        EXPECT_NEAR(t.trace, exact, 4.0 * expected_error + 1e-3 * std::abs(exact));
        EXPECT_GT(t.standard_error, 0.6 * expected_error);
        EXPECT_LT(t.standard_error, 1.6 * expected_error);
      }
    }
  }
}

TEST(HutchinsonTest, RestoresTheWeightsAndRepeatsWithTheSameSeed) {
  const TinyMlp m = MakeTinyMlp(3);
  std::unique_ptr<TrainingNetwork> net = TinyNet(m);
  ASSERT_NE(net, nullptr);
  const Dataset data = DatasetOf(m);
  std::vector<std::vector<float>> before;
  for (const Parameter& p : net->parameters()) before.push_back(p.value.floats());
  absl::StatusOr<std::vector<WeightTrace>> a = HutchinsonWeightTraces(*net, data, {.probes = 5});
  absl::StatusOr<std::vector<WeightTrace>> b = HutchinsonWeightTraces(*net, data, {.probes = 5});
  absl::StatusOr<std::vector<WeightTrace>> c =
      HutchinsonWeightTraces(*net, data, {.probes = 5, .seed = 9});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t i = 0; i < net->parameters().size(); ++i) {
    EXPECT_EQ(net->parameters()[i].value.floats(), before[i]) << net->parameters()[i].name;
  }
  for (size_t l = 0; l < a->size(); ++l) {
    EXPECT_EQ((*a)[l].trace, (*b)[l].trace);
    EXPECT_NE((*a)[l].trace, (*c)[l].trace);
  }
}

TEST(HutchinsonTest, BadOptionsAndTooLittleDataAreErrors) {
  const TinyMlp m = MakeTinyMlp(4);
  std::unique_ptr<TrainingNetwork> net = TinyNet(m);
  ASSERT_NE(net, nullptr);
  const Dataset data = DatasetOf(m);
  absl::StatusOr<std::vector<WeightTrace>> r = HutchinsonWeightTraces(*net, data, {.probes = 0});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("probes"), std::string::npos) << r.status();
  r = HutchinsonWeightTraces(*net, data, {.relative_step = -1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = HutchinsonWeightTraces(*net, data, {.samples = kBatch - 1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("at least one batch"), std::string::npos) << r.status();
}

// LeNet-5 (the trained zoo model) on 128 Fashion-MNIST training images.
TEST(LayerSensitivitiesTest, LeNet5AgreesWithTheReferenceQuantizerAndTheInferenceEngine) {
  absl::StatusOr<onnx::ModelProto> model =
      ReadOnnxModel(std::string(BITSWEEP_SOURCE_DIR) + "/models/lenet5.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "lenet5");
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<Dataset> data =
      LoadDataset(std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR + "/train",
                  {.mean = {0.2860f}, .std = {0.3530f}, .limit = 128});
  ASSERT_TRUE(data.ok()) << data.status();
  absl::StatusOr<std::vector<quant::LayerInfo>> layers =
      InspectLayers(*graph, data->sample_shape());
  ASSERT_TRUE(layers.ok()) << layers.status();
  absl::StatusOr<ActivationStatsMap> stats =
      CalibrateActivations(*graph, *data, {.threads = 1, .histograms = false});
  ASSERT_TRUE(stats.ok()) << stats.status();
  const quant::QuantConfig config;
  SensitivityOptions options;
  options.hutchinson = {.probes = 4, .samples = 128};
  options.batch = 64;
  options.threads = 1;
  for (const char* f : {"fixed:8", "fixed:3"}) {
    options.weight_formats.push_back(*quant::ParseFormat(f));
    options.activation_formats.push_back(*quant::ParseFormat(f));
  }
  absl::StatusOr<std::vector<LayerSensitivity>> table =
      LayerSensitivities(*model, *graph, *data, *layers, *stats, config, options);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), layers->size());

  // The inference engine's loss on the same samples for a single-layer config.
  auto engine_loss = [&](const std::string& config_json) {
    absl::StatusOr<quant::QuantConfig> c = quant::ParseQuantConfig(config_json);
    EXPECT_TRUE(c.ok()) << c.status();
    TrialInputs in{.graph = &*graph, .eval = &*data, .calibration = &*data, .config = &*c};
    absl::StatusOr<TrialResult> r = RunTrial(in, {.batch = 64, .threads = 1});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->eval.loss : 0.0;
  };
  const double fp32_loss = engine_loss("{}");

  for (size_t l = 0; l < layers->size(); ++l) {
    const LayerSensitivity& s = (*table)[l];
    SCOPED_TRACE(s.layer);
    EXPECT_EQ(s.layer, (*layers)[l].name);
    EXPECT_EQ(s.weight_count, (*layers)[l].weight_count);
    EXPECT_TRUE(std::isfinite(s.trace));
    ASSERT_EQ(s.weights.size(), 2u);
    ASSERT_EQ(s.activations.size(), 2u);
    // ||Q(W) - W||^2 with the scalar reference quantizer, per tensor (fixed point).
    const Tensor* w = nullptr;
    for (const Node& n : graph->nodes) {
      if (n.name == s.layer) w = &graph->constants.at(n.inputs[1]);
    }
    ASSERT_NE(w, nullptr);
    for (const FormatSensitivity& f : s.weights) {
      const std::vector<float>& values = w->floats();
      const quant::Quantizer q = quant::MakeWeightQuantizer(
          f.format, quant::Rounding::kNearestEven, 0, values.data(),
          static_cast<int64_t>(values.size()), 1);
      double expected = 0;
      for (float v : values) {
        const double d = static_cast<double>(reference::ReferenceQuantize(q, v)) - v;
        expected += d * d;
      }
      EXPECT_NEAR(f.squared_error, expected, 1e-6 * expected + 1e-12);
      EXPECT_DOUBLE_EQ(f.loss_increase, 0.5 * s.trace / s.weight_count * f.squared_error);
      const std::string name = quant::FormatToString(f.format);
      const double engine =
          engine_loss("{\"layers\": {\"" + s.layer + "\": {\"weights\": \"" + name + "\"}}}") -
          fp32_loss;
      EXPECT_NEAR(f.measured_loss_increase, engine, 0.05 * std::abs(engine) + 2e-3) << name;
    }
    EXPECT_GT(s.weights[1].squared_error, s.weights[0].squared_error);
    for (const FormatSensitivity& f : s.activations) {
      const std::string name = quant::FormatToString(f.format);
      const double engine = engine_loss("{\"layers\": {\"" + s.layer + "\": {\"inputs\": \"" +
                                        name + "\", \"outputs\": \"" + name + "\"}}}") -
                            fp32_loss;
      EXPECT_EQ(f.loss_increase, f.measured_loss_increase);
      EXPECT_NEAR(f.measured_loss_increase, engine, 0.05 * std::abs(engine) + 2e-3) << name;
    }
  }
}

}  // namespace
}  // namespace bitsweep::engine
