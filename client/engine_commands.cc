#include "client/engine_commands.h"

#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/runner.h"
#include "worker/engine/quant/config.h"
#include "worker/engine/quant/cost_model.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/trial.h"
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
ABSL_FLAG(std::string, config, "", "quantization config JSON (eval): formats per layer and role");
ABSL_FLAG(std::string, hardware_profile, "",
          "hardware profile JSON with energy constants (default: Horowitz ISSCC 2014, 45 nm)");
ABSL_FLAG(std::string, calibration_dataset, "",
          "calibration split (default: idx:DIR/train beside an idx:DIR/t10k --dataset)");
ABSL_FLAG(int64_t, calibration_samples, 1000, "calibration samples: the first N of the split");
ABSL_FLAG(std::string, arch, "linear", "architecture to train (train): linear");
ABSL_FLAG(std::string, out, "", "where to write the trained ONNX model (train)");
ABSL_FLAG(std::string, output_dir, "", "directory for the output .pb files (run)");

namespace bitsweep::cli {
namespace {

using Json = nlohmann::json;

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


// Default calibration split: the training split beside an IDX test split (idx:DIR/t10k ->
// idx:DIR/train), unless --calibration_dataset names one. Empty when neither applies.
std::string CalibrationReference(const std::string& eval_reference) {
  const std::string given = absl::GetFlag(FLAGS_calibration_dataset);
  if (!given.empty()) return given;
  const std::string suffix = "/t10k";
  if (absl::StartsWith(eval_reference, "idx:") && absl::EndsWith(eval_reference, suffix)) {
    return eval_reference.substr(0, eval_reference.size() - suffix.size()) + "/train";
  }
  return "";
}

absl::StatusOr<engine::Dataset> CalibrationDatasetFromFlags(const std::string& reference) {
  const int64_t samples = absl::GetFlag(FLAGS_calibration_samples);
  if (samples < 1) return absl::InvalidArgumentError("--calibration_samples must be >= 1");
  engine::Preprocessing prep;
  ASSIGN_OR_RETURN(prep.mean, ParseFloatList("mean", absl::GetFlag(FLAGS_mean)));
  ASSIGN_OR_RETURN(prep.std, ParseFloatList("std", absl::GetFlag(FLAGS_std)));
  prep.limit = samples;
  return engine::LoadDataset(reference, prep);
}

std::string LayerClassName(engine::LayerClass c) {
  return c == engine::LayerClass::kConv ? "conv" : "fc";
}

std::string RoleDescription(const engine::TrialResult& t, size_t i, int role) {
  const std::string& name = t.layers[i].name;
  const engine::quant::LayerQuantPlan& plan = t.plan.at(name);
  if (role == 0) {
    auto w = t.eval.weight_quantizers.find(name);
    return w == t.eval.weight_quantizers.end() ? engine::quant::FormatToString(plan.weights)
                                               : engine::DescribeQuantizer(w->second);
  }
  return engine::DescribeQuantizer(role == 1 ? plan.inputs : plan.outputs);
}

void AddTrialJson(const engine::TrialResult& t, Json* out) {
  const engine::quant::CostReport& c = t.cost;
  (*out)["macs"] = c.total.macs;
  (*out)["size_bits"] = c.total.weight_bits;
  (*out)["activation_bits"] = c.total.activation_bits;
  (*out)["peak_activation_bits"] = c.peak_activation_bits;
  (*out)["bops"] = c.total.bops;
  (*out)["energy_pj"] = c.total.energy_pj;
  (*out)["hardware_profile"] = c.profile_name;
  Json layers = Json::array();
  for (size_t i = 0; i < t.layers.size(); ++i) {
    layers.push_back({{"name", t.layers[i].name},
                      {"class", LayerClassName(t.layers[i].layer_class)},
                      {"weights", RoleDescription(t, i, 0)},
                      {"inputs", RoleDescription(t, i, 1)},
                      {"outputs", RoleDescription(t, i, 2)},
                      {"macs", c.layers[i].macs},
                      {"weight_bits", c.layers[i].weight_bits},
                      {"activation_bits", c.layers[i].activation_bits},
                      {"bops", c.layers[i].bops},
                      {"energy_pj", c.layers[i].energy_pj}});
  }
  (*out)["layers"] = layers;
}

void PrintTrialTable(const engine::TrialResult& t) {
  const engine::quant::CostReport& c = t.cost;
  absl::PrintF("size_bits     %d (weights)\n", c.total.weight_bits);
  absl::PrintF("peak_act_bits %d\n", c.peak_activation_bits);
  absl::PrintF("bops          %d\n", c.total.bops);
  absl::PrintF("energy_pj     %.1f (%s)\n", c.total.energy_pj, c.profile_name);
  absl::PrintF("\n%-16s %-5s %-26s %-26s %-26s %12s %12s\n", "layer", "class", "weights", "inputs",
               "outputs", "MACs", "energy_pJ");
  for (size_t i = 0; i < t.layers.size(); ++i) {
    absl::PrintF("%-16s %-5s %-26s %-26s %-26s %12d %12.1f\n", t.layers[i].name,
                 LayerClassName(t.layers[i].layer_class), RoleDescription(t, i, 0),
                 RoleDescription(t, i, 1), RoleDescription(t, i, 2), c.layers[i].macs,
                 c.layers[i].energy_pj);
  }
}

}  // namespace

absl::Status EvalCommand() {
  const std::string model = absl::GetFlag(FLAGS_model);
  const std::string dataset_ref = absl::GetFlag(FLAGS_dataset);
  const std::string config_path = absl::GetFlag(FLAGS_config);
  RETURN_IF_ERROR(RequireFlag("model", model));
  if (absl::GetFlag(FLAGS_batch) < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  RETURN_IF_ERROR(CheckThreads());
  ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxFile(model));
  ASSIGN_OR_RETURN(engine::Dataset dataset, DatasetFromFlags());
  engine::EvalOptions options;
  options.batch = absl::GetFlag(FLAGS_batch);
  options.threads = absl::GetFlag(FLAGS_threads);

  Json out = {{"model", model}, {"dataset", dataset_ref}};
  engine::EvalResult r;
  std::optional<engine::TrialResult> trial;
  if (config_path.empty()) {
    ASSIGN_OR_RETURN(r, engine::Evaluate(graph, dataset, options));
  } else {
    ASSIGN_OR_RETURN(engine::quant::QuantConfig config,
                     engine::quant::ReadQuantConfigFile(config_path));
    engine::TrialInputs in;
    in.graph = &graph;
    in.eval = &dataset;
    in.config = &config;
    if (const std::string profile = absl::GetFlag(FLAGS_hardware_profile); !profile.empty()) {
      ASSIGN_OR_RETURN(in.profile, engine::quant::LoadHardwareProfile(profile));
    }
    std::optional<engine::Dataset> calibration;
    const std::string calibration_ref = CalibrationReference(dataset_ref);
    if (!calibration_ref.empty()) {
      ASSIGN_OR_RETURN(calibration, CalibrationDatasetFromFlags(calibration_ref));
      in.calibration = &*calibration;
    }
    absl::StatusOr<engine::TrialResult> t = engine::RunTrial(in, options);
    if (!t.ok() && in.calibration == nullptr) {
      return Annotate(t.status(), "give --calibration_dataset REF");
    }
    RETURN_IF_ERROR(t.status());
    trial = *std::move(t);
    r = trial->eval;
    out["config"] = config_path;
    out["config_hash"] = engine::quant::ConfigHash(config);
    if (in.calibration != nullptr) out["calibration_dataset"] = calibration_ref;
  }
  out["samples"] = r.samples;
  out["top1"] = r.top1;
  out["top5"] = r.top5;
  out["loss"] = r.loss;
  out["images_per_s"] = r.images_per_second;
  if (trial) AddTrialJson(*trial, &out);

  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF("%s\n", out.dump());
    return absl::OkStatus();
  }
  absl::PrintF("model         %s\n", model);
  absl::PrintF("dataset       %s\n", dataset_ref);
  absl::PrintF("samples       %d\n", r.samples);
  absl::PrintF("top1          %.4f\n", r.top1);
  absl::PrintF("top5          %.4f\n", r.top5);
  absl::PrintF("loss          %.4f\n", r.loss);
  absl::PrintF("images_per_s  %.1f\n", r.images_per_second);
  if (trial) PrintTrialTable(*trial);
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

absl::Status InspectCommand() {
  const std::string model = absl::GetFlag(FLAGS_model);
  RETURN_IF_ERROR(RequireFlag("model", model));
  RETURN_IF_ERROR(CheckThreads());
  ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxFile(model));
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(model, ": inspect needs one runtime input"));
  }
  std::optional<engine::Dataset> data;
  engine::Shape sample(graph.inputs[0].shape.begin() + 1, graph.inputs[0].shape.end());
  if (!absl::GetFlag(FLAGS_dataset).empty()) {
    ASSIGN_OR_RETURN(data, DatasetFromFlags());
    RETURN_IF_ERROR(engine::CheckFitsInput(*data, graph.inputs[0].shape, graph.inputs[0].name));
    sample = data->sample_shape();
  }
  ASSIGN_OR_RETURN(std::vector<engine::LayerInfo> layers, engine::InspectLayers(graph, sample));
  std::map<std::string, engine::quant::ActivationStats> stats;
  if (data) {
    engine::CalibrationRunOptions options;
    options.threads = absl::GetFlag(FLAGS_threads);
    options.histograms = false;
    ASSIGN_OR_RETURN(stats, engine::CalibrateActivations(graph, *data, options));
  }
  Json out = Json::array();
  int64_t total_macs = 0, total_weights = 0;
  for (const engine::LayerInfo& l : layers) {
    Json j = {{"name", l.name},
              {"class", LayerClassName(l.layer_class)},
              {"weight_shape", l.weight_shape},
              {"input_shape", l.input_shape},
              {"output_shape", l.output_shape},
              {"macs", l.macs},
              {"weights", l.weight_count},
              {"output_non_negative", l.output_non_negative}};
    if (auto it = stats.find(l.name); it != stats.end()) {
      j["input_range"] = {it->second.inputs.min, it->second.inputs.max};
      j["output_range"] = {it->second.outputs.min, it->second.outputs.max};
    }
    total_macs += l.macs;
    total_weights += l.weight_count;
    out.push_back(j);
  }
  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF("%s\n", Json{{"model", model}, {"layers", out}}.dump());
    return absl::OkStatus();
  }
  absl::PrintF("%-18s %-5s %-16s %-16s %-16s %10s %8s", "layer", "class", "weights", "input",
               "output", "MACs", "params");
  if (data) absl::PrintF("  %-22s %-22s", "input range", "output range");
  absl::PrintF("\n");
  for (size_t i = 0; i < layers.size(); ++i) {
    const engine::LayerInfo& l = layers[i];
    absl::PrintF("%-18s %-5s %-16s %-16s %-16s %10d %8d", l.name, LayerClassName(l.layer_class),
                 engine::ShapeToString(l.weight_shape), engine::ShapeToString(l.input_shape),
                 engine::ShapeToString(l.output_shape), l.macs, l.weight_count);
    if (auto it = stats.find(l.name); it != stats.end()) {
      absl::PrintF("  [%9.4f, %9.4f]  [%9.4f, %9.4f]", it->second.inputs.min,
                   it->second.inputs.max, it->second.outputs.min, it->second.outputs.max);
    }
    absl::PrintF("\n");
  }
  absl::PrintF("%d quantizable layers, %d MACs and %d weights per inference", layers.size(),
               total_macs, total_weights);
  if (data) absl::PrintF(", ranges over %d samples of %s", data->size(), data->reference);
  absl::PrintF("\n");
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
