#include "worker/trial_executor.h"


#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "worker/dataset_settings.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "quant/cost_model.h"
#include "quant/format.h"
#include "worker/engine/train/hessian.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/trial.h"

namespace bitsweep::worker {
namespace {



constexpr int64_t kDefaultBatch = 256;
// Fine-tuning defaults: the same as `bitsweep finetune`.
constexpr double kDefaultLearningRate = 0.001;
constexpr int64_t kDefaultFinetuneBatch = 64;
constexpr double kDefaultMomentum = 0.9;
constexpr double kDefaultWeightDecay = 5e-4;
constexpr uint64_t kDefaultSeed = 1;

absl::Status CheckCancelled(const std::atomic<bool>* cancelled) {
  if (cancelled != nullptr && cancelled->load()) {
    return absl::CancelledError("trial cancelled");
  }
  return absl::OkStatus();
}

std::string LayerClassName(quant::LayerClass c) {
  return c == quant::LayerClass::kConv ? "conv" : "fc";
}

v1::QuantParams ToQuantParams(const quant::Quantizer& q) {
  v1::QuantParams p;
  p.set_format(quant::FormatToString(q.format));
  p.set_bits(q.format.bits);
  switch (q.format.kind) {
    case quant::FormatKind::kFixed:
    case quant::FormatKind::kUfixed:
      p.set_fractional_bits(q.fractional_bits);
      break;
    case quant::FormatKind::kPow2:
      p.set_max_exponent(q.max_exponent);
      break;
    case quant::FormatKind::kInt:
      for (float s : q.scale) p.add_scale(s);
      for (int32_t z : q.zero_point) p.add_zero_point(z);
      break;
    default:
      break;
  }
  p.set_description(engine::DescribeQuantizer(q));
  return p;
}

v1::ActivationRange ToRange(const quant::TensorStats& stats) {
  v1::ActivationRange r;
  r.set_min(stats.min);
  r.set_max(stats.max);
  r.set_count(stats.count);
  return r;
}

// TrialSpec's sensitivity formats (INVALID_ARGUMENT naming the bad one); the probes' seed is the
// config's (0: 1).
absl::StatusOr<engine::SensitivityOptions> SensitivityOptionsOf(const v1::TrialSpec& spec,
                                                               const quant::QuantConfig& config) {
  engine::SensitivityOptions options;
  options.hutchinson.seed = config.seed > 0 ? config.seed : 1;
  auto parse = [](const auto& texts, const char* field,
                  std::vector<quant::NumberFormat>* out) -> absl::Status {
    for (int i = 0; i < texts.size(); ++i) {
      absl::StatusOr<quant::NumberFormat> f = quant::ParseFormat(texts[i]);
      if (!f.ok()) return Annotate(f.status(), absl::StrCat("spec.", field, "[", i, "]"));
      out->push_back(*f);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(parse(spec.sensitivity_weight_formats(), "sensitivity_weight_formats",
                        &options.weight_formats));
  RETURN_IF_ERROR(parse(spec.sensitivity_activation_formats(), "sensitivity_activation_formats",
                        &options.activation_formats));
  return options;
}

v1::FormatSensitivity ToSensitivity(const engine::FormatSensitivity& f) {
  v1::FormatSensitivity out;
  out.set_format(quant::FormatToString(f.format));
  out.set_squared_error(f.squared_error);
  out.set_loss_increase(f.loss_increase);
  out.set_measured_loss_increase(f.measured_loss_increase);
  return out;
}

void FillResult(const engine::TrialResult& trial, v1::TrialResult* out) {
  const engine::EvalResult& eval = trial.eval;
  const quant::CostReport& cost = trial.cost;
  out->set_top1(eval.top1);
  out->set_top5(eval.top5);
  out->set_loss(eval.loss);
  out->set_samples(eval.samples);
  out->set_size_bits(cost.total.weight_bits);
  out->set_peak_activation_bits(cost.peak_activation_bits);
  out->set_activation_bits(cost.total.activation_bits);
  out->set_bops(cost.total.bops);
  out->set_macs(cost.total.macs);
  out->set_energy_pj(cost.total.energy_pj);
  out->set_hardware_profile(cost.profile_name);
  out->set_images_per_second(eval.images_per_second);
  out->set_engine_version(kEngineVersion);
  for (size_t i = 0; i < trial.layers.size(); ++i) {
    const quant::LayerInfo& info = trial.layers[i];
    v1::LayerResult* layer = out->add_layers();
    layer->set_name(info.name);
    layer->set_layer_class(LayerClassName(info.layer_class));
    // Weight quantizers are built inside the network from the weights it runs (after BatchNorm
    // folding); the plan only knows their format, which is all there is for fp32 weights.
    if (auto w = eval.weight_quantizers.find(info.name); w != eval.weight_quantizers.end()) {
      *layer->mutable_weights() = ToQuantParams(w->second);
    } else {
      quant::Quantizer weights;
      if (auto p = trial.plan.find(info.name); p != trial.plan.end()) {
        weights.format = p->second.weights;
      } else if (i < trial.formats.size()) {
        weights.format = trial.formats[i].weights;
      }
      *layer->mutable_weights() = ToQuantParams(weights);
    }
    if (auto p = trial.plan.find(info.name); p != trial.plan.end()) {
      *layer->mutable_inputs() = ToQuantParams(p->second.inputs);
      *layer->mutable_outputs() = ToQuantParams(p->second.outputs);
    } else {
      *layer->mutable_inputs() = ToQuantParams(quant::Quantizer{});
      *layer->mutable_outputs() = ToQuantParams(quant::Quantizer{});
    }
    layer->set_macs(info.macs);
    layer->set_weight_count(info.weight_count);
    layer->set_fan_in(info.fan_in);
    layer->set_output_channels(info.output_channels);
    if (i < cost.layers.size()) {
      const quant::LayerCost& c = cost.layers[i];
      layer->set_weight_bits(c.weight_bits);
      layer->set_activation_bits(c.activation_bits);
      layer->set_bops(c.bops);
      layer->set_energy_pj(c.energy_pj);
    }
  }
}

}  // namespace

TrialExecutor::TrialExecutor(TrialExecutorOptions options) : options_(std::move(options)) {}

int64_t TrialExecutor::dataset_loads() const {
  absl::MutexLock lock(&mu_);
  return dataset_loads_;
}

int64_t TrialExecutor::images_decoded() const {
  absl::MutexLock lock(&mu_);
  return images_decoded_;
}

int64_t TrialExecutor::model_imports() const {
  absl::MutexLock lock(&mu_);
  return model_imports_;
}

template <typename T, typename Load>
absl::StatusOr<std::shared_ptr<const T>> TrialExecutor::GetOrLoad(
    std::list<std::pair<std::string, std::shared_ptr<Slot<T>>>>* cache, int max_entries,
    const std::string& key, int64_t* loads, Load load) {
  std::shared_ptr<Slot<T>> slot;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = cache->begin(); it != cache->end(); ++it) {
      if (it->first == key) {
        slot = it->second;
        cache->splice(cache->begin(), *cache, it);  // most recently used first
        break;
      }
    }
    if (slot == nullptr) {
      slot = std::make_shared<Slot<T>>();
      cache->emplace_front(key, slot);
      while (static_cast<int>(cache->size()) > std::max(1, max_entries)) cache->pop_back();
    }
  }
  // Loading holds only the slot's lock: other keys proceed, the same key waits for this load.
  absl::MutexLock slot_lock(&slot->mu);
  if (slot->value != nullptr) return slot->value;
  absl::StatusOr<T> loaded = load();
  if (!loaded.ok()) {
    // Do not keep a failed slot: the next trial tries again (a file may have appeared).
    absl::MutexLock lock(&mu_);
    cache->remove_if([&](const auto& entry) { return entry.second == slot; });
    return loaded.status();
  }
  slot->value = std::make_shared<const T>(*std::move(loaded));
  {
    absl::MutexLock lock(&mu_);
    ++*loads;
  }
  return slot->value;
}

absl::StatusOr<std::shared_ptr<const engine::Dataset>> TrialExecutor::GetDataset(
    const SplitLoad& split, int threads, std::string* cache_key) {
  const std::string key = split.Key();
  if (cache_key != nullptr) *cache_key = key;
  int64_t* loads;
  {
    absl::MutexLock lock(&mu_);
    loads = &dataset_loads_;
  }
  engine::LoadOptions load_options;
  load_options.threads = threads;
  load_options.cache_dir = options_.dataset_cache_dir;
  return GetOrLoad<engine::Dataset>(&datasets_, options_.max_cached_datasets, key, loads,
                                    [&]() -> absl::StatusOr<engine::Dataset> {
                                      absl::StatusOr<engine::Dataset> ds =
                                          LoadSplit(split, load_options);
                                      if (ds.ok()) {
                                        absl::MutexLock lock(&mu_);
                                        images_decoded_ += ds->decoded_images;
                                      }
                                      return ds;
                                    });
}

absl::StatusOr<std::shared_ptr<const TrialExecutor::LoadedModel>> TrialExecutor::GetModel(
    const ModelRef& model) {
  if (model.hash.empty()) return absl::InvalidArgumentError("the trial names no model hash");
  int64_t* imports;
  {
    absl::MutexLock lock(&mu_);
    imports = &model_imports_;
  }
  return GetOrLoad<LoadedModel>(
      &models_, options_.max_cached_models, model.hash, imports,
      [&]() -> absl::StatusOr<LoadedModel> {
        LoadedModel loaded;
        ASSIGN_OR_RETURN(loaded.proto, engine::ReadOnnxModel(model.path));
        ASSIGN_OR_RETURN(loaded.graph, engine::ImportOnnxModel(
                                           loaded.proto, {}, absl::StrCat("model ", model.hash)));
        return loaded;
      });
}

absl::StatusOr<v1::TrialResult> TrialExecutor::Execute(const ModelRef& model,
                                                       const v1::EvalSettings& settings,
                                                       const v1::TrialSpec& spec,
                                                       const ExecuteOptions& options) {
  const absl::Time start = absl::Now();
  const int threads = options.threads > 0 ? options.threads : options_.threads;
  const v1::DatasetRef& dataset = settings.dataset();

  // Settings and config first: their errors are permanent and cost nothing to find.
  if (settings.batch() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("settings.batch must be >= 0 (0 means 256), got ", settings.batch()));
  }
  RETURN_IF_ERROR(CheckDatasetRef(dataset));
  if (dataset.eval().empty()) {
    return absl::InvalidArgumentError("settings.dataset.eval is empty: no evaluation split");
  }
  const v1::FinetuneSpec& finetune = spec.finetune();
  if (finetune.steps() < 0 || finetune.batch() < 0 || finetune.learning_rate() < 0 ||
      finetune.momentum() < 0 || finetune.weight_decay() < 0) {
    return absl::InvalidArgumentError(
        "spec.finetune: steps, learning_rate, batch, momentum and weight_decay must be >= 0");
  }
  if (finetune.steps() > 0 && dataset.train().empty()) {
    return absl::InvalidArgumentError(
        "spec.finetune.steps > 0 needs a training split: settings.dataset.train is empty");
  }
  if (spec.collect_ranges() && dataset.train().empty() && dataset.calibration().empty()) {
    return absl::InvalidArgumentError(
        "spec.collect_ranges needs a calibration split: settings.dataset.train and "
        "settings.dataset.calibration are empty");
  }
  if (spec.collect_sensitivities() && dataset.train().empty() && dataset.calibration().empty()) {
    return absl::InvalidArgumentError(
        "spec.collect_sensitivities needs a calibration split: settings.dataset.train and "
        "settings.dataset.calibration are empty");
  }
  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(spec.config_json());
  if (!config.ok()) return Annotate(config.status(), "spec.config_json");
  ASSIGN_OR_RETURN(const engine::SensitivityOptions sensitivity_options,
                   SensitivityOptionsOf(spec, *config));
  ASSIGN_OR_RETURN(const quant::HardwareProfile profile,
                   quant::SettingsHardwareProfile(settings.hardware_profile_json()));

  ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> loaded, GetModel(model));
  RETURN_IF_ERROR(CheckCancelled(options.cancelled));

  // Image datasets take the model input's channel count.
  const int channels = ModelInputChannels(loaded->graph);
  absl::StatusOr<std::shared_ptr<const engine::Dataset>> eval =
      GetDataset(EvalSplit(dataset, channels), threads, nullptr);
  if (!eval.ok()) return Annotate(eval.status(), "settings.dataset.eval");

  // The calibration split (dataset_settings.h): calibration_samples of `calibration` or `train`.
  std::shared_ptr<const engine::Dataset> calibration;
  std::string calibration_key;
  if (std::optional<SplitLoad> split = CalibrationSplit(dataset, channels)) {
    absl::StatusOr<std::shared_ptr<const engine::Dataset>> loaded_calibration =
        GetDataset(*split, threads, &calibration_key);
    if (!loaded_calibration.ok()) {
      return Annotate(loaded_calibration.status(), dataset.calibration().empty()
                                                       ? "settings.dataset.train"
                                                       : "settings.dataset.calibration");
    }
    calibration = *std::move(loaded_calibration);
  }
  RETURN_IF_ERROR(CheckCancelled(options.cancelled));

  engine::TrialInputs inputs;
  inputs.graph = &loaded->graph;
  inputs.eval = eval->get();
  inputs.calibration = calibration.get();
  inputs.config = &*config;
  inputs.profile = profile;
  inputs.calibration_cache = &calibration_cache_;
  inputs.model_key = model.hash;
  inputs.calibration_key = calibration_key;
  // The engine polls it before every batch (calibration, fine-tuning and evaluation).
  engine::StopFn stop;
  if (options.cancelled != nullptr) {
    stop = [cancelled = options.cancelled] { return cancelled->load(); };
  }
  engine::EvalOptions eval_options;
  eval_options.batch = settings.batch() > 0 ? settings.batch() : kDefaultBatch;
  eval_options.threads = threads;
  eval_options.stop = stop;

  v1::TrialResult result;
  if (finetune.steps() > 0) {
    absl::StatusOr<std::shared_ptr<const engine::Dataset>> train =
        GetDataset(*TrainSplit(dataset, channels), threads, nullptr);
    if (!train.ok()) return Annotate(train.status(), "settings.dataset.train");
    RETURN_IF_ERROR(CheckCancelled(options.cancelled));
    engine::TrainOptions train_options;
    train_options.max_steps = finetune.steps();
    train_options.learning_rate =
        finetune.learning_rate() > 0 ? finetune.learning_rate() : kDefaultLearningRate;
    train_options.batch = finetune.batch() > 0 ? finetune.batch() : kDefaultFinetuneBatch;
    train_options.momentum = finetune.momentum() > 0 ? finetune.momentum() : kDefaultMomentum;
    train_options.weight_decay =
        finetune.weight_decay() > 0 ? finetune.weight_decay() : kDefaultWeightDecay;
    train_options.seed = finetune.seed() > 0 ? finetune.seed() : kDefaultSeed;
    train_options.threads = threads;
    train_options.stop = stop;
    ASSIGN_OR_RETURN(engine::FinetuneResult tuned,
                     engine::FinetuneTrial(loaded->proto, inputs, **train, train_options,
                                           eval_options));
    FillResult(tuned.after, &result);
    result.set_top1_before_finetune(tuned.before.eval.top1);
  } else {
    ASSIGN_OR_RETURN(engine::TrialResult trial, engine::RunTrial(inputs, eval_options));
    FillResult(trial, &result);
  }
  RETURN_IF_ERROR(CheckCancelled(options.cancelled));

  if (spec.collect_ranges()) {
    // The fp32 network's ranges on the calibration split, shared with the trials' calibration.
    engine::CalibrationRunOptions range_options;
    range_options.threads = threads;
    range_options.histograms = false;
    range_options.stop = stop;
    ASSIGN_OR_RETURN(engine::ActivationStatsMap stats,
                     calibration_cache_.GetOrCompute(loaded->graph, model.hash, *calibration,
                                                     calibration_key, range_options));
    for (v1::LayerResult& layer : *result.mutable_layers()) {
      auto it = stats.find(layer.name());
      if (it == stats.end()) continue;
      *layer.mutable_input_range() = ToRange(it->second.inputs);
      *layer.mutable_output_range() = ToRange(it->second.outputs);
    }
  }
  if (spec.collect_sensitivities()) {
    RETURN_IF_ERROR(CheckCancelled(options.cancelled));
    engine::CalibrationRunOptions stats_options;
    stats_options.threads = threads;
    stats_options.histograms = config->calibration.method != quant::CalibrationMethod::kMax;
    stats_options.stop = stop;
    ASSIGN_OR_RETURN(engine::ActivationStatsMap stats,
                     calibration_cache_.GetOrCompute(loaded->graph, model.hash, *calibration,
                                                     calibration_key, stats_options));
    ASSIGN_OR_RETURN(std::vector<quant::LayerInfo> layers,
                     engine::InspectLayers(loaded->graph, calibration->sample_shape()));
    engine::SensitivityOptions sensitivity = sensitivity_options;
    sensitivity.threads = threads;
    sensitivity.hutchinson.stop = stop;
    ASSIGN_OR_RETURN(std::vector<engine::LayerSensitivity> table,
                     engine::LayerSensitivities(loaded->proto, loaded->graph, *calibration,
                                                layers, stats, *config, sensitivity));
    for (v1::LayerResult& layer : *result.mutable_layers()) {
      auto it = std::find_if(table.begin(), table.end(), [&](const engine::LayerSensitivity& s) {
        return s.layer == layer.name();
      });
      if (it == table.end()) continue;
      layer.set_hessian_trace(it->trace);
      layer.set_hessian_trace_stderr(it->trace_standard_error);
      for (const engine::FormatSensitivity& f : it->weights) {
        *layer.add_weight_sensitivities() = ToSensitivity(f);
      }
      for (const engine::FormatSensitivity& f : it->activations) {
        *layer.add_activation_sensitivities() = ToSensitivity(f);
      }
    }
  }
  result.set_wall_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return result;
}

bool IsPermanentError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return true;
    default:
      return false;
  }
}

v1::TrialError TrialErrorFromStatus(const absl::Status& status) {
  v1::TrialError error;
  error.set_message(status.message().empty() ? absl::StatusCodeToString(status.code())
                                             : std::string(status.message()));
  error.set_permanent(IsPermanentError(status));
  return error;
}

}  // namespace bitsweep::worker
