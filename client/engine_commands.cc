#include "client/engine_commands.h"

#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/command_line.h"
#include "client/dataset_flags.h"
#include "client/flag_values.h"
#include "client/listing.h"
#include "common/status_macros.h"
#include "worker/dataset_settings.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/int8/int8_evaluate.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/runner.h"
#include "quant/config.h"
#include "quant/cost_model.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/zoo.h"
#include "worker/engine/zoo/linear_fit.h"
#include "worker/engine/zoo/onnx_builder.h"

ABSL_FLAG(std::string, model, "", "ONNX model file");
ABSL_FLAG(int64_t, batch, 256, "batch size");
ABSL_FLAG(int32_t, threads, 2, "oneDNN (OpenMP) threads");
ABSL_FLAG(bool, json, false, "print one JSON object on a single line");
ABSL_FLAG(std::string, config, "", "quantization config JSON (eval): formats per layer and role");
ABSL_FLAG(bool, int8, false,
          "eval --config: run the quantized layers on oneDNN's true int8 primitives instead of "
          "the fp32 emulation (int:8:sym configs only; others are an error naming the layer)");
ABSL_FLAG(std::string, hardware_profile, "",
          "hardware profile JSON with energy constants (default: Horowitz ISSCC 2014, 45 nm)");
ABSL_FLAG(std::string, arch, "lenet5",
          "architecture to train: linear (closed-form ridge), lenet5, squeezenet-mini, "
          "resnet-mini, alexnet-mini");
ABSL_FLAG(int32_t, epochs, 10, "training epochs (train)");
ABSL_FLAG(int64_t, steps, 0, "optimizer steps (finetune)");
ABSL_FLAG(int64_t, train_batch, 64, "training batch size (train, finetune)");
ABSL_FLAG(double, lr, 0, "learning rate (default: 0.01 for train, 0.001 for finetune)");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum");
ABSL_FLAG(double, weight_decay, 5e-4, "L2 weight decay on weights");
ABSL_FLAG(double, lr_decay, 1.0, "learning-rate factor applied after every epoch");
ABSL_FLAG(uint64_t, seed, 1, "initialization, shuffling and dropout seed");
ABSL_FLAG(std::string, out, "", "where to write the trained ONNX model (train)");
ABSL_FLAG(std::string, output_dir, "", "directory for the output .pb files (run)");

namespace bitsweep::cli {
namespace {

using Json = nlohmann::json;

absl::Status RequireFlag(const std::string& name, const std::string& value) {
  if (value.empty()) return UsageError(absl::StrCat("--", name, " is required"));
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


absl::Status CheckThreads() {
  if (absl::GetFlag(FLAGS_threads) < 1) return UsageError("--threads must be >= 1");
  return absl::OkStatus();
}


std::string LayerClassName(quant::LayerClass c) {
  return c == quant::LayerClass::kConv ? "conv" : "fc";
}

std::string RoleDescription(const engine::TrialResult& t, size_t i, int role) {
  const std::string& name = t.layers[i].name;
  const quant::LayerQuantPlan& plan = t.plan.at(name);
  if (role == 0) {
    auto w = t.eval.weight_quantizers.find(name);
    return w == t.eval.weight_quantizers.end() ? quant::FormatToString(plan.weights)
                                               : engine::DescribeQuantizer(w->second);
  }
  return engine::DescribeQuantizer(role == 1 ? plan.inputs : plan.outputs);
}

void AddTrialJson(const engine::TrialResult& t, Json* out) {
  const quant::CostReport& c = t.cost;
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
  const quant::CostReport& c = t.cost;
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
  const std::string config_path = absl::GetFlag(FLAGS_config);
  RETURN_IF_ERROR(RequireFlag("model", model));
  if (absl::GetFlag(FLAGS_batch) < 1) return UsageError("--batch must be >= 1");
  RETURN_IF_ERROR(CheckThreads());
  const bool true_int8 = absl::GetFlag(FLAGS_int8);
  if (true_int8 && config_path.empty()) {
    return UsageError("--int8 needs --config (an int:8:sym quantization config)");
  }
  ASSIGN_OR_RETURN(DatasetFlags data, DatasetFlagsFromCommandLine(DatasetUse::kEvaluation,
                                                                  /*data_is_local=*/true));
  const std::string dataset_ref = data.ref.eval();
  ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxFile(model));
  const int channels = worker::ModelInputChannels(graph);
  const engine::LoadOptions load = DatasetLoadOptions(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(engine::Dataset dataset,
                   worker::LoadSplit(worker::EvalSplit(data.ref, channels), load));
  engine::EvalOptions options;
  options.batch = absl::GetFlag(FLAGS_batch);
  options.threads = absl::GetFlag(FLAGS_threads);

  Json out = {{"model", model}, {"dataset", dataset_ref}};
  if (dataset.skipped_images > 0) out["skipped_images"] = dataset.skipped_images;
  engine::EvalResult r;
  std::optional<engine::TrialResult> trial;
  if (config_path.empty()) {
    ASSIGN_OR_RETURN(r, engine::Evaluate(graph, dataset, options));
  } else {
    ASSIGN_OR_RETURN(quant::QuantConfig config,
                     quant::ReadQuantConfigFile(config_path));
    engine::TrialInputs in;
    in.graph = &graph;
    in.eval = &dataset;
    in.config = &config;
    if (const std::string profile = absl::GetFlag(FLAGS_hardware_profile); !profile.empty()) {
      ASSIGN_OR_RETURN(in.profile, quant::LoadHardwareProfile(profile));
    }
    std::string calibration_ref;
    std::optional<engine::Dataset> calibration;
    if (std::optional<worker::SplitLoad> split = worker::CalibrationSplit(data.ref, channels)) {
      calibration_ref = split->reference;
      ASSIGN_OR_RETURN(calibration, worker::LoadSplit(*split, load));
      in.calibration = &*calibration;
    }
    absl::StatusOr<engine::TrialResult> t =
        true_int8 ? engine::int8::RunInt8Trial(in, options) : engine::RunTrial(in, options);
    if (!t.ok() && in.calibration == nullptr) {
      return Annotate(t.status(), "give --calibration_data REF or --train_data REF");
    }
    RETURN_IF_ERROR(t.status());
    trial = *std::move(t);
    r = trial->eval;
    out["config"] = config_path;
    out["config_hash"] = quant::ConfigHash(config);
    if (in.calibration != nullptr) out["calibration_dataset"] = calibration_ref;
    if (true_int8) out["path"] = "int8";
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
  if (true_int8) absl::PrintF("path          int8 (oneDNN int8 primitives)\n");
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
      return UsageError(absl::StrCat(
          "--input ", arg, ": the tensor has no name; write --input NAME=", path));
    }
    if (!inputs.emplace(name, std::move(t)).second) {
      return UsageError(absl::StrCat("input '", name, "' is given twice"));
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
  if (DatasetFlagsGiven()) {
    ASSIGN_OR_RETURN(DatasetFlags flags, DatasetFlagsFromCommandLine(DatasetUse::kTraining,
                                                                     /*data_is_local=*/true));
    ASSIGN_OR_RETURN(data, worker::LoadSplit(*worker::TrainSplit(flags.ref,
                                                                 worker::ModelInputChannels(graph),
                                                                 flags.train_limit),
                                             DatasetLoadOptions(absl::GetFlag(FLAGS_threads))));
    RETURN_IF_ERROR(engine::CheckFitsInput(*data, graph.inputs[0].shape, graph.inputs[0].name));
    sample = data->sample_shape();
  }
  ASSIGN_OR_RETURN(std::vector<quant::LayerInfo> layers, engine::InspectLayers(graph, sample));
  std::map<std::string, quant::ActivationStats> stats;
  if (data) {
    engine::CalibrationRunOptions options;
    options.threads = absl::GetFlag(FLAGS_threads);
    options.histograms = false;
    ASSIGN_OR_RETURN(stats, engine::CalibrateActivations(graph, *data, options));
  }
  Json out = Json::array();
  int64_t total_macs = 0, total_weights = 0;
  for (const quant::LayerInfo& l : layers) {
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
  const std::string format = absl::GetFlag(FLAGS_format);
  if (absl::GetFlag(FLAGS_json) || format == "json") {
    absl::PrintF("%s\n", Json{{"model", model}, {"layers", out}}.dump());
    return absl::OkStatus();
  }
  if (format == "csv" || format == "jsonl") {
    Listing listing({{"name"}, {"class"}, {"weight_shape"}, {"input_shape"}, {"output_shape"},
                     {"macs"}, {"weights"}, {"output_non_negative"}, {"input_range"},
                     {"output_range"}});
    for (const Json& j : out) {
      listing.AddRow({Cell(j["name"]), Cell(j["class"]), Cell(j["weight_shape"]),
                      Cell(j["input_shape"]), Cell(j["output_shape"]), Cell(j["macs"]),
                      Cell(j["weights"]), Cell(j["output_non_negative"]), Cell(j.value("input_range", Json())),
                      Cell(j.value("output_range", Json()))});
    }
    listing.Print(format, stdout);
    return absl::OkStatus();
  }
  absl::PrintF("%-18s %-5s %-16s %-16s %-16s %10s %8s", "layer", "class", "weights", "input",
               "output", "MACs", "params");
  if (data) absl::PrintF("  %-22s %-22s", "input range", "output range");
  absl::PrintF("\n");
  for (size_t i = 0; i < layers.size(); ++i) {
    const quant::LayerInfo& l = layers[i];
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

namespace {

absl::StatusOr<engine::TrainOptions> TrainOptionsFromFlags(double default_lr) {
  engine::TrainOptions o;
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.batch = absl::GetFlag(FLAGS_train_batch);
  o.learning_rate = absl::GetFlag(FLAGS_lr) > 0 ? absl::GetFlag(FLAGS_lr) : default_lr;
  o.momentum = absl::GetFlag(FLAGS_momentum);
  o.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.lr_decay = absl::GetFlag(FLAGS_lr_decay);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.threads = absl::GetFlag(FLAGS_threads);
  if (o.epochs < 1) return UsageError("--epochs must be >= 1");
  if (o.batch < 1) return UsageError("--train_batch must be >= 1");
  if (!(o.momentum >= 0 && o.momentum < 1)) {
    return UsageError("--momentum must be in [0, 1)");
  }
  if (o.weight_decay < 0) return UsageError("--weight_decay must be >= 0");
  if (o.lr_decay <= 0) return UsageError("--lr_decay must be > 0");
  o.on_epoch = [](const engine::EpochReport& r) {
    absl::PrintF("epoch %3d  steps %6d  loss %.4f  train_top1 %.4f", r.epoch, r.steps, r.mean_loss,
                 r.train_top1);
    if (r.validation_top1 >= 0) {
      absl::PrintF("  eval_top1 %.4f  eval_loss %.4f", r.validation_top1, r.validation_loss);
    }
    absl::PrintF("  %.0f images/s\n", r.images_per_second);
    std::fflush(stdout);
  };
  return o;
}

}  // namespace

absl::Status TrainCommand() {
  const std::string arch = absl::GetFlag(FLAGS_arch);
  const std::string out = absl::GetFlag(FLAGS_out);
  RETURN_IF_ERROR(RequireFlag("out", out));
  RETURN_IF_ERROR(CheckThreads());
  ASSIGN_OR_RETURN(DatasetFlags data, DatasetFlagsFromCommandLine(DatasetUse::kTraining,
                                                                  /*data_is_local=*/true));
  const engine::LoadOptions load = DatasetLoadOptions(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(engine::Dataset train,
                   worker::LoadSplit(*worker::TrainSplit(data.ref, data.channels,
                                                         data.train_limit),
                                     load));
  std::optional<engine::Dataset> eval;
  if (!data.ref.eval().empty()) {
    ASSIGN_OR_RETURN(eval, worker::LoadSplit(worker::EvalSplit(data.ref, data.channels), load));
  }

  onnx::ModelProto model;
  if (arch == "linear") {
    engine::zoo::RidgeOptions options;
    options.threads = absl::GetFlag(FLAGS_threads);
    ASSIGN_OR_RETURN(model, engine::zoo::FitRidgeClassifier(train, options));
  } else {
    const std::vector<std::string> names = engine::zoo::ArchitectureNames();
    if (std::find(names.begin(), names.end(), arch) == names.end()) {
      return UsageError(absl::StrCat("--arch ", arch, ": unknown architecture (",
                                                     "linear, ", absl::StrJoin(names, ", "), ")"));
    }
    engine::zoo::ArchOptions arch_options;
    const engine::Shape sample = train.sample_shape();
    if (sample.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--arch ", arch, " needs image samples [C,H,W]; ", train.reference, " has ",
          engine::ShapeToString(sample)));
    }
    arch_options.channels = sample[0];
    arch_options.height = sample[1];
    arch_options.width = sample[2];
    arch_options.num_classes = std::max(train.num_classes, 2);
    arch_options.seed = absl::GetFlag(FLAGS_seed);
    ASSIGN_OR_RETURN(onnx::ModelProto initial, engine::zoo::BuildArchitecture(arch, arch_options));
    ASSIGN_OR_RETURN(engine::TrainOptions options, TrainOptionsFromFlags(0.01));
    if (eval) options.validation = &*eval;
    absl::PrintF("training %s on %d samples of %s (batch %d, lr %g, momentum %g, wd %g)\n", arch,
                 train.size(), train.reference, options.batch, options.learning_rate,
                 options.momentum, options.weight_decay);
    ASSIGN_OR_RETURN(model, engine::Train(initial, train, options));
  }
  RETURN_IF_ERROR(engine::SaveModel(model, out));
  absl::PrintF("wrote %s\n", out);
  if (eval) {
    // Re-import the written file: what users get is what is scored.
    ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxFile(out));
    engine::EvalOptions options;
    options.threads = absl::GetFlag(FLAGS_threads);
    ASSIGN_OR_RETURN(engine::EvalResult r, engine::Evaluate(graph, *eval, options));
    absl::PrintF("%s on %s: top1 %.4f  top5 %.4f  loss %.4f\n", out, eval->reference, r.top1,
                 r.top5, r.loss);
  }
  return absl::OkStatus();
}

absl::Status FinetuneCommand() {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  const std::string config_path = absl::GetFlag(FLAGS_config);
  RETURN_IF_ERROR(RequireFlag("model", model_path));
  RETURN_IF_ERROR(RequireFlag("config", config_path));
  RETURN_IF_ERROR(CheckThreads());
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  if (steps < 1) return UsageError("--steps must be >= 1");
  ASSIGN_OR_RETURN(DatasetFlags data, DatasetFlagsFromCommandLine(DatasetUse::kTraining,
                                                                  /*data_is_local=*/true));
  if (data.ref.eval().empty()) {
    return UsageError("finetune needs an evaluation split: --dataset idx:DIR or "
                                      "--eval_data REF");
  }
  ASSIGN_OR_RETURN(quant::QuantConfig config,
                   quant::ReadQuantConfigFile(config_path));
  ASSIGN_OR_RETURN(onnx::ModelProto model, engine::ReadOnnxModel(model_path));
  ASSIGN_OR_RETURN(engine::Graph graph, engine::ImportOnnxModel(model, {}, model_path));
  const int channels = worker::ModelInputChannels(graph);
  const engine::LoadOptions load = DatasetLoadOptions(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(engine::Dataset train,
                   worker::LoadSplit(*worker::TrainSplit(data.ref, channels, data.train_limit),
                                     load));
  ASSIGN_OR_RETURN(engine::Dataset eval,
                   worker::LoadSplit(worker::EvalSplit(data.ref, channels), load));
  std::optional<engine::Dataset> calibration;
  if (std::optional<worker::SplitLoad> split = worker::CalibrationSplit(data.ref, channels)) {
    ASSIGN_OR_RETURN(calibration, worker::LoadSplit(*split, load));
  }
  for (const engine::Node& n : graph.nodes) {
    if (n.op == engine::OpKind::kBatchNorm) {
      absl::PrintF("note: a BatchNormalization ('%s') after a Conv with quantized weights is "
                   "folded into it and frozen (running statistics) while fine-tuning, as "
                   "evaluation folds it\n", n.name);
      break;
    }
  }
  engine::EvalOptions eval_options;
  eval_options.threads = absl::GetFlag(FLAGS_threads);
  engine::TrialInputs in;
  in.eval = &eval;
  in.calibration = calibration ? &*calibration : nullptr;
  in.config = &config;
  ASSIGN_OR_RETURN(engine::TrainOptions options, TrainOptionsFromFlags(0.001));
  options.max_steps = steps;
  ASSIGN_OR_RETURN(engine::FinetuneResult tuned,
                   engine::FinetuneTrial(model, in, train, options, eval_options));
  const engine::TrialResult& before = tuned.before;
  const engine::TrialResult& after = tuned.after;
  absl::PrintF("quantized before fine-tuning: top1 %.4f  loss %.4f\n", before.eval.top1,
               before.eval.loss);
  absl::PrintF("quantized after %d steps:  top1 %.4f  loss %.4f\n", steps, after.eval.top1,
               after.eval.loss);
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    RETURN_IF_ERROR(engine::SaveModel(tuned.tuned, out));
    absl::PrintF("wrote the fine-tuned fp32 shadow model to %s\n", out);
  }
  if (absl::GetFlag(FLAGS_json)) {
    Json j = {{"model", model_path}, {"config", config_path},
              {"config_hash", quant::ConfigHash(config)}, {"steps", steps},
              {"top1_before", before.eval.top1}, {"top1", after.eval.top1},
              {"loss_before", before.eval.loss}, {"loss", after.eval.loss}};
    AddTrialJson(after, &j);
    absl::PrintF("%s\n", j.dump());
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
