// QDQ export against the engine: the dequantized weights of the exported model equal the
// engine's own int:8 quantization of the same weights, activation pairs carry the calibrated
// scales, and formats without an exact QDQ form are refused by name.
#include "server/export/qdq.h"

#include <unistd.h>

#include <filesystem>
#include <map>

#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/dataset.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/quant/config.h"
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

Trial RunLenet(const std::string& config_json) {
  Trial t;
  const std::string path = (fs::path(::testing::TempDir()) /
                            ("qdq_lenet5_" + std::to_string(::getpid()) + ".onnx")).string();
  engine::SaveModel(*engine::zoo::BuildArchitecture("lenet5", {}), path).IgnoreError();
  t.model = *engine::ReadOnnxModel(path);
  v1::EvalSettings settings;
  settings.mutable_dataset()->set_train(kData + "/train");
  settings.mutable_dataset()->set_eval(kData + "/t10k");
  settings.mutable_dataset()->set_eval_limit(200);
  settings.mutable_dataset()->set_calibration_samples(100);
  v1::TrialSpec spec;
  spec.set_config_json(config_json);
  worker::TrialExecutor executor;
  absl::StatusOr<v1::TrialResult> r = executor.Execute({.hash = "lenet5", .path = path},
                                                       settings, spec, {.threads = 1});
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) t.reported = *r;

  engine::Preprocessing limit_eval, limit_calibration;
  limit_eval.limit = 200;
  limit_calibration.limit = 100;
  const engine::Dataset eval = *engine::LoadDataset(kData + "/t10k", limit_eval);
  const engine::Dataset calibration = *engine::LoadDataset(kData + "/train", limit_calibration);
  const engine::Graph graph = *engine::ImportOnnxModel(t.model, {}, path);
  const engine::quant::QuantConfig config = *engine::quant::ParseQuantConfig(config_json);
  engine::TrialInputs in{.graph = &graph, .eval = &eval, .calibration = &calibration,
                         .config = &config};
  absl::StatusOr<engine::TrialResult> e = engine::RunTrial(in, {.batch = 256, .threads = 1});
  EXPECT_TRUE(e.ok()) << e.status();
  if (e.ok()) t.engine = *std::move(e);
  return t;
}

std::map<std::string, const onnx::TensorProto*> Initializers(const onnx::GraphProto& g) {
  std::map<std::string, const onnx::TensorProto*> m;
  for (const auto& t : g.initializer()) m[t.name()] = &t;
  return m;
}

std::vector<float> FloatsOf(const onnx::TensorProto& t) {
  if (t.float_data_size() > 0) return {t.float_data().begin(), t.float_data().end()};
  std::vector<float> v(t.raw_data().size() / 4);
  std::memcpy(v.data(), t.raw_data().data(), v.size() * 4);
  return v;
}

TEST(QdqExportTest, DequantizedWeightsEqualTheEnginesInt8Weights) {
  const Trial t = RunLenet(R"({"default": {"weights": "int:8:sym:channel", "inputs": "int:8",
                                           "outputs": "int:8"}})");
  absl::StatusOr<std::string> bytes = server::BuildQdqModel(t.model.SerializeAsString(),
                                                            t.reported);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto qdq;
  ASSERT_TRUE(qdq.ParseFromString(*bytes));
  const auto original = Initializers(t.model.graph());
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

  for (const auto& n : t.model.graph().node()) {
    auto q = t.engine.eval.weight_quantizers.find(n.name());
    if (q == t.engine.eval.weight_quantizers.end()) continue;
    const std::string w = n.input(1);
    std::vector<float> expected = FloatsOf(*original.at(w));
    const int64_t count = static_cast<int64_t>(expected.size());
    engine::quant::QuantizeInPlace(q->second, expected.data(), count);

    const onnx::TensorProto& codes = *exported.at(w + "_quantized");
    const onnx::TensorProto& scales = *exported.at(w + "_scale");
    ASSERT_EQ(codes.data_type(), onnx::TensorProto::INT8) << n.name();
    ASSERT_EQ(static_cast<int64_t>(codes.raw_data().size()), count) << n.name();
    const int64_t channels = scales.float_data_size();
    ASSERT_EQ(channels, static_cast<int64_t>(q->second.scale.size())) << n.name();
    int mismatches = 0;
    for (int64_t i = 0; i < count; ++i) {
      // Conv and Gemm(transB=1) in the zoo keep output channels on axis 0.
      const int64_t c = i / (count / channels);
      const int8_t code = static_cast<int8_t>(codes.raw_data()[i]);
      const float dequantized = code * scales.float_data(c);
      mismatches += dequantized != expected[i];
    }
    EXPECT_EQ(mismatches, 0) << n.name();
  }
  // Activation pairs carry the scale the trial used.
  for (const v1::LayerResult& layer : t.reported.layers()) {
    const onnx::TensorProto& scale = *exported.at(layer.name() + "_output_scale");
    EXPECT_EQ(scale.float_data(0), layer.outputs().scale(0)) << layer.name();
  }
}

TEST(QdqExportTest, MixedConfigsKeepFp32LayersAsTheyAre) {
  const Trial t = RunLenet(R"({"conv": {"weights": "int:8", "outputs": "int:8"}})");
  absl::StatusOr<std::string> bytes = server::BuildQdqModel(t.model.SerializeAsString(),
                                                            t.reported);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto qdq;
  ASSERT_TRUE(qdq.ParseFromString(*bytes));
  int quantize_nodes = 0;
  for (const auto& n : qdq.graph().node()) quantize_nodes += n.op_type() == "QuantizeLinear";
  EXPECT_EQ(quantize_nodes, 2);  // conv1 and conv2 outputs
  // fc weights stay float initializers.
  for (const auto& n : qdq.graph().node()) {
    if (n.op_type() == "Gemm") {
      EXPECT_EQ(n.input(1).find("_dequantized"), std::string::npos);
    }
  }
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

  // ResNet-mini has BatchNormalization: its trials quantize folded weights.
  onnx::ModelProto resnet = *engine::zoo::BuildArchitecture("resnet-mini", {});
  v1::TrialResult fake;
  v1::LayerResult* layer = fake.add_layers();
  layer->set_name(resnet.graph().node(0).name());
  r = server::BuildQdqModel(resnet.SerializeAsString(), fake);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("BatchNormalization"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace bitsweep
