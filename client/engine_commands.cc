#include "client/engine_commands.h"

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/runner.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/zoo/linear_fit.h"
#include "worker/engine/zoo/onnx_builder.h"

ABSL_FLAG(std::string, model, "", "ONNX model file");
ABSL_FLAG(std::string, dataset, "",
          "dataset reference: idx:PREFIX (e.g. idx:/usr/share/datasets/fashion-mnist/t10k) or "
          "npy:IMAGES.npy,LABELS.npy");
ABSL_FLAG(std::string, mean, "", "per-channel mean subtracted after scaling to [0,1], e.g. 0.2860");
ABSL_FLAG(std::string, std, "", "per-channel standard deviation divided by, e.g. 0.3530");
ABSL_FLAG(int64_t, limit, 0, "evaluate only the first N samples (0: all)");
ABSL_FLAG(int64_t, batch, 256, "batch size");
ABSL_FLAG(int32_t, threads, 2, "oneDNN (OpenMP) threads");
ABSL_FLAG(bool, json, false, "print one JSON object on a single line");
ABSL_FLAG(std::string, arch, "linear", "architecture to train (train): linear");
ABSL_FLAG(std::string, out, "", "where to write the trained ONNX model (train)");
ABSL_FLAG(std::string, output_dir, "", "directory for the output .pb files (run)");

namespace bitsweep::cli {
namespace {

absl::StatusOr<std::vector<float>> ParseFloatList(const std::string& flag, const std::string& text) {
  std::vector<float> values;
  if (text.empty()) return values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    float v;
    if (!absl::SimpleAtof(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", std::string(part), "' is not a number"));
    }
    values.push_back(v);
  }
  return values;
}

absl::Status RequireFlag(const std::string& name, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return absl::OkStatus();
}

// Output names may hold characters that do not belong in a file name.
std::string FileNameFor(const std::string& value_name) {
  std::string out = value_name;
  for (char& c : out) {
    if (c == '/' || c == '\\' || c == ':' || c == ' ') c = '_';
  }
  return out;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}


// The dataset named by --dataset with the --mean/--std/--limit preprocessing.
absl::StatusOr<engine::Dataset> DatasetFromFlags() {
  const std::string reference = absl::GetFlag(FLAGS_dataset);
  RETURN_IF_ERROR(RequireFlag("dataset", reference));
  if (absl::GetFlag(FLAGS_limit) < 0) return absl::InvalidArgumentError("--limit must be >= 0");
  engine::Preprocessing prep;
  ASSIGN_OR_RETURN(prep.mean, ParseFloatList("mean", absl::GetFlag(FLAGS_mean)));
  ASSIGN_OR_RETURN(prep.std, ParseFloatList("std", absl::GetFlag(FLAGS_std)));
  prep.limit = absl::GetFlag(FLAGS_limit);
  return engine::LoadDataset(reference, prep);
}

absl::Status CheckThreads() {
  if (absl::GetFlag(FLAGS_threads) < 1) return absl::InvalidArgumentError("--threads must be >= 1");
  return absl::OkStatus();
}

}  // namespace

absl::Status EvalCommand() {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string dataset_ref = absl::GetFlag(FLAGS_dataset);
  RETURN_IF_ERROR(RequireFlag("model", model));
  if (absl::GetFlag(FLAGS_batch) < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  RETURN_IF_ERROR(CheckThreads());
  ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxFile(model));
  ASSIGN_OR_RETURN(engine::Dataset dataset, DatasetFromFlags());
  engine::EvalOptions options;
  options.batch = absl::GetFlag(FLAGS_batch);
  options.threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(engine::EvalResult r, engine::Evaluate(graph, dataset, options));

  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF(
        "{\"model\":\"%s\",\"dataset\":\"%s\",\"samples\":%d,\"top1\":%.6f,\"top5\":%.6f,"
        "\"loss\":%.6f,\"images_per_s\":%.1f}\n",
        JsonEscape(model), JsonEscape(dataset_ref), r.samples, r.top1, r.top5, r.loss,
        r.images_per_second);
  } else {
    absl::PrintF("model         %s\n", model);
    absl::PrintF("dataset       %s\n", dataset_ref);
    absl::PrintF("samples       %d\n", r.samples);
    absl::PrintF("top1          %.4f\n", r.top1);
    absl::PrintF("top5          %.4f\n", r.top5);
    absl::PrintF("loss          %.4f\n", r.loss);
    absl::PrintF("images_per_s  %.1f\n", r.images_per_second);
  }
  return absl::OkStatus();
}

absl::Status RunCommand(const std::vector<std::string>& input_args) {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string output_dir = absl::GetFlag(FLAGS_output_dir);
  RETURN_IF_ERROR(RequireFlag("model", model));
  RETURN_IF_ERROR(RequireFlag("output-dir", output_dir));
  std::map<std::string, engine::Tensor> inputs;
  for (const std::string& arg : input_args) {
    // NAME=FILE binds FILE to input NAME; a bare FILE binds by the TensorProto's own name.
    std::string name, path = arg;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      path = arg.substr(eq + 1);
    }
    std::string proto_name;
    ASSIGN_OR_RETURN(engine::Tensor t, engine::ReadTensorProtoFile(path, &proto_name));
    if (name.empty()) name = proto_name;
    if (name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--input ", arg, ": the tensor has no name; write --input NAME=", path));
    }
    if (!inputs.emplace(name, std::move(t)).second) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' is given twice"));
    }
  }
  ASSIGN_OR_RETURN(auto outputs, engine::RunModelOnce(model, inputs, absl::GetFlag(FLAGS_threads)));
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create output directory '", output_dir, "': ", ec.message()));
  }
  for (const auto& [name, tensor] : outputs) {
    const std::string path = (std::filesystem::path(output_dir) / (FileNameFor(name) + ".pb")).string();
    RETURN_IF_ERROR(engine::WriteTensorProtoFile(path, name, tensor));
    absl::PrintF("%s %s -> %s\n", name, engine::ShapeToString(tensor.shape()), path);
  }
  return absl::OkStatus();
}

absl::Status TrainCommand() {
  const std::string arch = absl::GetFlag(FLAGS_arch);
  const std::string out = absl::GetFlag(FLAGS_out);
  RETURN_IF_ERROR(RequireFlag("out", out));
  RETURN_IF_ERROR(CheckThreads());
  if (arch != "linear") {
    return absl::InvalidArgumentError(
        absl::StrCat("--arch ", arch, ": unknown architecture (trainable here: linear)"));
  }
  ASSIGN_OR_RETURN(engine::Dataset train, DatasetFromFlags());
  engine::zoo::RidgeOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(onnx::ModelProto model, engine::zoo::FitRidgeClassifier(train, options));
  RETURN_IF_ERROR(engine::SaveModel(model, out));
  absl::PrintF("trained %s on %d samples of %s -> %s\n", arch, train.size(), train.reference, out);
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
