// Tests for the model zoo (worker/engine/zoo): every architecture builds, passes the ONNX checker,
// is deterministic by seed and runs on the scalar reference with the documented input/output.
#include "worker/engine/zoo/zoo.h"

#include <cmath>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "worker/engine/onnx_import.h"
#include "onnx/checker.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/tensor.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine::zoo {
namespace {

class ZooTest : public ::testing::TestWithParam<std::string> {};

// Concatenated raw bytes of all initializers.
std::string WeightBytes(const onnx::ModelProto& model) {
  std::string bytes;
  for (const auto& init : model.graph().initializer()) bytes += init.raw_data();
  return bytes;
}

TEST_P(ZooTest, BuildsAndPassesChecker) {
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture(GetParam(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_NO_THROW(onnx::checker::check_model(*model));
  EXPECT_EQ(model->ir_version(), 8);
  ASSERT_EQ(model->opset_import_size(), 1);
  EXPECT_EQ(model->opset_import(0).version(), 13);

  const onnx::GraphProto& graph = model->graph();
  ASSERT_EQ(graph.input_size(), 1);
  EXPECT_EQ(graph.input(0).name(), "input");
  const auto& in_shape = graph.input(0).type().tensor_type().shape();
  ASSERT_EQ(in_shape.dim_size(), 4);
  EXPECT_EQ(in_shape.dim(0).dim_param(), "N");
  EXPECT_EQ(in_shape.dim(1).dim_value(), 1);
  EXPECT_EQ(in_shape.dim(2).dim_value(), 28);
  EXPECT_EQ(in_shape.dim(3).dim_value(), 28);
  ASSERT_EQ(graph.output_size(), 1);
  EXPECT_EQ(graph.output(0).name(), "logits");
  const auto& out_shape = graph.output(0).type().tensor_type().shape();
  ASSERT_EQ(out_shape.dim_size(), 2);
  EXPECT_EQ(out_shape.dim(0).dim_param(), "N");
  EXPECT_EQ(out_shape.dim(1).dim_value(), 10);

  // Every node has a unique, non-empty name.
  std::map<std::string, int> names;
  for (const auto& node : graph.node()) {
    EXPECT_FALSE(node.name().empty());
    EXPECT_EQ(++names[node.name()], 1) << "duplicate node name " << node.name();
  }
  EXPECT_TRUE(names.count("conv1"));
}

TEST_P(ZooTest, DeterministicBySeed) {
  ArchOptions a, b;
  a.seed = b.seed = 7;
  absl::StatusOr<onnx::ModelProto> m1 = BuildArchitecture(GetParam(), a);
  absl::StatusOr<onnx::ModelProto> m2 = BuildArchitecture(GetParam(), b);
  ASSERT_TRUE(m1.ok() && m2.ok());
  std::string s1, s2;
  ASSERT_TRUE(m1->SerializeToString(&s1));
  ASSERT_TRUE(m2->SerializeToString(&s2));
  EXPECT_EQ(s1, s2);

  b.seed = 8;
  absl::StatusOr<onnx::ModelProto> m3 = BuildArchitecture(GetParam(), b);
  ASSERT_TRUE(m3.ok());
  EXPECT_EQ(m3->graph().initializer_size(), m1->graph().initializer_size());
  EXPECT_NE(WeightBytes(*m1), WeightBytes(*m3));
}

TEST_P(ZooTest, ReferenceProducesFiniteLogits) {
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture(GetParam(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  Tensor x = Tensor::Float({2, 1, 28, 28});
  for (float& v : x.floats()) v = dist(rng);
  absl::StatusOr<std::map<std::string, Tensor>> out =
      reference::RunReference(*model, {{"input", x}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  const Tensor& logits = out->at("logits");
  ASSERT_EQ(logits.shape(), (Shape{2, 10}));
  bool any_nonzero = false;
  for (float v : logits.floats()) {
    EXPECT_TRUE(std::isfinite(v));
    any_nonzero |= v != 0.0f;
  }
  EXPECT_TRUE(any_nonzero);
}

TEST_P(ZooTest, OtherInputShapesAndClassCounts) {
  ArchOptions o;
  o.channels = 3;
  o.height = o.width = 32;
  o.num_classes = 7;
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture(GetParam(), o);
  ASSERT_TRUE(model.ok()) << model.status();
  Tensor x = Tensor::Float({1, 3, 32, 32});
  absl::StatusOr<std::map<std::string, Tensor>> out =
      reference::RunReference(*model, {{"input", x}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("logits").shape(), (Shape{1, 7}));

  o.height = 0;
  EXPECT_EQ(BuildArchitecture(GetParam(), o).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ZooTest, ::testing::ValuesIn(ArchitectureNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(ZooNamesTest, ListsTheFourArchitectures) {
  EXPECT_EQ(ArchitectureNames(),
            (std::vector<std::string>{"lenet5", "squeezenet-mini", "resnet-mini", "alexnet-mini"}));
}

TEST(ZooNamesTest, UnknownNameIsInvalidArgumentListingKnownNames) {
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture("vgg16", {});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("vgg16"), std::string::npos);
  EXPECT_NE(model.status().message().find("lenet5"), std::string::npos);
  EXPECT_NE(model.status().message().find("alexnet-mini"), std::string::npos);
}

TEST(ZooNamesTest, TooSmallInputIsInvalidArgument) {
  ArchOptions o;
  o.height = o.width = 4;  // lenet5's second 5x5 conv sees a 2x2 map
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture("lenet5", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("conv2"), std::string::npos) << model.status();
}

TEST(ZooNamesTest, StableNodeNames) {
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture("squeezenet-mini", {});
  ASSERT_TRUE(model.ok());
  std::map<std::string, std::string> ops;
  for (const auto& node : model->graph().node()) ops[node.name()] = node.op_type();
  EXPECT_EQ(ops["fire2_squeeze"], "Conv");
  EXPECT_EQ(ops["fire2_expand1x1"], "Conv");
  EXPECT_EQ(ops["fire2_expand3x3"], "Conv");
  EXPECT_EQ(ops["fire2_concat"], "Concat");
  EXPECT_EQ(ops["pool1"], "MaxPool");

  model = BuildArchitecture("resnet-mini", {});
  ASSERT_TRUE(model.ok());
  ops.clear();
  for (const auto& node : model->graph().node()) ops[node.name()] = node.op_type();
  EXPECT_EQ(ops["bn1"], "BatchNormalization");
  EXPECT_EQ(ops["block2_proj_conv"], "Conv");
  EXPECT_EQ(ops["block2_add"], "Add");
  EXPECT_EQ(ops["fc1"], "Gemm");
}

TEST(OnnxBuilderTest, SaveAndLoadRoundTrip) {
  absl::StatusOr<onnx::ModelProto> model = BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) /
       ("zoo_test_lenet5_" + std::to_string(::getpid()) + ".onnx")).string();
  ASSERT_TRUE(SaveModel(*model, path).ok());
  absl::StatusOr<onnx::ModelProto> loaded = ReadOnnxModel(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->SerializeAsString(), model->SerializeAsString());
  std::filesystem::remove(path);

  absl::StatusOr<onnx::ModelProto> missing = ReadOnnxModel("/nonexistent/dir/m.onnx");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/m.onnx"), std::string::npos);
  EXPECT_FALSE(SaveModel(*model, "/nonexistent/dir/m.onnx").ok());
}

}  // namespace
}  // namespace bitsweep::engine::zoo
