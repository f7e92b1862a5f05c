// `bitsweep eval`, `run` and `train` as processes: output formats, files written, exit codes and
// the messages people see on bad input; the command-line conventions (help, --version on the
// three binaries, global flags and their environment variables, usage errors exit 2).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "tests/cli/csv.h"
#include "tests/cli/run_binary.h"
#include "worker/engine/onnx_import.h"
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

TEST(CliTest, HelpOpsListsEverySupportedOperator) {
  const Result r = Bitsweep("help ops");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string listed = r.out.substr(0, r.out.find("Evaluated once"));
  for (const std::string& op : engine::SupportedOnnxOperators()) {
    const bool found = listed.find(" " + op + ",") != std::string::npos ||
                       listed.find(" " + op + "\n") != std::string::npos;
    EXPECT_TRUE(found) << op << " missing from:\n" << r.out;
  }
  EXPECT_NE(r.out.find("Shape,"), std::string::npos) << r.out;  // folded, not run
  EXPECT_EQ(listed.find(" Shape,"), std::string::npos) << r.out;
}

TEST(CliTest, AModelWithUnsupportedNodesListsThemAll) {
  engine::OnnxGraphBuilder b;
  b.AddInput("x", {engine::kBatchDim, 1, 4, 4});
  b.AddNode("Erf", "erf_1", {"x"}, {"a"});
  b.AddNode("Erf", "erf_2", {"a"}, {"c"});
  b.AddNode("Softsign", "soft", {"c"}, {"y"});
  b.AddOutput("y", engine::Shape{engine::kBatchDim, 1, 4, 4});
  const std::string path = TempPath("unsupported.onnx");
  ASSERT_TRUE(engine::SaveModel(b.Build(), path).ok());
  const Result r = Bitsweep("inspect --model " + path);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("3 nodes are not supported"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Erf x2: 'erf_1', 'erf_2'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Softsign x1: 'soft'"), std::string::npos) << r.out;
}

TEST(CliTest, ErrorsAreReadableAndExitNonZero) {
  struct Case {
    std::string args;
    std::string message;
    int exit_code;  // 1 failure, 2 usage
  };
  const std::string lenet = LenetFile();
  const Case cases[] = {
      {"eval --dataset idx:" + kData + "/t10k", "--model is required", 2},
      {"eval --model /no/such.onnx --dataset idx:" + kData + "/t10k", "/no/such.onnx", 1},
      {"eval --model " + lenet + " --dataset idx:/no/such/prefix", "/no/such/prefix", 1},
      {"eval --model " + lenet + " --dataset csv:foo", "csv:foo", 1},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --std 0", "std", 1},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --mean abc", "'abc'", 2},
      {"eval --model " + lenet + " --dataset idx:" + kData + "/t10k --batch 0", "--batch", 2},
      {"eval --model " + lenet + " --limit ten", "--limit ten", 2},
      {"eval --model " + lenet + " --no-such-flag 3", "unknown flag --no-such-flag", 2},
      {"eval --model", "--model needs a value", 2},
      {"eval --model " + lenet + " stray", "unexpected argument 'stray'", 2},
      {"run --model " + lenet + " --output-dir " + TempPath("x"), "'input' was not given", 1},
      {"run --model " + lenet + " --input input=/no/such.pb --output-dir " + TempPath("x"),
       "/no/such.pb", 1},
      {"train --arch vgg --dataset idx:" + kData + "/train --out " + TempPath("v.onnx"), "vgg", 2},
      {"frobnicate", "unknown command 'frobnicate'", 2},
      {"", "Commands:", 2},
      {"trials --server 127.0.0.1:1", "--sweep ID is required", 2},
      {"sweeps --format xml", "--format xml: sweeps prints table, csv, json, jsonl", 2},
      {"watch --sweep 1 --format csv", "watch has no output formats", 2},
      // A flag another command reads is refused, not silently ignored.
      {"train --model m.onnx --out x.onnx", "--model is not one of this command's flags", 2},
      {"eval --model m.onnx --dataset idx:x --server 127.0.0.1:1",
       "--server is not one of this command's flags", 2},
      {"trials --sweep 1 --state done", "--state done", 2},
  };
  for (const Case& c : cases) {
    const Result r = Bitsweep(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << "\n" << r.out;
    if (c.exit_code == 2 && !c.args.empty()) {
      EXPECT_NE(r.out.find("--help' for usage"), std::string::npos) << c.args << "\n" << r.out;
    }
  }
}

// inspect lists the layers in every listing format; CSV and JSON agree.
TEST(CliTest, InspectListsLayersInEveryFormat) {
  const std::string lenet = LenetFile();
  const Result csv = Bitsweep("inspect --model " + lenet + " --format csv");
  const Result json = Bitsweep("inspect --model " + lenet + " --format json");
  const Result table = Bitsweep("inspect --model " + lenet);
  ASSERT_EQ(csv.exit_code, 0) << csv.out;
  ASSERT_EQ(json.exit_code, 0) << json.out;
  ASSERT_EQ(table.exit_code, 0) << table.out;
  const auto rows = testing::ParseCsv(csv.out);
  const nlohmann::json doc = nlohmann::json::parse(json.out);
  ASSERT_EQ(rows.size(), doc["layers"].size() + 1) << csv.out;
  ASSERT_EQ(doc["layers"].size(), 5u) << json.out;  // conv1, conv2, fc1, fc2, fc3
  EXPECT_EQ(rows[0][0], "name");
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i][0], doc["layers"][i - 1]["name"].get<std::string>());
    EXPECT_EQ(std::stoll(rows[i][5]), doc["layers"][i - 1]["macs"].get<int64_t>());
    EXPECT_NE(table.out.find(rows[i][0]), std::string::npos) << table.out;
  }
}

// Every command answers --help, -h and `help COMMAND` with its usage and flags, on stdout, exit 0.
TEST(CliTest, EveryCommandHasHelp) {
  const Result usage = Bitsweep("--help");
  ASSERT_EQ(usage.exit_code, 0) << usage.out;
  std::vector<std::string> commands;
  const size_t list = usage.out.find("Commands:\n");
  ASSERT_NE(list, std::string::npos) << usage.out;
  std::istringstream lines(usage.out.substr(list + 10));
  for (std::string line; std::getline(lines, line) && line.rfind("  ", 0) == 0;) {
    commands.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  for (const char* expected : {"eval", "run", "inspect", "train", "finetune", "local", "submit",
                               "watch", "frontier", "trials", "export", "cancel", "sweeps"}) {
    EXPECT_NE(std::find(commands.begin(), commands.end(), expected), commands.end()) << expected;
  }
  for (const std::string& command : commands) {
    for (const std::string& form : {command + " --help", command + " -h", "help " + command}) {
      const Result r = Bitsweep(form);
      EXPECT_EQ(r.exit_code, 0) << form << "\n" << r.out;
      EXPECT_EQ(r.out.rfind("usage: bitsweep " + command + " ", 0), 0u) << form << "\n" << r.out;
      EXPECT_NE(r.out.find("Exit status: 0 success, 1 failure, 2 usage error."), std::string::npos)
          << r.out;
    }
  }
  // Flags with their help and defaults; the global flags with their environment variables.
  const Result trials = Bitsweep("trials --help");
  EXPECT_NE(trials.out.find("--format"), std::string::npos) << trials.out;
  EXPECT_NE(trials.out.find("[default: table]"), std::string::npos) << trials.out;
  EXPECT_NE(trials.out.find("[env BITSWEEP_SERVER]"), std::string::npos) << trials.out;
  const Result submit = Bitsweep("submit --help");
  EXPECT_NE(submit.out.find("--error-margin"), std::string::npos) << submit.out;
  EXPECT_NE(submit.out.find("[default: 1]"), std::string::npos) << submit.out;
}

// --version on the three binaries: the project version, the commit, the libraries each links.
TEST(CliTest, VersionOnAllBinaries) {
  struct Case {
    std::string binary;
    std::vector<std::string> present, absent;
  };
  const Case cases[] = {
      {BITSWEEP_BINARY, {"bitsweep 0.", "(commit ", "oneDNN 2.", "gRPC 1.", "SQLite 3.", "protobuf 3."}, {}},
      {BITSWEEP_COORDINATOR, {"bitsweep-coordinator 0.", "(commit ", "gRPC 1.", "SQLite 3."}, {"oneDNN"}},
      {BITSWEEP_WORKER, {"bitsweep-worker 0.", "(commit ", "oneDNN 2.", "gRPC 1."}, {}},
  };
  for (const Case& c : cases) {
    const Result r = testing::RunCommandLine(c.binary + " --version");
    EXPECT_EQ(r.exit_code, 0) << c.binary << "\n" << r.out;
    for (const std::string& p : c.present) EXPECT_NE(r.out.find(p), std::string::npos) << p << "\n" << r.out;
    for (const std::string& a : c.absent) EXPECT_EQ(r.out.find(a), std::string::npos) << a << "\n" << r.out;
  }
}

// Global flags before or after the command; BITSWEEP_SERVER / BITSWEEP_TOKEN when absent.
// Nothing listens on these ports: the error names the address the client used.
TEST(CliTest, GlobalFlagsAnywhereAndFromTheEnvironment) {
  const Result before = Bitsweep("--server 127.0.0.1:1 sweeps");
  EXPECT_EQ(before.exit_code, 1) << before.out;
  EXPECT_NE(before.out.find("127.0.0.1:1 is unreachable"), std::string::npos) << before.out;
  const Result after = Bitsweep("sweeps --server=127.0.0.1:2");
  EXPECT_EQ(after.exit_code, 1) << after.out;
  EXPECT_NE(after.out.find("127.0.0.1:2 is unreachable"), std::string::npos) << after.out;
  const Result env = testing::RunCommandLine("BITSWEEP_SERVER=127.0.0.1:3 BITSWEEP_TOKEN=t " +
                                             std::string(BITSWEEP_BINARY) + " sweeps");
  EXPECT_EQ(env.exit_code, 1) << env.out;
  EXPECT_NE(env.out.find("127.0.0.1:3 is unreachable"), std::string::npos) << env.out;
  const Result flag_wins = testing::RunCommandLine(
      "BITSWEEP_SERVER=127.0.0.1:3 " + std::string(BITSWEEP_BINARY) + " --server 127.0.0.1:4 sweeps");
  EXPECT_NE(flag_wins.out.find("127.0.0.1:4 is unreachable"), std::string::npos) << flag_wins.out;
}

}  // namespace
}  // namespace bitsweep
