// The coordinator's streaming model check (server/coordinator/model_check.h) against libonnx's
// checker on whole models: the same verdict on every model ONNX's own test data ships and on the
// committed zoo models, the structure kept and the tensor data cut, and clear errors for bytes
// that are not a model.
#include "server/coordinator/model_check.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace bitsweep::server {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// libonnx's verdict on the whole model: empty when it passes, the reason otherwise.
std::string FullCheck(const std::string& bytes) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) return "parse";
  if (!model.has_graph()) return "no graph";
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::vector<std::filesystem::path> Models() {
  std::vector<std::filesystem::path> models;
  for (const char* dir : {"/usr/share/libonnx-testdata/data/node",
                          "/usr/share/libonnx-testdata/data/pytorch-converted",
                          "/usr/share/libonnx-testdata/data/pytorch-operator",
                          "/usr/share/libonnx-testdata/data/simple"}) {
    if (!std::filesystem::exists(dir)) continue;
    for (const auto& test : std::filesystem::directory_iterator(dir)) {
      const auto model = test.path() / "model.onnx";
      if (std::filesystem::exists(model)) models.push_back(model);
    }
  }
  for (const char* name : {"lenet5.onnx", "squeezenet-mini.onnx", "resnet-mini.onnx"}) {
    models.push_back(std::filesystem::path(BITSWEEP_SOURCE_DIR) / "models" / name);
  }
  return models;
}

TEST(ModelCheckTest, SameVerdictAsTheWholeModelCheckOnEveryShippedModel) {
  const std::vector<std::filesystem::path> models = Models();
  ASSERT_GT(models.size(), 500u) << "libonnx-testdata missing?";
  int passed = 0;
  for (const auto& path : models) {
    const std::string bytes = ReadFile(path);
    const std::string full = FullCheck(bytes);
    const absl::Status light = CheckOnnxModelBytes(bytes, path.string());
    EXPECT_EQ(light.ok(), full.empty()) << path << ": whole model: '" << full << "', ours: " << light;
    const absl::Status from_file = CheckOnnxModelFile(path.string(), path.string());
    EXPECT_EQ(from_file.ok(), light.ok()) << path << ": " << from_file;
    passed += light.ok() ? 1 : 0;
  }
  EXPECT_GT(passed, 500);
}

// The stripped model keeps every node, attribute, name and shape and drops tensor values.
TEST(ModelCheckTest, StrippedModelKeepsTheStructureAndCutsTheWeights) {
  const std::string bytes =
      ReadFile(std::filesystem::path(BITSWEEP_SOURCE_DIR) / "models" / "resnet-mini.onnx");
  onnx::ModelProto original;
  ASSERT_TRUE(original.ParseFromString(bytes));
  absl::StatusOr<std::string> stripped = StripTensorDataForTest(bytes);
  ASSERT_TRUE(stripped.ok()) << stripped.status();
  EXPECT_LT(stripped->size() * 10, bytes.size()) << stripped->size() << " of " << bytes.size();
  onnx::ModelProto light;
  ASSERT_TRUE(light.ParseFromString(*stripped));
  ASSERT_EQ(light.graph().node_size(), original.graph().node_size());
  for (int i = 0; i < original.graph().node_size(); ++i) {
    EXPECT_EQ(light.graph().node(i).SerializeAsString(),
              original.graph().node(i).SerializeAsString());
  }
  ASSERT_EQ(light.graph().initializer_size(), original.graph().initializer_size());
  for (int i = 0; i < original.graph().initializer_size(); ++i) {
    const onnx::TensorProto& a = original.graph().initializer(i);
    const onnx::TensorProto& b = light.graph().initializer(i);
    EXPECT_EQ(b.name(), a.name());
    EXPECT_EQ(b.data_type(), a.data_type());
    EXPECT_EQ(b.dims().size(), a.dims().size());
    EXPECT_LE(b.raw_data().size() + b.float_data_size() * 4, 8u) << b.name();
  }
  EXPECT_EQ(light.graph().input_size(), original.graph().input_size());
  EXPECT_EQ(light.opset_import(0).version(), original.opset_import(0).version());
}

TEST(ModelCheckTest, BytesThatAreNoModelGetAnErrorNamingTheModel) {
  const std::string lenet =
      ReadFile(std::filesystem::path(BITSWEEP_SOURCE_DIR) / "models" / "lenet5.onnx");
  absl::Status truncated = CheckOnnxModelBytes(lenet.substr(0, lenet.size() / 2), "cut.onnx");
  EXPECT_EQ(truncated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(truncated.message()), HasSubstr("model 'cut.onnx': not an ONNX model"));

  absl::Status junk = CheckOnnxModelBytes(std::string("\xff\xff\xff\xff not a model", 17), "j");
  EXPECT_EQ(junk.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(junk.message()), HasSubstr("model 'j': not an ONNX model"));

  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(lenet));
  model.set_doc_string(std::string(17 << 20, 'd'));  // 17 MiB of text outside any tensor
  absl::Status huge = CheckOnnxModelBytes(model.SerializeAsString(), "doc.onnx");
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(huge.message()), HasSubstr("allowed outside tensor data"));

  model.set_doc_string("");
  model.mutable_graph()->mutable_node(0)->set_input(0, "nowhere");  // an undefined input
  absl::Status rejected = CheckOnnxModelBytes(model.SerializeAsString(), "bad.onnx");
  EXPECT_EQ(rejected.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rejected.message()),
              HasSubstr("model 'bad.onnx': the ONNX checker rejected it"));
  EXPECT_FALSE(FullCheck(model.SerializeAsString()).empty());

  EXPECT_EQ(CheckOnnxModelFile("/nonexistent/m.onnx", "m").code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace bitsweep::server
