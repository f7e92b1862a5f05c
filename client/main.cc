// bitsweep: the command-line tool. `bitsweep help` lists the commands, `bitsweep COMMAND --help`
// shows one. The registry below names each command, its flags (what --help shows) and the
// output formats it supports; client/command_line.h has the conventions.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/command_line.h"
#include "client/engine_commands.h"
#include "client/health_command.h"
#include "client/report.h"
#include "client/service_commands.h"
#include "common/version.h"
#include "grpcpp/grpcpp.h"
#include "oneapi/dnnl/dnnl.h"
#include "sqlite3.h"
#include "worker/engine/onnx_import.h"
#include "worker/trial_executor.h"

namespace {

using bitsweep::cli::CommandSpec;
using bitsweep::cli::Invocation;

// Flags shared by several commands, listed once.
const std::vector<std::string> kDataFlags = {
    "dataset", "train_data", "eval_data", "calibration_data", "mean", "std", "limit", "eval_limit",
    "batch", "resize", "center_crop", "channel_order", "skip_bad_images"};
const std::vector<std::string> kSweepFlags = {
    "strategy", "error_margin", "weight_formats", "activation_formats", "grid", "objectives",
    "finetune_steps", "lr", "budget", "population", "seed", "max_attempts", "name", "sweep_file",
    "calibration_samples", "hardware_profile", "no_cache"};

std::vector<std::string> Join(std::initializer_list<std::vector<std::string>> lists) {
  std::vector<std::string> out;
  for (const auto& l : lists) out.insert(out.end(), l.begin(), l.end());
  return out;
}

// A command that needs nothing from the invocation.
template <typename F>
std::function<absl::Status(const Invocation&)> Plain(F f) {
  return [f](const Invocation&) { return f(); };
}

const std::vector<CommandSpec>& Commands() {
  namespace cli = bitsweep::cli;
  const std::vector<std::string>& global = cli::GlobalFlags();
  const std::vector<std::string> listing = {"table", "csv", "json", "jsonl"};
  static const auto* commands = new std::vector<CommandSpec>{
      {"eval", "--model M.onnx --dataset REF [--config C.json] [flags]",
       "Accuracy (top-1, top-5, loss) and speed of a model on a dataset.\n"
       "With --config, of its quantized emulation, plus size, BOPs, energy and the formats each\n"
       "layer used.",
       Join({{"model"}, kDataFlags,
             {"threads", "json", "config", "int8", "hardware_profile", "calibration_dataset",
              "calibration_samples"}}),
       {}, {}, Plain(cli::EvalCommand)},
      {"inspect", "--model M.onnx [--dataset REF [--limit N]] [--format F]",
       "The quantizable layers: class, shapes, MACs, parameters and, given data, value ranges.",
       Join({{"model"}, kDataFlags, {"threads", "json", "format"}}), {}, listing,
       Plain(cli::InspectCommand)},
      {"run", "--model M.onnx --input [NAME=]FILE.pb [--input ...] --output-dir DIR",
       "One batch from ONNX TensorProto files; writes DIR/OUTPUT.pb per graph output.\n"
       "--input may repeat: one per graph input (NAME defaults to the name in the tensor).",
       {"model", "output_dir", "threads"}, {"input"}, {},
       [](const Invocation& inv) {
         auto it = inv.repeated.find("input");
         return cli::RunCommand(it == inv.repeated.end() ? std::vector<std::string>{} : it->second);
       }},
      {"train", "--arch ARCH --dataset idx:DIR --out M.onnx [flags]",
       "Trains a zoo model from scratch and scores it.\n"
       "Architectures: lenet5, squeezenet-mini, resnet-mini, alexnet-mini; linear (closed-form\n"
       "ridge). The written file is scored on the evaluation split.",
       Join({{"arch", "out"}, kDataFlags,
             {"epochs", "lr", "train_batch", "momentum", "weight_decay", "lr_decay", "seed", "channels",
              "threads", "json"}}),
       {}, {}, Plain(cli::TrainCommand)},
      {"finetune", "--model M.onnx --config C.json --dataset idx:DIR --steps N [flags]",
       "Quantized fine-tuning with fp32 shadow weights; accuracy before and after.",
       Join({{"model", "config", "steps", "out"}, kDataFlags,
             {"lr", "train_batch", "momentum", "weight_decay", "seed", "calibration_samples",
              "hardware_profile", "threads", "json"}}),
       {}, {}, Plain(cli::FinetuneCommand)},
      {"local", "--model M.onnx|zoo:lenet5 --dataset idx:DIR [sweep flags]",
       "Runs one sweep in this process and prints its frontier.\n"
       "A coordinator and workers on an embedded SQLite file (--db), gRPC on loopback.",
       Join({{"model", "workers", "threads", "db", "metrics_port"}, kDataFlags, kSweepFlags}), {}, {},
       Plain(cli::LocalCommand)},
      {"submit", "--model M.onnx --dataset idx:DIR [sweep flags] [--wait]",
       "Uploads the model and queues a sweep.\n"
       "With --wait, follows it and prints its frontier. "
       "Exits 1 when the sweep fails or is cancelled.",
       Join({{"model", "model_hash", "wait", "reconnect_seconds", "format"}, kDataFlags,
             kSweepFlags, global}),
       {},
       {"table", "csv", "json", "jsonl"}, Plain(cli::SubmitCommand)},
      {"watch", "--sweep ID",
       "Follows a sweep until it ends.\n"
       "Progress, stage, failed and cancelled trials, best so far, ETA: one line redrawn on a\n"
       "terminal (cut to its width), a plain line per change otherwise. Exits 1 when the sweep\n"
       "fails or is cancelled. Reconnects across coordinator restarts (--reconnect-seconds).",
       Join({{"sweep", "reconnect_seconds"}, global}), {}, {}, Plain(cli::WatchCommand)},
      {"frontier", "--sweep ID [--objectives top1,energy] [--format F] [--plot F.svg|F.png]",
       "The sweep's Pareto frontier; --plot draws it over every evaluated trial.",
       Join({{"sweep", "objectives", "format", "within_margin_only", "plot", "log_scale"}, global}),
       {}, listing, Plain(cli::FrontierCommand)},
      {"trials", "--sweep ID [--state S] [--stage S] [--format F]",
       "Every trial of a sweep with its result; csv and json add the config and the details.",
       Join({{"sweep", "state", "stage", "within_margin_only", "format"}, global}), {}, listing,
       Plain(cli::TrialsCommand)},
      {"trials invalidate", "--trial ID",
       "Takes a trial's result back: later sweeps evaluate its config again.\n"
       "Deduplication stops serving the result (of the trial, or of the one it was cached\n"
       "from); trials that already used it keep it.",
       Join({{"trial"}, global}), {}, {}, Plain(cli::TrialsInvalidateCommand)},
      {"export", "--trial ID [--out manifest.json] [--qdq model.onnx]",
       "A trial's per-layer formats for a hardware flow.\n"
       "Formats with fractional lengths and scales as JSON; --qdq also writes a QDQ ONNX model\n"
       "(integer formats).",
       Join({{"trial", "out", "qdq"}, global}), {}, {}, Plain(cli::ExportCommand)},
      {"cancel", "--sweep ID", "Cancels a sweep's queued and running trials; results stay.",
       Join({{"sweep"}, global}), {}, {}, Plain(cli::CancelCommand)},
      {"resume", "--sweep ID [--wait]",
       "Runs a failed or cancelled sweep on.\n"
       "Its failed and cancelled trials are queued again with fresh attempts and the planner\n"
       "continues from every result the sweep has. With --wait, follows it as watch does.",
       Join({{"sweep", "wait", "reconnect_seconds"}, global}), {}, {}, Plain(cli::ResumeCommand)},
      {"sweeps", "[--format F]", "Every sweep, newest first.", Join({{"format"}, global}), {},
       listing, Plain(cli::SweepsCommand)},
      {"health", "--server ADDR [--timeout-seconds 5]",
       "Exits 0 if the server's gRPC health service answers SERVING, 1 otherwise.\n"
       "For container health checks (the Docker image's HEALTHCHECK runs it).",
       Join({{"timeout_seconds"}, global}), {}, {}, Plain(cli::HealthCommand)},
      {"figures", "--sweep ID --output-dir DIR [--log-scale] [--png]",
       "Writes the sweep's figures as SVG files.\n"
       "Top-1 vs size, energy and BOPs over every evaluated trial (top1_vs_*.svg) and the\n"
       "per-layer formats of the frontier (layer_formats.svg); --png adds PNGs (rsvg-convert).\n"
       "From the coordinator at --server, or without one from the results file --db.",
       Join({{"sweep", "output_dir", "log_scale", "png", "db"}, global}), {}, {},
       Plain(cli::FiguresCommand)},
      {"report", "--sweep ID --out report.html [--log-scale]",
       "Writes one self-contained HTML report of a sweep.\n"
       "Its settings, figures, frontier and the per-layer formats of the points within the\n"
       "margin, in one file that opens offline (inline SVG, no scripts, no network). From the\n"
       "coordinator at --server, or without one from the results file --db (`bitsweep local`'s).",
       Join({{"sweep", "out", "log_scale", "db"}, global}), {}, {}, Plain(cli::ReportCommand)},
  };
  return *commands;
}

std::string Usage() {
  std::string out =
      "bitsweep: which number format and bit-width can each layer of a CNN use?\n\n"
      "usage: bitsweep [--server ADDR] [--token T] COMMAND [flags]\n\nCommands:\n";
  for (const CommandSpec& c : Commands()) {
    const std::string summary = c.summary.substr(0, c.summary.find('\n'));
    absl::StrAppendFormat(&out, "  %-9s %s\n", c.name, summary);
  }
  absl::StrAppend(
      &out,
      "\nService commands talk to a coordinator: --server HOST:PORT (or BITSWEEP_SERVER), --token T\n"
      "(or BITSWEEP_TOKEN) when it requires one; these flags go before or after the command.\n"
      "Datasets: idx:DIR (MNIST naming: DIR/train and DIR/t10k), idx:PREFIX (one split),\n"
      "npy:IMAGES.npy,LABELS.npy (float32, or uint8 images), imagefolder:DIR (a folder per\n"
      "class), list:FILE.csv (path,label lines); or --train-data REF --eval-data REF. Image\n"
      "datasets take --resize N --center-crop N (as torchvision), docs/DATASETS.md.\n"
      "Flags take - or _ (--error-margin = --error_margin), --flag VALUE or --flag=VALUE.\n"
      "Exit status: 0 success, 1 failure, 2 usage error.\n\n"
      "Run 'bitsweep COMMAND --help' for a command's flags; 'bitsweep help ops' for the ONNX\n"
      "operators it runs; 'bitsweep --version' for versions.\n");
  return out;
}

const CommandSpec* Find(const std::string& name) {
  for (const CommandSpec& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string VersionText() {
  const dnnl_version_t* dnnl = dnnl_version();
  return bitsweep::VersionText(
      "bitsweep", {{"engine", bitsweep::worker::kEngineVersion},
                   {"oneDNN", absl::StrCat(dnnl->major, ".", dnnl->minor, ".", dnnl->patch)},
                   {"gRPC", grpc::Version()},
                   {"SQLite", sqlite3_libversion()}});
}

int UsageFailure(const std::string& command, const std::string& message) {
  if (command.empty()) {
    std::fprintf(stderr, "bitsweep: %s\nRun 'bitsweep --help' for usage.\n", message.c_str());
  } else {
    std::fprintf(stderr, "bitsweep %s: %s\nRun 'bitsweep %s --help' for usage.\n", command.c_str(),
                 message.c_str(), command.c_str());
  }
  return bitsweep::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = bitsweep::cli;
  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<cli::ParsedCommandLine> parsed = cli::ParseCommandLine(args, Commands());
  if (!parsed.ok()) {
    std::string command;  // the first argument naming a command, for the message
    for (const std::string& a : args) {
      if (Find(a) != nullptr) {
        command = a;
        break;
      }
    }
    return UsageFailure(command, std::string(parsed.status().message()));
  }
  if (parsed->version) {
    std::fputs(VersionText().c_str(), stdout);
    return cli::kExitSuccess;
  }
  std::string name = parsed->command;
  bool help = parsed->help;
  if (name == "help") {
    name = parsed->invocation.command;
    help = true;
  }
  if (help && name == "ops") {
    std::fputs(bitsweep::engine::SupportedOperatorsHelp().c_str(), stdout);
    return cli::kExitSuccess;
  }
  if (name.empty()) {
    std::fputs(Usage().c_str(), help ? stdout : stderr);
    return help ? cli::kExitSuccess : cli::kExitUsage;
  }
  const CommandSpec* command = Find(name);
  if (command == nullptr) {
    std::vector<std::string> names;
    for (const CommandSpec& c : Commands()) names.push_back(c.name);
    return UsageFailure("", absl::StrCat("unknown command '", name, "' (commands: ",
                                         absl::StrJoin(names, ", "), ")"));
  }
  if (help) {
    std::fputs(cli::CommandHelp(*command).c_str(), stdout);
    return cli::kExitSuccess;
  }
  if (absl::Status s = cli::CheckForCommand(*parsed, *command); !s.ok()) {
    return UsageFailure(name, std::string(s.message()));
  }
  // Several workers share the cores in `local`: OpenMP threads that spin while idle would take
  // the cores from the other workers (10-25x slower when two spin). Must precede OpenMP's start.
  if (name == "local") setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);

  const absl::Status status = command->run(parsed->invocation);
  if (status.ok()) return cli::kExitSuccess;
  if (cli::IsUsageError(status)) return UsageFailure(name, std::string(status.message()));
  std::fprintf(stderr, "bitsweep %s: %s\n", name.c_str(), std::string(status.message()).c_str());
  return cli::kExitFailure;
}
