// Constant folding at import (constant_folding.h, onnx_import.h): each folded operator against
// hand-computed values, and the importer's use of it on the graph shapes PyTorch exports (biases
// through Identity, shape arithmetic feeding Reshape), dead-node removal, and the errors for what
// cannot be folded or imported.
#include "worker/engine/constant_folding.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine {
namespace {

onnx::NodeProto MakeNode(const std::string& op, int inputs,
                         const std::vector<onnx::AttributeProto>& attributes = {}) {
  onnx::NodeProto node;
  node.set_op_type(op);
  node.set_name("n");
  for (int i = 0; i < inputs; ++i) node.add_input("in" + std::to_string(i));
  node.add_output("out");
  for (const auto& a : attributes) *node.add_attribute() = a;
  return node;
}

Tensor Fold(const onnx::NodeProto& node, const std::vector<const Tensor*>& inputs,
            int64_t opset = 13, std::optional<Shape> shape = std::nullopt) {
  absl::StatusOr<std::vector<Tensor>> out = FoldConstantNode(node, inputs, opset, shape);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok() || out->empty()) return Tensor();
  return (*out)[0];
}

TEST(FoldConstantNodeTest, ShapeWithStartAndEnd) {
  const Tensor all = Fold(MakeNode("Shape", 1), {nullptr}, 13, Shape{2, 3, 64, 64});
  EXPECT_EQ(all.int64s(), (std::vector<int64_t>{2, 3, 64, 64}));
  const Tensor tail =
      Fold(MakeNode("Shape", 1, {IntAttr("start", -2)}), {nullptr}, 15, Shape{2, 3, 64, 64});
  EXPECT_EQ(tail.int64s(), (std::vector<int64_t>{64, 64}));
  EXPECT_FALSE(FoldConstantNode(MakeNode("Shape", 1), {nullptr}, 13, std::nullopt).ok());
}

TEST(FoldConstantNodeTest, GatherAlongAnAxisWithNegativeIndices) {
  const Tensor data = Tensor::Int64({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor idx = Tensor::Int64({2}, {-1, 0});
  const Tensor out = Fold(MakeNode("Gather", 2, {IntAttr("axis", 1)}), {&data, &idx});
  EXPECT_EQ(out.shape(), (Shape{2, 2}));
  EXPECT_EQ(out.int64s(), (std::vector<int64_t>{3, 1, 6, 4}));
  const Tensor scalar_idx = Tensor::Int64({}, {1});
  const Tensor row = Fold(MakeNode("Gather", 2), {&data, &scalar_idx});
  EXPECT_EQ(row.shape(), (Shape{3}));
  EXPECT_EQ(row.int64s(), (std::vector<int64_t>{4, 5, 6}));
  const Tensor bad = Tensor::Int64({1}, {3});
  EXPECT_FALSE(FoldConstantNode(MakeNode("Gather", 2), {&data, &bad}, 13, std::nullopt).ok());
}

TEST(FoldConstantNodeTest, SliceWithNegativeStepAndClampedEnds) {
  const Tensor data = Tensor::Float({2, 4}, {0, 1, 2, 3, 4, 5, 6, 7});
  const Tensor starts = Tensor::Int64({1}, {-1});
  const Tensor ends = Tensor::Int64({1}, {std::numeric_limits<int64_t>::min()});
  const Tensor axes = Tensor::Int64({1}, {1});
  const Tensor steps = Tensor::Int64({1}, {-2});
  const Tensor out =
      Fold(MakeNode("Slice", 5), {&data, &starts, &ends, &axes, &steps});
  EXPECT_EQ(out.shape(), (Shape{2, 2}));
  EXPECT_EQ(out.floats(), (std::vector<float>{3, 1, 7, 5}));
  // ends past the dimension (INT64_MAX, as PyTorch writes "to the end") clamp.
  const Tensor s1 = Tensor::Int64({1}, {1});
  const Tensor e1 = Tensor::Int64({1}, {std::numeric_limits<int64_t>::max()});
  const Tensor tail = Fold(MakeNode("Slice", 4), {&data, &s1, &e1, &axes});
  EXPECT_EQ(tail.floats(), (std::vector<float>{1, 2, 3, 5, 6, 7}));
}

TEST(FoldConstantNodeTest, ConcatUnsqueezeReshapeTranspose) {
  const Tensor a = Tensor::Int64({1}, {2});
  const Tensor b = Tensor::Int64({2}, {-1, 7});
  EXPECT_EQ(Fold(MakeNode("Concat", 2, {IntAttr("axis", 0)}), {&a, &b}).int64s(),
            (std::vector<int64_t>{2, -1, 7}));
  const Tensor s = Tensor::Int64({}, {5});
  const Tensor axes = Tensor::Int64({1}, {0});
  const Tensor u = Fold(MakeNode("Unsqueeze", 2), {&s, &axes});
  EXPECT_EQ(u.shape(), (Shape{1}));
  const Tensor u11 = Fold(MakeNode("Unsqueeze", 1, {IntsAttr("axes", {0})}), {&s}, 11);
  EXPECT_EQ(u11.shape(), (Shape{1}));
  const Tensor m = Tensor::Float({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor target = Tensor::Int64({2}, {3, -1});
  EXPECT_EQ(Fold(MakeNode("Reshape", 2), {&m, &target}).shape(), (Shape{3, 2}));
  const Tensor t = Fold(MakeNode("Transpose", 1, {IntsAttr("perm", {1, 0})}), {&m});
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(t.floats(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(FoldConstantNodeTest, ArithmeticBroadcastsAndIntegerDivisionTruncates) {
  const Tensor a = Tensor::Int64({2}, {7, -7});
  const Tensor two = Tensor::Int64({}, {2});
  EXPECT_EQ(Fold(MakeNode("Div", 2), {&a, &two}).int64s(), (std::vector<int64_t>{3, -3}));
  EXPECT_EQ(Fold(MakeNode("Mul", 2), {&a, &two}).int64s(), (std::vector<int64_t>{14, -14}));
  const Tensor col = Tensor::Float({2, 1}, {1, 2});
  const Tensor row = Tensor::Float({3}, {10, 20, 30});
  const Tensor sum = Fold(MakeNode("Sub", 2), {&row, &col});
  EXPECT_EQ(sum.shape(), (Shape{2, 3}));
  EXPECT_EQ(sum.floats(), (std::vector<float>{9, 19, 29, 8, 18, 28}));
  const Tensor mixed = Tensor::Float({}, {2});
  EXPECT_FALSE(FoldConstantNode(MakeNode("Add", 2), {&a, &mixed}, 13, std::nullopt).ok());
}

TEST(FoldConstantNodeTest, RangeConstantOfShapeWhereExpandCast) {
  const Tensor start = Tensor::Int64({}, {1}), limit = Tensor::Int64({}, {8}),
               delta = Tensor::Int64({}, {3});
  EXPECT_EQ(Fold(MakeNode("Range", 3), {&start, &limit, &delta}).int64s(),
            (std::vector<int64_t>{1, 4, 7}));
  const Tensor shape = Tensor::Int64({2}, {2, 2});
  const Tensor zeros = Fold(MakeNode("ConstantOfShape", 1), {&shape});
  EXPECT_EQ(zeros.floats(), (std::vector<float>(4, 0.0f)));
  const Tensor v = Tensor::Int64({3}, {5, -1, 5});
  const Tensor five = Tensor::Int64({}, {5});
  const Tensor eq = Fold(MakeNode("Equal", 2), {&v, &five});
  EXPECT_EQ(eq.int64s(), (std::vector<int64_t>{1, 0, 1}));
  const Tensor ones = Tensor::Int64({}, {1});
  EXPECT_EQ(Fold(MakeNode("Where", 3), {&eq, &ones, &v}).int64s(),
            (std::vector<int64_t>{1, -1, 1}));
  const Tensor col = Tensor::Float({2, 1}, {1, 2});
  const Tensor to = Tensor::Int64({2}, {2, 3});
  EXPECT_EQ(Fold(MakeNode("Expand", 2), {&col, &to}).floats(),
            (std::vector<float>{1, 1, 1, 2, 2, 2}));
  const Tensor f = Tensor::Float({2}, {2.9f, -2.9f});
  EXPECT_EQ(Fold(MakeNode("Cast", 1, {IntAttr("to", onnx::TensorProto::INT64)}), {&f}).int64s(),
            (std::vector<int64_t>{2, -2}));
}

// Found by tests/fuzz (onnx_import) and its review: sizes come from the model file, so folding
// refuses results beyond its limit (2^27 elements) instead of allocating them, and no size
// computation overflows.
TEST(FoldConstantNodeTest, HugeResultsAreErrorsNotAllocations) {
  auto expect_refused = [](const onnx::NodeProto& node, const std::vector<const Tensor*>& in) {
    absl::StatusOr<std::vector<Tensor>> out = FoldConstantNode(node, in, 13, std::nullopt);
    ASSERT_FALSE(out.ok()) << node.op_type();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("node 'n' (" + node.op_type() + ")"), std::string::npos)
        << out.status();
  };
  const Tensor huge_shape = Tensor::Int64({3}, {1 << 20, 1 << 20, 1 << 20});
  expect_refused(MakeNode("ConstantOfShape", 1), {&huge_shape});
  const Tensor wrapping_shape = Tensor::Int64({2}, {int64_t{1} << 62, 4});  // product wraps to 0
  expect_refused(MakeNode("ConstantOfShape", 1), {&wrapping_shape});
  const Tensor one = Tensor::Float({1}, {1.0f});
  expect_refused(MakeNode("Expand", 2), {&one, &huge_shape});
  const Tensor fs = Tensor::Float({}, {0.0f}), fl = Tensor::Float({}, {1e30f}),
               fd = Tensor::Float({}, {1.0f}), nan = Tensor::Float({}, {NAN});
  expect_refused(MakeNode("Range", 3), {&fs, &fl, &fd});
  expect_refused(MakeNode("Range", 3), {&fs, &nan, &fd});
  const Tensor is = Tensor::Int64({}, {std::numeric_limits<int64_t>::min()}),
               il = Tensor::Int64({}, {std::numeric_limits<int64_t>::max()}),
               id = Tensor::Int64({}, {1});
  expect_refused(MakeNode("Range", 3), {&is, &il, &id});  // limit - start overflows int64
  const Tensor row = Tensor::Float({1, 1 << 14}, std::vector<float>(1 << 14, 1.0f));
  const Tensor column = Tensor::Float({1 << 14, 1}, std::vector<float>(1 << 14, 1.0f));
  expect_refused(MakeNode("Add", 2), {&row, &column});  // 2^28 elements by broadcasting
  // Reshape targets whose product overflows are refused, not compared after wrapping.
  const Tensor x = Tensor::Float({2}, {1, 2});
  const Tensor target = Tensor::Int64({3}, {int64_t{1} << 62, 4, 2});
  expect_refused(MakeNode("Reshape", 2), {&x, &target});
  // Float shape operands beyond int64 saturate (casting them is undefined behaviour).
  const Tensor float_shape = Tensor::Float({2}, {1e30f, 2.0f});
  expect_refused(MakeNode("ConstantOfShape", 1), {&float_shape});
}

TEST(ImportFoldingTest, InitializerDimensionsThatOverflowAreAnError) {
  OnnxGraphBuilder b;
  b.AddInput("x", {1, 2});
  b.AddFloatInitializer("w", {2}, {1, 2});
  b.AddNode("Add", "add", {"x", "w"}, {"y"});
  b.AddOutput("y", Shape{1, 2});
  onnx::ModelProto model = b.Build();
  onnx::TensorProto* w = model.mutable_graph()->mutable_initializer(0);
  w->clear_dims();
  for (int64_t d : {int64_t{1} << 62, int64_t{4}, int64_t{97}}) w->add_dims(d);
  absl::StatusOr<Graph> g = ImportOnnxModel(model, {}, "overflow.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("overflow.onnx"), std::string::npos) << g.status();
  // Element counts that wrap to the data's length are no longer taken for it.
  w->clear_dims();
  w->add_dims(int64_t{1} << 62);
  w->add_dims(4);
  w->clear_float_data();
  w->clear_raw_data();
  absl::StatusOr<Tensor> t = TensorFromProto(*w);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("implausibly large"), std::string::npos) << t.status();
}

// x [N,1,4,4] -> Conv (bias through Identity of a shared initializer) -> Reshape to
// [Shape(x)[0], -1] computed in the graph -> y.
std::vector<float> ConvWeights() {
  std::vector<float> w(2 * 9);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i % 5) - 0.2f;
  return w;
}

onnx::ModelProto PyTorchStyleModel(std::optional<int64_t> static_batch) {
  OnnxGraphBuilder b;
  if (static_batch) {
    b.AddInput("x", {*static_batch, 1, 4, 4});
  } else {
    b.AddInput("x", {kBatchDim, 1, 4, 4});
  }
  b.AddFloatInitializer("w", {2, 1, 3, 3}, ConvWeights());
  b.AddFloatInitializer("shared_bias", {2}, {0.5f, -1.0f});
  b.AddNode("Identity", "bias_identity", {"shared_bias"}, {"bias"});
  b.AddNode("Conv", "conv", {"x", "w", "bias"}, {"c"});
  b.AddNode("Shape", "shape", {"x"}, {"s"});
  b.AddInt64Initializer("zero", {}, {0});
  b.AddNode("Gather", "gather", {"s", "zero"}, {"n"});
  b.AddInt64Initializer("axes0", {1}, {0});
  b.AddNode("Unsqueeze", "unsqueeze", {"n", "axes0"}, {"n1"});
  b.AddInt64Initializer("minus_one", {1}, {-1});
  b.AddNode("Concat", "concat", {"n1", "minus_one"}, {"target"}, {IntAttr("axis", 0)});
  b.AddNode("Reshape", "reshape", {"c", "target"}, {"y"});
  b.AddNode("Relu", "dead_relu", {"c"}, {"unused"});
  b.AddOutput("y", Shape{static_batch.value_or(kBatchDim), 8});
  return b.Build();
}

Tensor RunNetwork(const Graph& g, const Tensor& x) {
  absl::StatusOr<std::unique_ptr<Network>> net =
      Network::Create(g, {.batch = x.shape()[0], .threads = 1});
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return Tensor();
  std::map<std::string, Tensor> out;
  EXPECT_TRUE((*net)->Run({{"x", &x}}, &out).ok());
  return out["y"];
}

TEST(ImportFoldingTest, PyTorchShapeArithmeticAndIdentityBiasFold) {
  for (std::optional<int64_t> batch : {std::optional<int64_t>(), std::optional<int64_t>(2)}) {
    absl::StatusOr<Graph> g = ImportOnnxModel(PyTorchStyleModel(batch));
    ASSERT_TRUE(g.ok()) << g.status();
    // Only the network is left: Conv and Reshape; the dead Relu and the folded nodes are gone,
    // and so are the constants only they read.
    ASSERT_EQ(g->nodes.size(), 2u);
    EXPECT_EQ(g->nodes[0].op, OpKind::kConv);
    EXPECT_EQ(g->nodes[1].op, OpKind::kReshape);
    EXPECT_TRUE(g->IsConstant("bias"));
    EXPECT_FALSE(g->IsConstant("shared_bias"));
    EXPECT_FALSE(g->IsConstant("zero"));
    // The folded target copies the batch, so any batch runs; values against a hand computation.
    for (int64_t n : {1, 3}) {
      std::vector<float> xs(n * 16);
      for (size_t i = 0; i < xs.size(); ++i) xs[i] = std::sin(0.7f * static_cast<float>(i));
      const Tensor x = Tensor::Float({n, 1, 4, 4}, xs);
      const Tensor y = RunNetwork(*g, x);
      ASSERT_EQ(y.shape(), (Shape{n, 8}));
      const std::vector<float> w = ConvWeights();
      for (int64_t b = 0; b < n; ++b) {
        for (int oc = 0; oc < 2; ++oc) {
          for (int i = 0; i < 2; ++i) {
            for (int j = 0; j < 2; ++j) {
              double acc = oc == 0 ? 0.5 : -1.0;
              for (int ki = 0; ki < 3; ++ki) {
                for (int kj = 0; kj < 3; ++kj) {
                  acc += xs[b * 16 + (i + ki) * 4 + (j + kj)] * w[oc * 9 + ki * 3 + kj];
                }
              }
              EXPECT_NEAR(y.floats()[b * 8 + oc * 4 + i * 2 + j], acc, 1e-5);
            }
          }
        }
      }
    }
  }
}

TEST(ImportFoldingTest, EveryUnsupportedNodeIsListedInOneError) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 1, 4, 4});
  b.AddNode("Erf", "erf_a", {"x"}, {"a"});
  b.AddNode("Softsign", "softsign", {"a"}, {"c"});
  b.AddNode("Erf", "erf_b", {"c"}, {"d"});
  b.AddNode("MaxPool", "pool", {"d"}, {"y"},
            {IntsAttr("kernel_shape", {2, 2}), IntAttr("storage_order", 1)});
  b.AddOutput("y", Shape{kBatchDim, 1, 3, 3});
  absl::StatusOr<Graph> g = ImportOnnxModel(b.Build(), {}, "model.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented);
  const std::string m(g.status().message());
  EXPECT_NE(m.find("model.onnx: 4 nodes are not supported"), std::string::npos) << m;
  EXPECT_NE(m.find("Erf x2: 'erf_a', 'erf_b'"), std::string::npos) << m;
  EXPECT_NE(m.find("Softsign x1: 'softsign'"), std::string::npos) << m;
  EXPECT_NE(m.find("storage_order"), std::string::npos) << m;
  EXPECT_NE(m.find("Supported operators: "), std::string::npos) << m;
}

TEST(ImportFoldingTest, ANonConstantBiasNamesTheNodeComputingIt) {
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 1, 4, 4});
  b.AddFloatInitializer("w", {2, 1, 3, 3}, std::vector<float>(18, 0.5f));
  b.AddFloatInitializer("b0", {2}, {1.0f, 2.0f});
  b.AddNode("Relu", "bias_relu", {"b0"}, {"bias"});  // Relu is not folded
  b.AddNode("Conv", "conv", {"x", "w", "bias"}, {"y"});
  b.AddOutput("y", Shape{kBatchDim, 2, 2, 2});
  absl::StatusOr<Graph> g = ImportOnnxModel(b.Build());
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find(
                "node 'conv' (Conv): bias ('bias') must be a constant; it is computed at run "
                "time by node 'bias_relu' (Relu)"),
            std::string::npos)
      << g.status();
}

}  // namespace
}  // namespace bitsweep::engine
