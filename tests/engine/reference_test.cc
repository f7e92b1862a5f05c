// Validates the scalar reference executor (tests/reference) against ONNX's own backend node tests:
// each case loads model.onnx from the installed test data, feeds every test_data_set_*/input_*.pb
// and compares the reference's outputs with output_*.pb.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/onnx_import.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/tensor.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::reference {
namespace {

namespace fs = std::filesystem;
using engine::DataType;
using engine::ShapeToString;
using engine::Tensor;

struct Case {
  const char* category;  // node, pytorch-converted, ...
  const char* name;      // test directory
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.category << "/" << c.name; }

const Case kCases[] = {
    // Conv
    {"node", "test_basic_conv_with_padding"},
    {"node", "test_basic_conv_without_padding"},
    {"node", "test_conv_with_strides_padding"},
    {"node", "test_conv_with_strides_no_padding"},
    {"node", "test_conv_with_strides_and_asymmetric_padding"},
    {"node", "test_conv_with_autopad_same"},
    {"pytorch-converted", "test_Conv1d"},
    {"pytorch-converted", "test_Conv1d_dilated"},
    {"pytorch-converted", "test_Conv1d_groups"},
    {"pytorch-converted", "test_Conv1d_pad2"},
    {"pytorch-converted", "test_Conv1d_stride"},
    {"pytorch-converted", "test_Conv2d"},
    {"pytorch-converted", "test_Conv2d_groups"},
    {"pytorch-converted", "test_Conv2d_depthwise_padded"},
    {"pytorch-converted", "test_Conv2d_depthwise_with_multiplier"},
    {"pytorch-converted", "test_Conv2d_dilated"},
    {"pytorch-converted", "test_Conv2d_no_bias"},
    {"pytorch-converted", "test_Conv2d_strided"},
    {"pytorch-converted", "test_Conv3d_dilated_strided"},
    // Gemm / MatMul
    {"node", "test_gemm_all_attributes"},
    {"node", "test_gemm_transposeA"},
    {"node", "test_gemm_transposeB"},
    {"node", "test_gemm_default_no_bias"},
    {"node", "test_gemm_default_scalar_bias"},
    {"node", "test_gemm_default_single_elem_vector_bias"},
    {"node", "test_gemm_alpha"},
    {"node", "test_gemm_beta"},
    {"pytorch-converted", "test_Linear"},
    {"node", "test_matmul_2d"},
    {"node", "test_matmul_3d"},
    {"node", "test_matmul_4d"},
    // Pooling
    {"node", "test_maxpool_1d_default"},
    {"node", "test_maxpool_2d_ceil"},
    {"node", "test_maxpool_2d_dilations"},
    {"node", "test_maxpool_2d_pads"},
    {"node", "test_maxpool_2d_strides"},
    {"node", "test_maxpool_2d_same_upper"},
    {"node", "test_maxpool_2d_same_lower"},
    {"node", "test_maxpool_3d_default"},
    {"pytorch-converted", "test_MaxPool1d_stride_padding_dilation"},
    {"pytorch-converted", "test_MaxPool2d_stride_padding_dilation"},
    {"node", "test_averagepool_1d_default"},
    {"node", "test_averagepool_2d_ceil"},
    {"node", "test_averagepool_2d_pads"},
    {"node", "test_averagepool_2d_pads_count_include_pad"},
    {"node", "test_averagepool_2d_same_upper"},
    {"node", "test_averagepool_2d_same_lower"},
    {"node", "test_averagepool_2d_strides"},
    {"pytorch-converted", "test_AvgPool2d"},
    {"pytorch-converted", "test_AvgPool1d_stride"},
    {"node", "test_globalaveragepool"},
    {"node", "test_globalaveragepool_precomputed"},
    // Elementwise
    {"node", "test_add"},
    {"node", "test_add_bcast"},
    {"node", "test_mul"},
    {"node", "test_mul_bcast"},
    {"node", "test_relu"},
    {"pytorch-converted", "test_ReLU"},
    {"node", "test_leakyrelu"},
    {"node", "test_leakyrelu_default"},
    {"pytorch-converted", "test_LeakyReLU_with_negval"},
    {"node", "test_sigmoid"},
    {"node", "test_clip"},
    {"node", "test_clip_default_min"},
    {"node", "test_clip_default_inbounds"},
    {"node", "test_clip_splitbounds"},
    // Normalization / softmax
    {"node", "test_batchnorm_epsilon"},
    {"node", "test_batchnorm_example"},
    {"pytorch-converted", "test_BatchNorm2d_eval"},
    {"pytorch-converted", "test_BatchNorm1d_3d_input_eval"},
    {"node", "test_lrn"},
    {"node", "test_lrn_default"},
    {"node", "test_softmax_axis_0"},
    {"node", "test_softmax_axis_1"},
    {"node", "test_softmax_default_axis"},
    {"node", "test_softmax_negative_axis"},
    {"node", "test_softmax_large_number"},
    {"pytorch-converted", "test_Softmax"},
    {"pytorch-converted", "test_softmax_lastdim"},
    // Shape ops
    {"node", "test_concat_2d_axis_0"},
    {"node", "test_concat_3d_axis_negative_1"},
    {"node", "test_flatten_axis0"},
    {"node", "test_flatten_default_axis"},
    {"node", "test_flatten_negative_axis1"},
    {"node", "test_reshape_negative_extended_dims"},
    {"node", "test_reshape_zero_and_negative_dim"},
    {"node", "test_reshape_allowzero_reordered"},
    {"node", "test_squeeze"},
    {"node", "test_squeeze_negative_axes"},
    {"pytorch-converted", "test_AvgPool1d"},  // Unsqueeze/Squeeze with axes attributes (opset 6)
    {"node", "test_unsqueeze_axis_0"},
    {"node", "test_unsqueeze_negative_axes"},
    {"node", "test_unsqueeze_unsorted_axes"},
    {"node", "test_dropout_default"},
    {"node", "test_dropout_default_old"},
    {"node", "test_identity"},
    {"node", "test_constant"},
};

fs::path CaseDir(const Case& c) {
  return fs::path(BITSWEEP_ONNX_TESTDATA_DIR) / c.category / c.name;
}

// Elementwise |a - b| <= 1e-4 + 1e-4 * |b|, shapes and dtypes equal.
void ExpectClose(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what << ": got " << ShapeToString(actual.shape())
                                              << ", want " << ShapeToString(expected.shape());
  if (expected.dtype() == DataType::kInt64) {
    EXPECT_EQ(actual.int64s(), expected.int64s()) << what;
    return;
  }
  int mismatches = 0;
  for (int64_t i = 0; i < expected.num_elements(); ++i) {
    const double a = actual.floats()[i], b = expected.floats()[i];
    if (!(std::fabs(a - b) <= 1e-4 + 1e-4 * std::fabs(b))) {
      if (++mismatches <= 5) ADD_FAILURE() << what << "[" << i << "]: got " << a << ", want " << b;
    }
  }
  EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " of " << expected.num_elements()
                           << " elements differ";
}

class OnnxNodeTest : public ::testing::TestWithParam<Case> {};

TEST_P(OnnxNodeTest, MatchesExpectedOutputs) {
  const fs::path dir = CaseDir(GetParam());
  ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing (package libonnx-testdata)";
  absl::StatusOr<onnx::ModelProto> model = engine::ReadOnnxModel((dir / "model.onnx").string());
  ASSERT_TRUE(model.ok()) << model.status();

  // input_k.pb feeds the k-th graph input that has no initializer.
  std::vector<std::string> input_names, output_names;
  {
    std::map<std::string, bool> initialized;
    for (const auto& init : model->graph().initializer()) initialized[init.name()] = true;
    for (const auto& in : model->graph().input()) {
      if (!initialized.count(in.name())) input_names.push_back(in.name());
    }
    for (const auto& out : model->graph().output()) output_names.push_back(out.name());
  }

  std::vector<fs::path> data_sets;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0) {
      data_sets.push_back(entry.path());
    }
  }
  std::sort(data_sets.begin(), data_sets.end());
  ASSERT_FALSE(data_sets.empty());

  for (const fs::path& data_set : data_sets) {
    SCOPED_TRACE(data_set.string());
    std::map<std::string, Tensor> inputs;
    for (size_t k = 0;; ++k) {
      const fs::path file = data_set / ("input_" + std::to_string(k) + ".pb");
      if (!fs::exists(file)) break;
      ASSERT_LT(k, input_names.size()) << "more input files than graph inputs";
      absl::StatusOr<Tensor> t = engine::ReadTensorProtoFile(file.string());
      ASSERT_TRUE(t.ok()) << t.status();
      inputs[input_names[k]] = *std::move(t);
    }
    absl::StatusOr<std::map<std::string, Tensor>> outputs = RunReference(*model, inputs);
    ASSERT_TRUE(outputs.ok()) << outputs.status();
    for (size_t k = 0; k < output_names.size(); ++k) {
      const fs::path file = data_set / ("output_" + std::to_string(k) + ".pb");
      ASSERT_TRUE(fs::exists(file)) << file;
      absl::StatusOr<Tensor> expected = engine::ReadTensorProtoFile(file.string());
      ASSERT_TRUE(expected.ok()) << expected.status();
      ASSERT_TRUE(outputs->count(output_names[k])) << output_names[k];
      ExpectClose(outputs->at(output_names[k]), *expected, output_names[k]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OnnxBackend, OnnxNodeTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name = std::string(info.param.category) + "_" +
                                              (info.param.name + 5);  // drop "test_"
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(ScalarReferenceTest, UnsupportedOpIsUnimplementedAndNamesTheNode) {
  engine::OnnxGraphBuilder b;
  b.AddInput("x", {2, 3});
  b.AddNode("Tanh", "my_tanh", {"x"}, {"y"});
  b.AddOutput("y");
  absl::StatusOr<std::map<std::string, Tensor>> out =
      RunReference(b.Build(), {{"x", Tensor::Float({2, 3})}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(out.status().message().find("my_tanh"), std::string::npos) << out.status();
  EXPECT_NE(out.status().message().find("Tanh"), std::string::npos) << out.status();
}

// Runs a one-node graph on a single float input "x" and returns output "y".
std::vector<float> RunOne(const std::string& op, const Tensor& x,
                          const std::vector<onnx::AttributeProto>& attributes) {
  engine::OnnxGraphBuilder b;
  b.AddInput("x", x.shape());
  b.AddNode(op, "n", {"x"}, {"y"}, attributes);
  b.AddOutput("y");
  absl::StatusOr<std::map<std::string, Tensor>> out = RunReference(b.Build(), {{"x", x}});
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->at("y").floats() : std::vector<float>{};
}

// Not covered by the ONNX data (whose ceil_mode cases never drop a window): with ceil_mode, a
// window that would start in the end padding is dropped; windows running past the padded input
// count only the positions inside it.
TEST(ScalarReferenceTest, PoolCeilModeDropsWindowsStartingInPadding) {
  using engine::IntAttr;
  using engine::IntsAttr;
  const Tensor five = Tensor::Float({1, 1, 5}, {1, 2, 3, 4, 5});
  EXPECT_EQ(
      RunOne("MaxPool", five,
             {IntsAttr("kernel_shape", {2}), IntsAttr("strides", {2}), IntAttr("ceil_mode", 1)}),
      (std::vector<float>{2, 4, 5}));
  const Tensor four = Tensor::Float({1, 1, 4}, {1, 2, 3, 4});
  EXPECT_EQ(RunOne("MaxPool", four,
                   {IntsAttr("kernel_shape", {2}), IntsAttr("strides", {2}),
                    IntsAttr("pads", {0, 1}), IntAttr("ceil_mode", 1)}),
            (std::vector<float>{2, 4}));
  EXPECT_EQ(
      RunOne("AveragePool", five,
             {IntsAttr("kernel_shape", {2}), IntsAttr("strides", {2}), IntAttr("ceil_mode", 1)}),
      (std::vector<float>{1.5f, 3.5f, 5}));
  EXPECT_EQ(RunOne("AveragePool", five,
                   {IntsAttr("kernel_shape", {2}), IntsAttr("strides", {2}),
                    IntAttr("ceil_mode", 1), IntAttr("count_include_pad", 1)}),
            (std::vector<float>{1.5f, 3.5f, 5}));
  EXPECT_EQ(RunOne("AveragePool", five,
                   {IntsAttr("kernel_shape", {2}), IntsAttr("strides", {2}),
                    IntsAttr("pads", {1, 0}), IntAttr("count_include_pad", 1)}),
            (std::vector<float>{0.5f, 2.5f, 4.5f}));
}

// The ONNX LRN data only uses odd sizes; for even sizes the channel window is
// [c - floor((size-1)/2), c + ceil((size-1)/2)].
TEST(ScalarReferenceTest, LrnEvenSizeWindowIsAsymmetric) {
  const Tensor x = Tensor::Float({1, 4, 1, 1}, {1, 2, 3, 4});
  const std::vector<float> y =
      RunOne("LRN", x,
             {engine::IntAttr("size", 4), engine::FloatAttr("alpha", 4.0f),
              engine::FloatAttr("beta", 1.0f), engine::FloatAttr("bias", 0.0f)});
  ASSERT_EQ(y.size(), 4u);
  EXPECT_FLOAT_EQ(y[0], 1.0f / 14);  // channels 0..2
  EXPECT_FLOAT_EQ(y[1], 2.0f / 30);  // channels 0..3
  EXPECT_FLOAT_EQ(y[2], 3.0f / 29);  // channels 1..3
  EXPECT_FLOAT_EQ(y[3], 4.0f / 25);  // channels 2..3
}

TEST(ScalarReferenceTest, InitializerServesAsDefaultForGraphInput) {
  engine::OnnxGraphBuilder b;
  b.AddInput("x", {2});
  b.AddInput("w", {2});
  b.AddFloatInitializer("w", {2}, {10.0f, 20.0f});
  b.AddNode("Add", "add", {"x", "w"}, {"y"});
  b.AddOutput("y");
  const onnx::ModelProto model = b.Build();
  absl::StatusOr<std::map<std::string, Tensor>> out =
      RunReference(model, {{"x", Tensor::Float({2}, {1.0f, 2.0f})}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("y").floats(), (std::vector<float>{11.0f, 22.0f}));
  // A given input overrides the initializer.
  out = RunReference(
      model, {{"x", Tensor::Float({2}, {1.0f, 2.0f})}, {"w", Tensor::Float({2}, {0.5f, 0.5f})}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("y").floats(), (std::vector<float>{1.5f, 2.5f}));
}

TEST(ScalarReferenceTest, MissingOrMismatchedInputsAreErrors) {
  engine::OnnxGraphBuilder b;
  b.AddInput("x", {engine::kBatchDim, 3});
  b.AddNode("Relu", "relu", {"x"}, {"y"});
  b.AddOutput("y");
  const onnx::ModelProto model = b.Build();
  EXPECT_EQ(RunReference(model, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunReference(model, {{"x", Tensor::Float({2, 4})}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunReference(model, {{"x", Tensor::Float({5, 3})}, {"z", Tensor::Float({1})}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(RunReference(model, {{"x", Tensor::Float({5, 3})}}).ok());
}

}  // namespace
}  // namespace bitsweep::reference
