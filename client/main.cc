// bitsweep: the command-line tool. `bitsweep help` lists the commands.
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "client/engine_commands.h"
#include "client/health_command.h"
#include "client/service_commands.h"
#include "common/flag_names.h"

namespace {

constexpr char kUsage[] =
    "bitsweep: which number format and bit-width can each layer of a CNN use?\n"
    "\n"
    "Commands:\n"
    "  eval  --model M.onnx --dataset idx:PREFIX [--mean 0.2860 --std 0.3530] [--limit N]\n"
    "        [--batch 256] [--threads 2] [--json]\n"
    "        [--config C.json [--hardware-profile P.json] [--calibration-dataset REF]\n"
    "         [--calibration-samples 1000]]\n"
    "        top-1, top-5, loss and images/s of a model on a dataset; with --config, of its\n"
    "        quantized emulation, plus size, BOPs, energy and the formats each layer used\n"
    "  inspect --model M.onnx [--dataset REF [--limit N]] [--json]\n"
    "        quantizable layers: class, shapes, MACs, parameters and, given data, ranges\n"
    "  run   --model M.onnx --input NAME=FILE.pb [--input ...] --output-dir DIR\n"
    "        one batch from ONNX TensorProto files; writes DIR/OUTPUT.pb per graph output\n"
    "  train --arch lenet5|squeezenet-mini|resnet-mini|alexnet-mini|linear --dataset idx:DIR\n"
    "        --out M.onnx [--epochs 10] [--lr 0.01] [--train-batch 64] [--momentum 0.9]\n"
    "        [--weight-decay 5e-4] [--lr-decay 1] [--seed 1] [--mean ..] [--std ..]\n"
    "        trains a zoo model from scratch (linear: closed-form ridge) and scores it\n"
    "  finetune --model M.onnx --config C.json --dataset idx:DIR --steps N [--lr 0.001]\n"
    "        [--out F.onnx] [--json]\n"
    "        quantized fine-tuning with fp32 shadow weights; accuracy before and after\n"
    "  local --model M.onnx|zoo:lenet5 --dataset idx:DIR [--mean .. --std ..]\n"
    "        [--strategy ristretto|sensitivity|grid|random|evolutionary] [--error-margin 1.0]\n"
    "        [--workers 2] [--db results.db] [--finetune-steps N] [sweep flags as for submit]\n"
    "        a coordinator and workers in this process: runs one sweep, prints its frontier\n"
    "\n"
    "Service (a coordinator at --server HOST:PORT; --token T when it requires one):\n"
    "  submit   --model M.onnx --dataset idx:DIR [--strategy ..] [--error-margin ..]\n"
    "           [--weight-formats fixed:16,fixed:8,..] [--activation-formats ..]\n"
    "           [--grid 'conv.weights=fixed:8,fixed:4;default.activations=fixed:8']\n"
    "           [--objectives top1,size] [--finetune-steps N] [--budget N] [--population N]\n"
    "           [--seed S] [--sweep-file S.json] [--wait]\n"
    "  watch    --sweep ID            progress, stage, best so far, ETA\n"
    "  frontier --sweep ID [--objectives top1,energy] [--format table|csv|json]\n"
    "           [--plot frontier.svg] [--within-margin-only]\n"
    "  trials   --sweep ID [--state succeeded] [--stage S] [--format table|csv|json]\n"
    "  export   --trial ID [--out manifest.json] [--qdq model.onnx]\n"
    "  cancel   --sweep ID\n"
    "  sweeps   [--format table|json]\n"
    "  health   exit 0 if the server's gRPC health service answers SERVING (HEALTHCHECK)\n"
    "\n"
    "Datasets: idx:DIR (MNIST naming: DIR/train and DIR/t10k), idx:PREFIX (one split),\n"
    "npy:IMAGES.npy,LABELS.npy; or --train-data REF --eval-data REF.\n"
    "\n"
    "Run 'bitsweep COMMAND --help' for the flags.\n";

// absl flags cannot repeat: pull every `--input X` / `--input=X` out of argv first.
std::vector<std::string> ExtractRepeated(const char* flag, std::vector<char*>* args) {
  std::vector<std::string> values;
  const std::string eq = std::string("--") + flag + "=";
  const std::string bare = std::string("--") + flag;
  std::vector<char*> kept;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string a = (*args)[i];
    if (a.rfind(eq, 0) == 0) {
      values.push_back(a.substr(eq.size()));
    } else if (a == bare && i + 1 < args->size()) {
      values.push_back((*args)[++i]);
    } else {
      kept.push_back((*args)[i]);
    }
  }
  *args = kept;
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || std::strcmp(argv[1], "help") == 0 || std::strcmp(argv[1], "--help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Several workers share the cores in `local`: OpenMP threads that spin while idle would take
  // the cores from the other workers (10-25x slower when two spin). Must precede OpenMP's start.
  if (command == "local") setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  // argv[1] (the command) plays the program name for absl's parser.
  std::vector<char*> args(argv + 1, argv + argc);
  std::vector<std::string> inputs;
  if (command == "run") inputs = ExtractRepeated("input", &args);
  std::vector<std::string> normalized;
  bitsweep::NormalizeFlagNames(&normalized, &args);
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (rest.size() > 1) {
    std::fprintf(stderr, "bitsweep %s: unexpected argument '%s'\n", command.c_str(), rest[1]);
    return 2;
  }

  absl::Status status;
  if (command == "eval") {
    status = bitsweep::cli::EvalCommand();
  } else if (command == "run") {
    status = bitsweep::cli::RunCommand(inputs);
  } else if (command == "inspect") {
    status = bitsweep::cli::InspectCommand();
  } else if (command == "train") {
    status = bitsweep::cli::TrainCommand();
  } else if (command == "finetune") {
    status = bitsweep::cli::FinetuneCommand();
  } else if (command == "local") {
    status = bitsweep::cli::LocalCommand();
  } else if (command == "submit") {
    status = bitsweep::cli::SubmitCommand();
  } else if (command == "watch") {
    status = bitsweep::cli::WatchCommand();
  } else if (command == "frontier") {
    status = bitsweep::cli::FrontierCommand();
  } else if (command == "trials") {
    status = bitsweep::cli::TrialsCommand();
  } else if (command == "export") {
    status = bitsweep::cli::ExportCommand();
  } else if (command == "cancel") {
    status = bitsweep::cli::CancelCommand();
  } else if (command == "sweeps") {
    status = bitsweep::cli::SweepsCommand();
  } else if (command == "health") {
    status = bitsweep::cli::HealthCommand();
  } else {
    std::fprintf(stderr, "bitsweep: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "bitsweep %s: %s\n", command.c_str(), std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
