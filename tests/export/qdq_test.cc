// QDQ export against the engine: the dequantized weights of the exported model equal the
// engine's own int:8 quantization of the same weights (BatchNormalization folded as the engine
// folds it), activation pairs carry the calibrated scales, and formats without an exact QDQ form
// are refused by name.
#include "server/export/qdq.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/export/ort_agreement.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"
#include "worker/trial_executor.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;

const std::string kData = std::string("idx:") + BITSWEEP_FASHION_MNIST_DIR;

struct Trial {
  onnx::ModelProto model;
  v1::TrialResult reported;      // what a worker reports
  engine::TrialResult engine;    // the engine's own run of the same trial
};

// Runs `config_json` on `model` twice: through the worker's executor (the reported result) and
// the engine itself (its quantizers).
Trial RunModel(const onnx::ModelProto& model, const std::string& config_json) {
  Trial t;
  const std::string path = (fs::path(::testing::TempDir()) /
                            ("qdq_" + model.graph().name() + "_" + std::to_string(::getpid()) +
                             ".onnx")).string();
  {
    std::ofstream out(path, std::ios::binary);
    model.SerializeToOstream(&out);
  }
  t.model = model;
  v1::EvalSettings settings;
  settings.mutable_dataset()->set_train(kData + "/train");
  settings.mutable_dataset()->set_eval(kData + "/t10k");
  settings.mutable_dataset()->set_eval_limit(200);
  settings.mutable_dataset()->set_calibration_samples(100);
  v1::TrialSpec spec;
  spec.set_config_json(config_json);
  worker::TrialExecutor executor;
  absl::StatusOr<v1::TrialResult> r = executor.Execute({.hash = model.graph().name(), .path = path},
                                                       settings, spec, {.threads = 1});
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) t.reported = *r;

  engine::Preprocessing limit_eval, limit_calibration;
  limit_eval.limit = 200;
  limit_calibration.limit = 100;
  const engine::Dataset eval = *engine::LoadDataset(kData + "/t10k", limit_eval);
  const engine::Dataset calibration = *engine::LoadDataset(kData + "/train", limit_calibration);
  const engine::Graph graph = *engine::ImportOnnxModel(t.model, {}, path);
  const quant::QuantConfig config = *quant::ParseQuantConfig(config_json);
  engine::TrialInputs in{.graph = &graph, .eval = &eval, .calibration = &calibration,
                         .config = &config};
  absl::StatusOr<engine::TrialResult> e = engine::RunTrial(in, {.batch = 256, .threads = 1});
  EXPECT_TRUE(e.ok()) << e.status();
  if (e.ok()) t.engine = *std::move(e);
  return t;
}

Trial RunLenet(const std::string& config_json) {
  return RunModel(*engine::zoo::BuildArchitecture("lenet5", {}), config_json);
}

// ResNet-mini with BatchNormalization parameters far from the identity (a fresh model's are
// gamma 1, beta 0, mean 0, var 1), so that folding them visibly changes every weight.
onnx::ModelProto ResnetWithBatchNormStatistics() {
  onnx::ModelProto model = *engine::zoo::BuildArchitecture("resnet-mini", {});
  std::map<std::string, onnx::TensorProto*> initializers;
  for (auto& t : *model.mutable_graph()->mutable_initializer()) initializers[t.name()] = &t;
  uint32_t state = 12345;
  auto uniform = [&state](float lo, float hi) {
    state = state * 1664525u + 1013904223u;
    return lo + (hi - lo) * static_cast<float>(state >> 8) / static_cast<float>(1u << 24);
  };
  const float ranges[4][2] = {{0.5f, 1.5f}, {-0.2f, 0.2f}, {-0.1f, 0.1f}, {0.5f, 2.0f}};
  for (const auto& n : model.graph().node()) {
    if (n.op_type() != "BatchNormalization") continue;
    for (int k = 1; k <= 4; ++k) {
      onnx::TensorProto& t = *initializers.at(n.input(k));
      std::vector<float> values(t.dims(0));
      for (float& v : values) v = uniform(ranges[k - 1][0], ranges[k - 1][1]);
      t.clear_float_data();
      t.set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                                 values.size() * sizeof(float)));
    }
  }
  return model;
}

std::map<std::string, const onnx::TensorProto*> Initializers(const onnx::GraphProto& g) {
  std::map<std::string, const onnx::TensorProto*> m;
  for (const auto& t : g.initializer()) m[t.name()] = &t;
  return m;
}

// The trial's QDQ model, parsed.
absl::StatusOr<onnx::ModelProto> ExportQdq(const Trial& t) {
  absl::StatusOr<std::string> bytes = server::BuildQdqModel(t.model.SerializeAsString(),
                                                            t.reported);
  if (!bytes.ok()) return bytes.status();
  onnx::ModelProto qdq;
  if (!qdq.ParseFromString(*bytes)) return absl::InternalError("the QDQ model does not parse");
  return qdq;
}

std::vector<float> FloatsOf(const onnx::TensorProto& t) {
  if (t.float_data_size() > 0) return {t.float_data().begin(), t.float_data().end()};
  std::vector<float> v(t.raw_data().size() / 4);
  std::memcpy(v.data(), t.raw_data().data(), v.size() * 4);
  return v;
}

// Every quantized weight of the exported model, dequantized, equals the engine's own int:8
// quantization of the weights it ran (after folding BatchNormalization, as the engine does).
// Returns the number of weight tensors compared.
int ExpectDequantizedWeightsEqualTheEngines(const Trial& t, const onnx::ModelProto& qdq) {
  engine::Graph graph = *engine::ImportOnnxModel(t.model, {}, "");
  engine::FoldBatchNorm(&graph);
  const auto exported = Initializers(qdq.graph());
  int compared = 0;
  for (const engine::Node& n : graph.nodes) {
    auto q = t.engine.eval.weight_quantizers.find(n.name);
    if (q == t.engine.eval.weight_quantizers.end()) continue;
    const std::string& w = n.inputs[1];
    std::vector<float> expected = graph.constants.at(w).floats();
    const int64_t count = static_cast<int64_t>(expected.size());
    // The quantizer's channels are blocks of rows: MatMul's [K, N] weights are quantized as
    // their transpose [N, K] (as the engine does).
    const std::vector<int64_t>& shape = graph.constants.at(w).shape();
    const bool columns = n.op == engine::OpKind::kMatMul && shape.size() == 2;
    std::vector<float> rows = expected;
    if (columns) {
      for (int64_t k = 0; k < shape[0]; ++k) {
        for (int64_t j = 0; j < shape[1]; ++j) rows[j * shape[0] + k] = expected[k * shape[1] + j];
      }
    }
    quant::QuantizeInPlace(q->second, rows.data(), count);
    if (columns) {
      for (int64_t k = 0; k < shape[0]; ++k) {
        for (int64_t j = 0; j < shape[1]; ++j) expected[k * shape[1] + j] = rows[j * shape[0] + k];
      }
    } else {
      expected = rows;
    }

    EXPECT_TRUE(exported.contains(w + "_quantized")) << n.name << ": " << w;
    if (!exported.contains(w + "_quantized")) continue;
    const onnx::TensorProto& codes = *exported.at(w + "_quantized");
    const onnx::TensorProto& scales = *exported.at(w + "_scale");
    EXPECT_EQ(codes.data_type(), onnx::TensorProto::INT8) << n.name;
    EXPECT_EQ(static_cast<int64_t>(codes.raw_data().size()), count) << n.name;
    const int64_t channels = scales.float_data_size();
    EXPECT_EQ(channels, static_cast<int64_t>(q->second.scale.size())) << n.name;
    if (static_cast<int64_t>(codes.raw_data().size()) != count || channels == 0) continue;
    int mismatches = 0;
    for (int64_t i = 0; i < count; ++i) {
      // Conv and Gemm(transB=1) in the zoo keep output channels on axis 0, MatMul's [K, N]
      // weights on axis 1.
      const int64_t c = n.op == engine::OpKind::kMatMul ? i % channels : i / (count / channels);
      const int8_t code = static_cast<int8_t>(codes.raw_data()[i]);
      const float dequantized = code * scales.float_data(c);
      mismatches += dequantized != expected[i];
    }
    EXPECT_EQ(mismatches, 0) << n.name;
    ++compared;
  }
  return compared;
}

// Every initializer holds as many values as its shape says (ONNX Runtime refuses a model
// otherwise; the ONNX checker does not look), and every QuantizeLinear / DequantizeLinear has
// either rank-0 scale and zero point (per tensor, no axis) or 1-D ones of the length of the
// quantized axis, with that axis named. Returns the number of per-channel nodes.
int ExpectInitializersMatchTheirShapes(const onnx::ModelProto& model) {
  const auto initializers = Initializers(model.graph());
  for (const auto& [name, t] : initializers) {
    int64_t expected = 1;
    for (int64_t d : t->dims()) expected *= d;
    int64_t stored = t->float_data_size() + t->int32_data_size() + t->int64_data_size();
    if (stored == 0) {
      const int64_t bytes = t->data_type() == onnx::TensorProto::FLOAT ? 4
                            : t->data_type() == onnx::TensorProto::INT8 ||
                                    t->data_type() == onnx::TensorProto::UINT8
                                ? 1
                                : 0;
      EXPECT_NE(bytes, 0) << name << ": unexpected raw data type " << t->data_type();
      if (bytes == 0) continue;
      stored = static_cast<int64_t>(t->raw_data().size()) / bytes;
    }
    EXPECT_EQ(stored, expected) << name;
  }
  int per_channel = 0;
  for (const auto& n : model.graph().node()) {
    if (n.op_type() != "QuantizeLinear" && n.op_type() != "DequantizeLinear") continue;
    const onnx::TensorProto& scale = *initializers.at(n.input(1));
    const onnx::TensorProto& zero = *initializers.at(n.input(2));
    EXPECT_EQ(scale.dims_size(), zero.dims_size()) << n.name();
    const onnx::AttributeProto* axis = nullptr;
    for (const auto& a : n.attribute()) {
      if (a.name() == "axis") axis = &a;
    }
    if (scale.dims_size() == 0) {
      EXPECT_EQ(axis, nullptr) << n.name() << ": per-tensor parameters with an axis";
      continue;
    }
    ++per_channel;
    EXPECT_EQ(scale.dims_size(), 1) << n.name();
    EXPECT_EQ(scale.dims(0), zero.dims(0)) << n.name();
    // Per-channel parameters only quantize weights: the input is an initializer.
    EXPECT_NE(axis, nullptr) << n.name() << ": per-channel parameters without an axis";
    EXPECT_TRUE(initializers.contains(n.input(0))) << n.name();
    if (axis == nullptr || !initializers.contains(n.input(0))) continue;
    const onnx::TensorProto& x = *initializers.at(n.input(0));
    EXPECT_LT(axis->i(), x.dims_size()) << n.name();
    if (axis->i() >= x.dims_size()) continue;
    EXPECT_EQ(scale.dims(0), x.dims(axis->i())) << n.name();
  }
  return per_channel;
}

TEST(QdqExportTest, DequantizedWeightsEqualTheEnginesInt8Weights) {
  const Trial t = RunLenet(R"({"default": {"weights": "int:8:sym:channel", "inputs": "int:8",
                                           "outputs": "int:8"}})");
  absl::StatusOr<onnx::ModelProto> exported_model = ExportQdq(t);
  ASSERT_TRUE(exported_model.ok()) << exported_model.status();
  const onnx::ModelProto& qdq = *exported_model;
  const auto exported = Initializers(qdq.graph());

  int quantize_nodes = 0, dequantize_nodes = 0;
  for (const auto& n : qdq.graph().node()) {
    quantize_nodes += n.op_type() == "QuantizeLinear";
    dequantize_nodes += n.op_type() == "DequantizeLinear";
  }
  const int layers = t.reported.layers_size();
  ASSERT_EQ(layers, 5);
  EXPECT_EQ(quantize_nodes, 2 * layers);               // inputs and outputs of every layer
  EXPECT_EQ(dequantize_nodes, 2 * layers + layers);    // plus one per weight tensor
  EXPECT_EQ(ExpectDequantizedWeightsEqualTheEngines(t, qdq), layers);
  EXPECT_EQ(ExpectInitializersMatchTheirShapes(qdq), layers);
  // Activation pairs carry the scale the trial used.
  for (const v1::LayerResult& layer : t.reported.layers()) {
    const onnx::TensorProto& scale = *exported.at(layer.name() + "_output_scale");
    EXPECT_EQ(scale.float_data(0), layer.outputs().scale(0)) << layer.name();
  }
}

TEST(QdqExportTest, BatchNormalizationIsFoldedAsTheEngineFoldsIt) {
  const onnx::ModelProto resnet = ResnetWithBatchNormStatistics();
  int batch_norms = 0;
  for (const auto& n : resnet.graph().node()) batch_norms += n.op_type() == "BatchNormalization";
  ASSERT_GT(batch_norms, 0);
  const Trial t = RunModel(resnet, R"({"default": {"weights": "int:8:sym:channel",
                                                   "outputs": "int:8"}})");
  absl::StatusOr<onnx::ModelProto> exported_model = ExportQdq(t);
  ASSERT_TRUE(exported_model.ok()) << exported_model.status();
  const onnx::ModelProto& qdq = *exported_model;
  for (const auto& n : qdq.graph().node()) {
    EXPECT_NE(n.op_type(), "BatchNormalization") << n.name() << " was not folded";
  }
  EXPECT_EQ(ExpectDequantizedWeightsEqualTheEngines(t, qdq), t.reported.layers_size());
  EXPECT_EQ(ExpectInitializersMatchTheirShapes(qdq), t.reported.layers_size());
  // The folded biases are the engine's, and nothing the fold orphaned stays behind.
  engine::Graph graph = *engine::ImportOnnxModel(t.model, {}, "");
  ASSERT_EQ(engine::FoldBatchNorm(&graph), batch_norms);
  const auto exported = Initializers(qdq.graph());
  int folded_biases = 0;
  for (const auto& [name, tensor] : graph.constants) {
    if (name.find("/B_bn_folded") == std::string::npos) continue;
    ASSERT_TRUE(exported.contains(name)) << name;
    EXPECT_EQ(FloatsOf(*exported.at(name)), tensor.floats()) << name;
    ++folded_biases;
  }
  EXPECT_EQ(folded_biases, batch_norms);
  std::set<std::string> read;
  for (const auto& n : qdq.graph().node()) read.insert(n.input().begin(), n.input().end());
  for (const auto& [name, tensor] : exported) EXPECT_TRUE(read.contains(name)) << name;
}

TEST(QdqExportTest, MixedConfigsKeepFp32LayersAsTheyAre) {
  const Trial t = RunLenet(R"({"conv": {"weights": "int:8", "outputs": "int:8"}})");
  absl::StatusOr<onnx::ModelProto> exported_model = ExportQdq(t);
  ASSERT_TRUE(exported_model.ok()) << exported_model.status();
  const onnx::ModelProto& qdq = *exported_model;
  int quantize_nodes = 0;
  for (const auto& n : qdq.graph().node()) quantize_nodes += n.op_type() == "QuantizeLinear";
  EXPECT_EQ(quantize_nodes, 2);  // conv1 and conv2 outputs
  EXPECT_EQ(ExpectInitializersMatchTheirShapes(qdq), 0);  // int:8 is per tensor
  // fc weights stay float initializers.
  for (const auto& n : qdq.graph().node()) {
    if (n.op_type() == "Gemm") {
      EXPECT_EQ(n.input(1).find("_dequantized"), std::string::npos);
    }
  }
}

// The output pair sits where the engine quantizes a layer's output: after the activations it
// fuses (HardSwish here: quantizing before it would give other values), and right after the
// layer when its output has two readers (SiLU = x * Sigmoid(x) fuses nothing).
TEST(QdqExportTest, OutputPairsFollowTheActivationsTheEngineFuses) {
  engine::OnnxGraphBuilder b("fused_activations", /*opset=*/14);
  b.AddInput("x", {engine::kBatchDim, 1, 28, 28});
  b.AddInitializer("w1", engine::Tensor::Float({4, 1, 3, 3}, std::vector<float>(36, 0.1f)));
  b.AddInitializer("w2", engine::Tensor::Float({4, 4, 3, 3}, std::vector<float>(144, -0.05f)));
  b.AddInitializer("w3", engine::Tensor::Float({4, 10}, std::vector<float>(40, 0.2f)));
  b.AddNode("Conv", "c1", {"x", "w1"}, {"c1_out"});
  b.AddNode("HardSwish", "hs", {"c1_out"}, {"hs_out"});
  b.AddNode("Conv", "c2", {"hs_out", "w2"}, {"c2_out"});
  b.AddNode("Sigmoid", "sig", {"c2_out"}, {"sig_out"});
  b.AddNode("Mul", "silu", {"c2_out", "sig_out"}, {"silu_out"});
  b.AddNode("GlobalAveragePool", "gap", {"silu_out"}, {"pooled"});
  b.AddNode("Flatten", "flatten", {"pooled"}, {"features"});
  b.AddNode("MatMul", "fc", {"features", "w3"}, {"y"});
  b.AddOutput("y", engine::Shape{engine::kBatchDim, 10});
  const Trial t = RunModel(b.Build(), R"({"default": {"weights": "int:8", "inputs": "int:8",
                                                      "outputs": "int:8"}})");
  ASSERT_EQ(t.reported.layers_size(), 3);
  absl::StatusOr<onnx::ModelProto> exported_model = ExportQdq(t);
  ASSERT_TRUE(exported_model.ok()) << exported_model.status();
  std::map<std::string, const onnx::NodeProto*> producer;
  for (const auto& n : exported_model->graph().node()) producer[n.output(0)] = &n;
  auto quantized_by = [&](const std::string& layer) -> std::string {
    const auto it = producer.find(layer + "_output_float");
    return it == producer.end() ? "" : it->second->name();
  };
  EXPECT_EQ(quantized_by("c1"), "hs");  // fused: quantized after HardSwish
  EXPECT_EQ(quantized_by("c2"), "c2");  // two readers: quantized before SiLU
  EXPECT_EQ(quantized_by("fc"), "fc");  // graph output: no activation
  // Consumers keep reading the original names: c2 reads HardSwish's dequantized output.
  EXPECT_EQ(producer.at("hs_out")->op_type(), "DequantizeLinear");
  EXPECT_EQ(producer.at("c2_out")->op_type(), "DequantizeLinear");
  EXPECT_EQ(ExpectDequantizedWeightsEqualTheEngines(t, *exported_model), 3);
}

// PyTorch's bias-free Linear: MatMul(x, Transpose(W)), here also through an Identity (a shared
// initializer). The export quantizes the folded [K, N] value the engine quantized, on its output
// channels (axis 1), as a new initializer; the Transposes, Identity and the float weights leave
// the graph. ONNX Runtime runs it in ort_agreement_test.cc.
TEST(QdqExportTest, MatMulWeightsThroughTransposeAndIdentityAreQuantizedOnOutputChannels) {
  const onnx::ModelProto mlp = testing::BiasFreeLinearMlp();
  for (const char* weights : {"int:8:sym", "int:8:sym:channel", "int:8:asym:channel"}) {
    SCOPED_TRACE(weights);
    const Trial t = RunModel(mlp, absl::StrCat(R"({"default": {"weights": ")", weights,
                                               R"(", "inputs": "int:8", "outputs": "int:8"}})"));
    ASSERT_EQ(t.reported.layers_size(), 2);
    absl::StatusOr<onnx::ModelProto> exported_model = ExportQdq(t);
    ASSERT_TRUE(exported_model.ok()) << exported_model.status();
    const onnx::ModelProto& qdq = *exported_model;
    const bool per_channel = absl::StrContains(weights, "channel");
    if (!absl::StrContains(weights, "asym")) {  // the helper reads int8 codes
      EXPECT_EQ(ExpectDequantizedWeightsEqualTheEngines(t, qdq), 2);
    }
    EXPECT_EQ(ExpectInitializersMatchTheirShapes(qdq), per_channel ? 2 : 0);
    for (const auto& n : qdq.graph().node()) {
      EXPECT_NE(n.op_type(), "Transpose") << n.name();
      EXPECT_NE(n.op_type(), "Identity") << n.name();
    }
    const auto exported = Initializers(qdq.graph());
    EXPECT_FALSE(exported.contains("fc1.weight"));
    EXPECT_FALSE(exported.contains("fc2.weight"));
    // The codes have the transposed shape [K, N]; per channel, N scales on axis 1.
    const onnx::TensorProto& fc1 = *exported.at("fc1.weight_t_quantized");
    ASSERT_EQ(fc1.dims_size(), 2);
    EXPECT_EQ(fc1.dims(0), 784);
    EXPECT_EQ(fc1.dims(1), 64);
    EXPECT_EQ(exported.at("fc1.weight_t_scale")->float_data_size(), per_channel ? 64 : 1);
    const onnx::TensorProto& fc2 = *exported.at("fc2.weight_t_quantized");
    EXPECT_EQ(fc2.dims(0), 64);
    EXPECT_EQ(fc2.dims(1), 10);
    // Element (k, n) of the codes is W[n, k] / scale[n], rounded: checked against the float
    // weights of the input model directly (independently of the engine).
    const auto original = Initializers(mlp.graph());
    const std::vector<float> w = FloatsOf(*original.at("fc1.weight"));  // [64, 784]
    const onnx::TensorProto& scales = *exported.at("fc1.weight_t_scale");
    const onnx::TensorProto& zeros = *exported.at("fc1.weight_t_zero_point");
    int mismatches = 0;
    for (int k = 0; k < 784; ++k) {
      for (int n = 0; n < 64; ++n) {
        const int c = per_channel ? n : 0;
        const bool asym = fc1.data_type() == onnx::TensorProto::UINT8;
        const int code = asym ? static_cast<uint8_t>(fc1.raw_data()[k * 64 + n])
                              : static_cast<int8_t>(fc1.raw_data()[k * 64 + n]);
        const double expected = std::clamp<double>(
            std::nearbyint(static_cast<double>(w[n * 784 + k]) / scales.float_data(c)) +
                zeros.int32_data(c),
            asym ? 0 : -128, asym ? 255 : 127);
        mismatches += code != expected;
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

// Weights that reach the layer through any other node than Identity / Transpose (which the
// export would have to evaluate as the engine's constant folding does) are refused, naming the
// layer and the node that produces them.
TEST(QdqExportTest, MatMulWeightsFromAComputedValueAreRefusedByName) {
  const Trial t = RunModel(testing::BiasFreeLinearMlp(),
                           R"({"default": {"weights": "int:8", "outputs": "int:8"}})");
  onnx::ModelProto model = t.model;
  // fc1's weights become Neg(W): the trial's result no longer describes this model.
  for (auto& n : *model.mutable_graph()->mutable_node()) {
    if (n.name() == "/fc1/Transpose") n.set_op_type("Neg");
  }
  absl::StatusOr<std::string> r = server::BuildQdqModel(model.SerializeAsString(), t.reported);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("/fc1/MatMul"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("Neg node '/fc1/Transpose'"), std::string::npos)
      << r.status();
}

TEST(QdqExportTest, FormatsWithoutAnExactQdqFormAreRefusedByName) {
  const Trial fixed = RunLenet(R"({"fc": {"weights": "fixed:8"}})");
  absl::StatusOr<std::string> r = server::BuildQdqModel(fixed.model.SerializeAsString(),
                                                        fixed.reported);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("fixed:8"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("weights"), std::string::npos) << r.status();

  const Trial fp32 = RunLenet("{}");
  r = server::BuildQdqModel(fp32.model.SerializeAsString(), fp32.reported);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("quantizes nothing"), std::string::npos) << r.status();

}

}  // namespace
}  // namespace bitsweep
