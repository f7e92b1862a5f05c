// The compiled engine against the scalar reference on whole networks (every zoo architecture, in
// oneDNN's blocked layouts, with fused activations and folded BatchNorm), plus the graph rewrites
// and the errors of import and compilation.
#include <cmath>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

Tensor RandomInput(Shape shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Tensor t = Tensor::Float(std::move(shape));
  for (float& v : t.floats()) v = uniform(rng);
  return t;
}

Tensor RunEngine(const Graph& graph, const Tensor& input, const NetworkOptions& base = {}) {
  NetworkOptions options = base;
  options.batch = input.shape()[0];
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(graph, options);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return {};
  std::map<std::string, Tensor> outputs;
  const absl::Status run = (*net)->Run({{graph.inputs[0].name, &input}}, &outputs);
  EXPECT_TRUE(run.ok()) << run;
  return outputs[graph.outputs[0]];
}

// Largest |a - b| / (1e-3 + |b|) over all elements; shapes must match.
double MaxRelativeError(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return 1e9;
  double worst = 0;
  for (int64_t i = 0; i < a.num_elements(); ++i) {
    worst = std::max(worst, std::fabs(double{a.floats()[i]} - b.floats()[i]) /
                                (1e-3 + std::fabs(double{b.floats()[i]})));
  }
  return worst;
}

class ZooNetworkTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooNetworkTest, MatchesScalarReference) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(GetParam(), {});
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, GetParam());
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor input = RandomInput({3, 1, 28, 28}, 7);
  absl::StatusOr<std::map<std::string, Tensor>> expected =
      reference::RunReference(*model, {{"input", input}});
  ASSERT_TRUE(expected.ok()) << expected.status();
  const Tensor got = RunEngine(*graph, input, {.threads = 2});
  EXPECT_LT(MaxRelativeError(got, expected->at("logits")), 1e-4);
}

TEST_P(ZooNetworkTest, BatchRowsAreIndependent) {
  // Row i of a batched run equals a batch-1 run of row i: no cross-talk through blocked layouts
  // or padding of the last batch.
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(GetParam(), {});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  const Tensor batch = RandomInput({5, 1, 28, 28}, 11);
  const Tensor all = RunEngine(*graph, batch);
  const int64_t per = 28 * 28, classes = 10;
  for (int64_t row : {0, 4}) {
    Tensor one = Tensor::Float({1, 1, 28, 28},
                               {batch.floats().begin() + row * per,
                                batch.floats().begin() + (row + 1) * per});
    const Tensor single = RunEngine(*graph, one);
    for (int64_t c = 0; c < classes; ++c) {
      EXPECT_NEAR(single.floats()[c], all.floats()[row * classes + c],
                  1e-5 * (1 + std::fabs(single.floats()[c])));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooNetworkTest, ::testing::ValuesIn(zoo::ArchitectureNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(c) ? c : '_';
                           return name;
                         });

TEST(GraphPassesTest, BatchNormFoldingChangesNoOutputBeyond1e5) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("resnet-mini", {.seed = 3});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  Graph folded = *graph;
  EXPECT_EQ(FoldBatchNorm(&folded), 6);  // stem, two per block, the projection
  for (const Node& n : folded.nodes) EXPECT_NE(n.op, OpKind::kBatchNorm) << n.name;

  const Tensor input = RandomInput({4, 1, 28, 28}, 5);
  const Tensor with = RunEngine(*graph, input, {.fold_batch_norm = true});
  const Tensor without = RunEngine(*graph, input, {.fold_batch_norm = false});
  ASSERT_EQ(with.shape(), without.shape());
  for (int64_t i = 0; i < with.num_elements(); ++i) {
    EXPECT_NEAR(with.floats()[i], without.floats()[i], 1e-5 * (1 + std::fabs(without.floats()[i])));
  }
}

TEST(GraphPassesTest, ActivationsFuseIntoTheirLayers) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok());
  Graph fused = *graph;
  EXPECT_EQ(FuseActivations(&fused), 4);  // relu after conv1, conv2, fc1, fc2
  int layers_with_relu = 0;
  for (const Node& n : fused.nodes) {
    EXPECT_NE(n.op, OpKind::kRelu) << n.name;
    layers_with_relu += n.post_ops.size() == 1 && n.post_ops[0].op == OpKind::kRelu;
  }
  EXPECT_EQ(layers_with_relu, 4);
  const Tensor input = RandomInput({2, 1, 28, 28}, 9);
  EXPECT_LT(MaxRelativeError(RunEngine(*graph, input, {.fuse_activations = true}),
                             RunEngine(*graph, input, {.fuse_activations = false})),
            1e-5);
}

// A one-node model around `op` for the error tests.
onnx::ModelProto SingleNodeModel(const std::string& op,
                                 const std::vector<onnx::AttributeProto>& attributes,
                                 bool constant_weights = true) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 1, 4, 4});
  std::vector<std::string> inputs = {"x"};
  if (op == "Conv") {
    if (constant_weights) {
      b.AddFloatInitializer("w", {2, 1, 3, 3}, std::vector<float>(18, 0.5f));
    } else {
      b.AddInput("w", {2, 1, 3, 3});
    }
    inputs.push_back("w");
  }
  b.AddNode(op, "the_node", inputs, {"y"}, attributes);
  // The checker wants output shapes: Conv 3x3 gives [N,2,2,2], MaxPool 2x2 [N,1,3,3].
  Shape out = {kBatchDim, 1, 4, 4};
  if (op == "Conv") out = {kBatchDim, 2, 2, 2};
  if (op == "MaxPool") out = {kBatchDim, 1, 3, 3};
  b.AddOutput("y", out);
  return b.Build();
}

TEST(ImportErrorsTest, UnsupportedOperatorNamesNodeAndOperator) {
  absl::StatusOr<Graph> g = ImportOnnxModel(SingleNodeModel("Erf", {}));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(g.status().message().find("'the_node'"), std::string::npos) << g.status();
  EXPECT_NE(g.status().message().find("Erf"), std::string::npos) << g.status();
}

TEST(ImportErrorsTest, UnsupportedAttributeValueNamesTheAttribute) {
  absl::StatusOr<Graph> g =
      ImportOnnxModel(SingleNodeModel("MaxPool", {IntsAttr("kernel_shape", {2, 2}),
                                                  IntAttr("storage_order", 1)}));
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("storage_order"), std::string::npos) << g.status();
  EXPECT_NE(g.status().message().find("'the_node'"), std::string::npos) << g.status();
}

TEST(ImportErrorsTest, ConvWeightsMustBeConstant) {
  absl::StatusOr<Graph> g = ImportOnnxModel(SingleNodeModel("Conv", {}, false));
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("weights ('w') must be a constant; it is a graph input"),
            std::string::npos)
      << g.status();
  // Bound at import (as `bitsweep run` does), the same model compiles and runs.
  ImportOptions bound;
  bound.bound_inputs["w"] = Tensor::Float({2, 1, 3, 3}, std::vector<float>(18, 1.0f));
  absl::StatusOr<Graph> ok = ImportOnnxModel(SingleNodeModel("Conv", {}, false), bound);
  ASSERT_TRUE(ok.ok()) << ok.status();
  Tensor x = Tensor::Float({1, 1, 4, 4}, std::vector<float>(16, 1.0f));
  const Tensor y = RunEngine(*ok, x);
  ASSERT_EQ(y.shape(), (Shape{1, 2, 2, 2}));
  for (float v : y.floats()) EXPECT_FLOAT_EQ(v, 9.0f);  // 3x3 window of ones
}

TEST(ImportErrorsTest, CheckerFailureIsInvalidArgument) {
  onnx::ModelProto model = SingleNodeModel("Relu", {});
  model.mutable_graph()->mutable_node(0)->clear_input();  // Relu needs one input
  absl::StatusOr<Graph> g = ImportOnnxModel(model, {}, "broken.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("broken.onnx"), std::string::npos) << g.status();
}

// Found by tests/fuzz (onnx_import): the checker accepts a graph output that nothing computes;
// the importer returned a graph reading an undefined value.
TEST(ImportErrorsTest, GraphOutputNothingComputesIsAnError) {
  onnx::ModelProto model = SingleNodeModel("Relu", {});
  model.mutable_graph()->mutable_node(0)->set_output(0, "z");
  absl::StatusOr<Graph> g = ImportOnnxModel(model, {}, "dangling.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("dangling.onnx: graph output 'y' is not computed"),
            std::string::npos)
      << g.status();
}

// Found by tests/fuzz (onnx_import): a zero stride made libonnx's shape inference divide by
// zero (SIGFPE); window attributes are now checked first. Also the fuzzer's own input.
TEST(ImportErrorsTest, ZeroStrideOrKernelIsAnErrorNotACrash) {
  for (const char* attribute : {"strides", "dilations", "kernel_shape"}) {
    absl::StatusOr<Graph> g = ImportOnnxModel(
        SingleNodeModel("MaxPool", {IntsAttr("kernel_shape", {2, 2}), IntsAttr(attribute, {2, 0})}),
        {}, "zero.onnx");
    ASSERT_FALSE(g.ok()) << attribute;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(absl::StrCat("attribute '", attribute,
                                                     "' has 0; every value must be >= 1")),
              std::string::npos)
        << g.status();
  }
  absl::StatusOr<Graph> fuzzed = ImportOnnxFile(
      std::string(BITSWEEP_SOURCE_DIR) + "/tests/fuzz/corpus/onnx_import/crash-zero-stride-conv");
  ASSERT_FALSE(fuzzed.ok());
  EXPECT_NE(fuzzed.status().message().find("attribute 'strides' has 0"), std::string::npos)
      << fuzzed.status();
}

TEST(ImportErrorsTest, MissingAndCorruptFiles) {
  absl::StatusOr<Graph> missing = ImportOnnxFile("/nonexistent/model.onnx");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/not_a_model.onnx";
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not a protobuf \xff\xff\xff", f);
  std::fclose(f);
  absl::StatusOr<Graph> corrupt = ImportOnnxFile(path);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(corrupt.status().message().find(path), std::string::npos) << corrupt.status();
}

TEST(CompileErrorsTest, ShapeMismatchNamesTheNode) {
  // Conv weights expect 1 input channel; compile it for 3.
  absl::StatusOr<Graph> g = ImportOnnxModel(SingleNodeModel("Conv", {}));
  ASSERT_TRUE(g.ok()) << g.status();
  NetworkOptions options;
  options.input_shapes["x"] = {1, 3, 4, 4};
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(*g, options);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.status().message().find("'the_node'"), std::string::npos) << net.status();
}

TEST(CompileErrorsTest, RunChecksInputShape) {
  absl::StatusOr<Graph> g = ImportOnnxModel(SingleNodeModel("Relu", {}));
  ASSERT_TRUE(g.ok());
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(*g, {.batch = 2});
  ASSERT_TRUE(net.ok()) << net.status();
  Tensor wrong = Tensor::Float({3, 1, 4, 4});
  std::map<std::string, Tensor> out;
  absl::Status s = (*net)->Run({{"x", &wrong}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("[2,1,4,4]"), std::string::npos) << s;
  EXPECT_EQ((*net)->Run({}, &out).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitsweep::engine
