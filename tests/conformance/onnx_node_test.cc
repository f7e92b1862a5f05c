// Conformance: ONNX's backend node tests (data/node and data/pytorch-converted of Debian's
// libonnx-testdata) for every supported operator, compared with ONNX's reference outputs.
//
// A test directory is selected when every operator in its model is one the importer accepts.
// Selected tests must pass, except those listed in expected_unsupported.txt: those must be
// rejected with a clear error (an unsupported attribute, data type or training mode), and a listed
// test that starts passing fails too, so the list stays exact.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/runner.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {
namespace {

namespace fs = std::filesystem;

constexpr double kRelativeTolerance = 1e-4;
constexpr double kAbsoluteTolerance = 1e-6;

struct NodeTestCase {
  std::string suite;  // "node" or "pytorch-converted"
  std::string name;   // "test_conv_with_strides_padding"
  fs::path dir;
};

void PrintTo(const NodeTestCase& c, std::ostream* os) { *os << c.suite << "/" << c.name; }

std::map<std::string, std::string> ExpectedUnsupported() {
  std::map<std::string, std::string> reasons;
  std::ifstream in(BITSWEEP_EXPECTED_UNSUPPORTED);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, reason;
    fields >> name;
    std::getline(fields, reason);
    reasons[name] = reason;
  }
  return reasons;
}

std::vector<NodeTestCase> SelectedCases() {
  const std::set<std::string> supported(SupportedOnnxOperators().begin(),
                                        SupportedOnnxOperators().end());
  std::vector<NodeTestCase> cases;
  for (const char* suite : {"node", "pytorch-converted"}) {
    const fs::path root = fs::path(BITSWEEP_ONNX_TESTDATA_DIR) / suite;
    if (!fs::exists(root)) continue;
    std::vector<fs::path> dirs;
    for (const auto& entry : fs::directory_iterator(root)) dirs.push_back(entry.path());
    std::sort(dirs.begin(), dirs.end());
    for (const fs::path& dir : dirs) {
      absl::StatusOr<onnx::ModelProto> model = ReadOnnxModel((dir / "model.onnx").string());
      if (!model.ok() || model->graph().node_size() == 0) continue;
      bool all_supported = true;
      for (const auto& node : model->graph().node()) {
        all_supported &= node.domain().empty() && supported.count(node.op_type()) > 0;
      }
      if (all_supported) cases.push_back({suite, dir.filename().string(), dir});
    }
  }
  return cases;
}

// Runs every test_data_set_* of one case; returns the first error, or OK.
absl::Status RunCase(const NodeTestCase& c, std::string* mismatch) {
  absl::StatusOr<onnx::ModelProto> model = ReadOnnxModel((c.dir / "model.onnx").string());
  if (!model.ok()) return model.status();
  std::set<std::string> initializers;
  for (const auto& init : model->graph().initializer()) initializers.insert(init.name());
  std::vector<std::string> input_names, output_names;
  for (const auto& in : model->graph().input()) {
    if (!initializers.count(in.name())) input_names.push_back(in.name());
  }
  for (const auto& out : model->graph().output()) output_names.push_back(out.name());

  int data_sets = 0;
  for (int set = 0;; ++set) {
    const fs::path data = c.dir / ("test_data_set_" + std::to_string(set));
    if (!fs::exists(data)) break;
    ++data_sets;
    std::map<std::string, Tensor> inputs;
    for (size_t i = 0; i < input_names.size(); ++i) {
      const fs::path file = data / ("input_" + std::to_string(i) + ".pb");
      if (!fs::exists(file)) continue;  // an omitted optional input
      absl::StatusOr<Tensor> t = ReadTensorProtoFile(file.string());
      if (!t.ok()) return t.status();
      inputs[input_names[i]] = *std::move(t);
    }
    absl::StatusOr<std::map<std::string, Tensor>> outputs =
        RunModelOnce((c.dir / "model.onnx").string(), inputs, /*threads=*/1);
    if (!outputs.ok()) return outputs.status();
    for (size_t i = 0; i < output_names.size(); ++i) {
      absl::StatusOr<Tensor> expected =
          ReadTensorProtoFile((data / ("output_" + std::to_string(i) + ".pb")).string());
      if (!expected.ok()) return expected.status();
      const Tensor& got = outputs->at(output_names[i]);
      std::ostringstream report;
      if (got.shape() != expected->shape()) {
        report << "output '" << output_names[i] << "' shape " << ShapeToString(got.shape())
               << " != expected " << ShapeToString(expected->shape());
      } else {
        int bad = 0;
        for (int64_t k = 0; k < got.num_elements(); ++k) {
          const double a = got.floats()[k], b = expected->floats()[k];
          if (!(std::fabs(a - b) <= kAbsoluteTolerance + kRelativeTolerance * std::fabs(b))) {
            if (bad++ == 0) {
              report << "output '" << output_names[i] << "' element " << k << ": got " << a
                     << ", expected " << b;
            }
          }
        }
        if (bad > 0) report << " (" << bad << " of " << got.num_elements() << " elements differ)";
      }
      if (!report.str().empty()) {
        *mismatch += "data set " + std::to_string(set) + ": " + report.str() + "\n";
      }
    }
  }
  if (data_sets == 0) return absl::NotFoundError("no test_data_set_* directory");
  return absl::OkStatus();
}

class OnnxNodeTest : public ::testing::TestWithParam<NodeTestCase> {};

TEST_P(OnnxNodeTest, MatchesReference) {
  const NodeTestCase& c = GetParam();
  static const std::map<std::string, std::string> expected_unsupported = ExpectedUnsupported();
  std::string mismatch;
  const absl::Status status = RunCase(c, &mismatch);
  auto listed = expected_unsupported.find(c.name);
  if (listed != expected_unsupported.end()) {
    EXPECT_FALSE(status.ok()) << c.name << " is listed as unsupported (" << listed->second
                              << ") but now runs: remove it from expected_unsupported.txt";
    EXPECT_FALSE(status.message().empty());
    std::cout << "[ unsupported ] " << c.name << ": " << status.message() << "\n";
    return;
  }
  ASSERT_TRUE(status.ok()) << c.dir << ": " << status;
  EXPECT_TRUE(mismatch.empty()) << c.dir << ":\n" << mismatch;
}

std::string CaseName(const ::testing::TestParamInfo<NodeTestCase>& info) {
  std::string name = (info.param.suite == "node" ? "node_" : "pytorch_") + info.param.name;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Onnx, OnnxNodeTest, ::testing::ValuesIn(SelectedCases()), CaseName);

TEST(OnnxNodeTestSelection, FindsTheSupportedOperatorsTests) {
  // Guards against silently running nothing (a moved data directory, a broken selection).
  const std::vector<NodeTestCase> cases = SelectedCases();
  EXPECT_GE(cases.size(), 150u) << "data under " << BITSWEEP_ONNX_TESTDATA_DIR;
  std::set<std::string> names;
  for (const auto& c : cases) names.insert(c.name);
  for (const char* must : {"test_conv_with_strides_padding", "test_gemm_all_attributes",
                           "test_maxpool_2d_ceil", "test_lrn", "test_Conv2d_depthwise_padded",
                           "test_batchnorm_epsilon", "test_softmax_axis_0"}) {
    EXPECT_TRUE(names.count(must)) << must;
  }
}

}  // namespace
}  // namespace bitsweep::engine
