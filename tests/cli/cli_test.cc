// `bitsweep eval`, `run` and `train` as processes: output formats, files written, exit codes and
// the messages people see on bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "tests/cli/run_binary.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep {
namespace {

namespace fs = std::filesystem;

using Result = testing::CommandResult;

Result Bitsweep(const std::string& args) {
  return testing::RunCommandLine(std::string(BITSWEEP_BINARY) + " " + args);
}

const std::string kData = BITSWEEP_FASHION_MNIST_DIR;

std::string TempPath(const std::string& name) {
  // ctest runs each test in its own process, two at a time: one folder per process.
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("bitsweep_cli_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string LenetFile() {
  const std::string path = TempPath("lenet5.onnx");
  absl::StatusOr<onnx::ModelProto> model = engine::zoo::BuildArchitecture("lenet5", {});
  EXPECT_TRUE(model.ok());
  EXPECT_TRUE(engine::SaveModel(*model, path).ok());
  return path;
}

TEST(CliTest, EvalJsonIsOneLineWithEveryField) {
  const Result r = Bitsweep("eval --model " + LenetFile() + " --dataset idx:" + kData +
                            "/t10k --limit 500 --batch 128 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;
  for (const char* field : {"\"top1\":", "\"top5\":", "\"loss\":", "\"samples\":500",
                            "\"images_per_s\":", "\"model\":", "\"dataset\":"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field << " in " << r.out;
  }
  EXPECT_EQ(r.out.front(), '{');
}

TEST(CliTest, TrainThenEvalTheLinearBaseline) {
  const std::string model = TempPath("linear.onnx");
  Result train = Bitsweep("train --arch linear --dataset idx:" + kData + "/train --limit 20000 " +
                          "--out " + model);
  ASSERT_EQ(train.exit_code, 0) << train.out;
  ASSERT_TRUE(fs::exists(model));
  Result eval = Bitsweep("eval --model " + model + " --dataset idx:" + kData + "/t10k");
  ASSERT_EQ(eval.exit_code, 0) << eval.out;
  const size_t at = eval.out.find("top1");
  ASSERT_NE(at, std::string::npos) << eval.out;
  const double top1 = std::stod(eval.out.substr(at + 4));
  EXPECT_GT(top1, 0.75) << eval.out;
}

TEST(CliTest, RunWritesEachOutputAsTensorProto) {
  const fs::path case_dir =
      fs::path(BITSWEEP_ONNX_TESTDATA_DIR) / "node" / "test_conv_with_strides_padding";
  const std::string out_dir = TempPath("run_out");
  fs::remove_all(out_dir);
  const Result r = Bitsweep("run --model " + (case_dir / "model.onnx").string() + " --input x=" +
                            (case_dir / "test_data_set_0" / "input_0.pb").string() +
                            " --input W=" + (case_dir / "test_data_set_0" / "input_1.pb").string() +
                            " --output-dir " + out_dir);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  absl::StatusOr<engine::Tensor> got = engine::ReadTensorProtoFile(out_dir + "/y.pb");
  ASSERT_TRUE(got.ok()) << got.status();
  absl::StatusOr<engine::Tensor> want =
      engine::ReadTensorProtoFile((case_dir / "test_data_set_0" / "output_0.pb").string());
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(got->shape(), want->shape());
  for (int64_t i = 0; i < got->num_elements(); ++i) {
    EXPECT_NEAR(got->floats()[i], want->floats()[i], 1e-4 * (1 + std::fabs(want->floats()[i])));
  }
}

TEST(CliTest, ErrorsAreReadableAndExitNonZero) {
  struct Case {
    std::string args;
    std::string message;
  };
  const std::string lenet = LenetFile();
  const Case cases[] = {
      {"eval --dataset idx:" + kData + "/t10k", "--model is required"},
      {"eval --model /no/such.onnx --dataset idx:" + kData + "/t10k", "/no/such.onnx"},
      {"eval --model " + lenet + " --dataset idx:/no/such/prefix", "/no/such/prefix"},
      {"eval --model " + lenet + " --dataset csv:foo", "csv:foo"},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --std 0", "std"},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --mean abc", "'abc'"},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --batch 0", "--batch"},
      {"run --model " + lenet + " --output-dir " + TempPath("x"), "'input' was not given"},
      {"run --model " + lenet + " --input input=/no/such.pb --output-dir " + TempPath("x"),
       "/no/such.pb"},
      {"train --arch vgg --dataset idx:" + kData + "/train --out " + TempPath("v.onnx"), "vgg"},
      {"frobnicate", "unknown command 'frobnicate'"},
  };
  for (const Case& c : cases) {
    const Result r = Bitsweep(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << "\n" << r.out;
  }
}

}  // namespace
}  // namespace bitsweep
