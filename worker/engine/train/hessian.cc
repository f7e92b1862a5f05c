#include "worker/engine/train/hessian.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "quant/plan.h"
#include "worker/engine/trial.h"

namespace bitsweep::engine {
namespace {

// The first `batches` batches of `data`, read once, and their labels.
struct Samples {
  int64_t batches = 0;
  std::vector<float> images;
  std::vector<int> labels;
};

absl::StatusOr<Samples> ReadBatches(const TrainingNetwork& net, const Dataset& data,
                                    int64_t samples) {
  const int64_t batch = net.batch();
  const int64_t wanted = samples > 0 ? std::min(samples, data.size()) : data.size();
  Samples out;
  out.batches = wanted / batch;
  if (out.batches < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sensitivities need at least one batch of ", batch, " samples, the data has ",
        data.size(), (samples > 0 ? absl::StrCat(" (", samples, " asked for)") : "")));
  }
  const int64_t count = out.batches * batch;
  int64_t sample_size = 1;
  for (int64_t d : data.sample_shape()) sample_size *= d;
  out.images.resize(static_cast<size_t>(count * sample_size));
  RETURN_IF_ERROR(data.ReadSamples(0, count, out.images.data()));
  out.labels.assign(data.labels.begin(), data.labels.begin() + count);
  return out;
}

const float* BatchImages(const Samples& s, int64_t b) {
  return s.images.data() + static_cast<size_t>(b) * (s.images.size() / s.batches);
}

// Mean cross-entropy over the samples in eval mode (inference's BatchNormalization and dropout).
absl::StatusOr<double> EvalLoss(TrainingNetwork& net, const Samples& s, const StopFn& stop) {
  double total = 0;
  for (int64_t b = 0; b < s.batches; ++b) {
    RETURN_IF_ERROR(CheckStop(stop, "sensitivities"));
    RETURN_IF_ERROR(net.Forward(BatchImages(s, b), {.training = false}));
    total += SoftmaxCrossEntropy(net.logits(), s.labels.data() + b * net.batch(), net.batch(),
                                 net.num_classes(), nullptr, nullptr);
  }
  return total / static_cast<double>(s.batches);
}

// Welford's running mean and variance.
struct Running {
  int64_t n = 0;
  double mean = 0, m2 = 0;
  void Add(double x) {
    ++n;
    const double d = x - mean;
    mean += d / static_cast<double>(n);
    m2 += d * (x - mean);
  }
  double StandardError() const {
    return n < 2 ? 0.0 : std::sqrt(m2 / static_cast<double>(n - 1) / static_cast<double>(n));
  }
};

}  // namespace

absl::StatusOr<std::vector<WeightTrace>> HutchinsonWeightTraces(TrainingNetwork& net,
                                                                const Dataset& data,
                                                                const HutchinsonOptions& options) {
  if (options.probes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hutchinson probes must be >= 1, got ", options.probes));
  }
  if (!(options.relative_step > 0) || !std::isfinite(options.relative_step)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Hutchinson relative_step must be a positive number, got ", options.relative_step));
  }
  ASSIGN_OR_RETURN(Samples samples, ReadBatches(net, data, options.samples));

  std::vector<Parameter*> weights;
  double sum_squares = 0;
  int64_t total = 0;
  for (Parameter& p : net.parameters()) {
    if (p.role != ParameterRole::kWeight) continue;
    weights.push_back(&p);
    for (float w : p.value.floats()) sum_squares += static_cast<double>(w) * w;
    total += static_cast<int64_t>(p.value.floats().size());
  }
  std::vector<WeightTrace> out;
  if (weights.empty()) return out;
  // The step: relative_step x the RMS of the probed weights (one layer's, or all of them).
  auto step_of = [&](double squares, int64_t count) {
    const double rms = count > 0 ? std::sqrt(squares / static_cast<double>(count)) : 0.0;
    return options.relative_step * (rms > 0 ? rms : 1.0);
  };

  std::vector<std::vector<float>> original, probe;
  std::vector<std::vector<double>> plus;  // g(w + eps v), summed over batches
  for (Parameter* p : weights) {
    original.push_back(p->value.floats());
    probe.emplace_back(p->value.floats().size());
    plus.emplace_back(p->value.floats().size());
  }
  std::vector<Running> estimates(weights.size());
  SplitMix64 rng(options.seed);
  bool first_pass = true;

  // Sets the weights to w + step * v and sums the gradients over the batches into `grads`
  // (or, with `subtract`, subtracts them).
  auto gradients = [&](double step, bool subtract) -> absl::Status {
    for (size_t l = 0; l < weights.size(); ++l) {
      std::vector<float>& value = weights[l]->value.floats();
      for (size_t i = 0; i < value.size(); ++i) {
        value[i] = static_cast<float>(original[l][i] + step * probe[l][i]);
      }
    }
    for (int64_t b = 0; b < samples.batches; ++b) {
      RETURN_IF_ERROR(CheckStop(options.stop, "Hessian traces"));
      RETURN_IF_ERROR(net.ForwardBackward(BatchImages(samples, b),
                                          samples.labels.data() + b * net.batch(),
                                          {.update_running_stats = false,
                                           .new_dropout_masks = first_pass})
                          .status());
      first_pass = false;
      for (size_t l = 0; l < weights.size(); ++l) {
        const std::vector<float>& g = weights[l]->grad.floats();
        std::vector<double>& acc = plus[l];
        if (subtract) {
          for (size_t i = 0; i < g.size(); ++i) acc[i] -= g[i];
        } else {
          for (size_t i = 0; i < g.size(); ++i) acc[i] += g[i];
        }
      }
    }
    return absl::OkStatus();
  };
  auto restore = [&] {
    for (size_t l = 0; l < weights.size(); ++l) weights[l]->value.floats() = original[l];
  };

  // One probe: v drawn on the tensors in [first, last) (zero elsewhere), the estimate of each.
  auto probe_once = [&](size_t first, size_t last, double eps) -> absl::Status {
    for (size_t l = 0; l < probe.size(); ++l) {
      std::vector<float>& v = probe[l];
      if (l < first || l >= last) {
        std::fill(v.begin(), v.end(), 0.0f);
        continue;
      }
      for (size_t i = 0; i < v.size(); i += 64) {
        uint64_t bits = rng.Next();
        for (size_t j = i; j < std::min(v.size(), i + 64); ++j, bits >>= 1) {
          v[j] = (bits & 1) ? 1.0f : -1.0f;
        }
      }
    }
    for (std::vector<double>& acc : plus) std::fill(acc.begin(), acc.end(), 0.0);
    absl::Status status = gradients(eps, /*subtract=*/false);
    if (status.ok()) status = gradients(-eps, /*subtract=*/true);
    restore();
    RETURN_IF_ERROR(status);
    // plus now holds the batch sum of g(w + eps v) - g(w - eps v); the loss is the batch mean.
    const double scale = 1.0 / (2.0 * eps * static_cast<double>(samples.batches));
    for (size_t l = first; l < last; ++l) {
      double q = 0;
      for (size_t i = 0; i < probe[l].size(); ++i) q += probe[l][i] * plus[l][i];
      estimates[l].Add(q * scale);
    }
    return absl::OkStatus();
  };
  if (options.per_layer) {
    for (size_t l = 0; l < weights.size(); ++l) {
      double squares = 0;
      for (float w : original[l]) squares += static_cast<double>(w) * w;
      const double eps = step_of(squares, static_cast<int64_t>(original[l].size()));
      for (int k = 0; k < options.probes; ++k) RETURN_IF_ERROR(probe_once(l, l + 1, eps));
    }
  } else {
    const double eps = step_of(sum_squares, total);
    for (int k = 0; k < options.probes; ++k) {
      RETURN_IF_ERROR(probe_once(0, weights.size(), eps));
    }
  }
  for (size_t l = 0; l < weights.size(); ++l) {
    out.push_back({weights[l]->node, weights[l]->name,
                   static_cast<int64_t>(original[l].size()), estimates[l].mean,
                   estimates[l].StandardError()});
  }
  return out;
}

absl::StatusOr<std::vector<LayerSensitivity>> LayerSensitivities(
    const onnx::ModelProto& model, const Graph& graph, const Dataset& data,
    const std::vector<quant::LayerInfo>& layers, const ActivationStatsMap& stats,
    const quant::QuantConfig& config, const SensitivityOptions& options) {
  if (options.batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sensitivity batch must be >= 1, got ", options.batch));
  }
  // The hooks read `plan` at every forward pass: empty for the fp32 passes, one layer's
  // quantizers for the measured ones.
  quant::QuantPlan plan;
  TrainingNetworkOptions net_options;
  net_options.batch = std::min<int64_t>(
      options.batch, options.hutchinson.samples > 0
                         ? std::min(options.hutchinson.samples, data.size())
                         : data.size());
  net_options.batch = std::max<int64_t>(net_options.batch, 1);
  net_options.sample_shape = data.sample_shape();
  net_options.threads = options.threads;
  net_options.quant = HooksFromPlan(plan, graph);
  ASSIGN_OR_RETURN(std::unique_ptr<TrainingNetwork> net,
                   TrainingNetwork::Create(model, net_options));
  const StopFn& stop = options.hutchinson.stop;
  ASSIGN_OR_RETURN(Samples samples, ReadBatches(*net, data, options.hutchinson.samples));
  ASSIGN_OR_RETURN(const double base_loss, EvalLoss(*net, samples, stop));
  ASSIGN_OR_RETURN(std::vector<WeightTrace> traces,
                   HutchinsonWeightTraces(*net, data, options.hutchinson));

  const quant::NumberFormat fp32;
  // Loss increase with layer `index` alone quantized as `f` (weights or activations).
  auto measure = [&](size_t index, const quant::LayerFormats& f) -> absl::StatusOr<double> {
    std::vector<quant::LayerFormats> formats(layers.size(), {fp32, fp32, fp32});
    formats[index] = f;
    ASSIGN_OR_RETURN(plan, quant::BuildQuantPlan(layers, formats, stats, config));
    absl::StatusOr<double> loss = EvalLoss(*net, samples, stop);
    plan.clear();
    if (!loss.ok()) return loss.status();
    return *loss - base_loss;
  };

  std::vector<LayerSensitivity> out;
  for (size_t index = 0; index < layers.size(); ++index) {
    const quant::LayerInfo& info = layers[index];
    LayerSensitivity s;
    s.layer = info.name;
    auto trace = std::find_if(traces.begin(), traces.end(),
                              [&](const WeightTrace& t) { return t.layer == info.name; });
    if (trace == traces.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", info.name, " has no trainable weight parameter for its Hessian trace"));
    }
    s.weight_count = trace->count;
    s.trace = trace->trace;
    s.trace_standard_error = trace->standard_error;
    const Parameter* weight = net->FindParameter(trace->parameter);
    for (const quant::NumberFormat& f : options.weight_formats) {
      FormatSensitivity fs{f};
      // Q(W) as the fine-tuning hook computes it, on a copy.
      plan[info.name].weights = f;
      plan[info.name].rounding = config.rounding;
      plan[info.name].seed = config.seed;
      std::vector<float> q = weight->value.floats();
      net_options.quant.weights(info.name, q.data(), static_cast<int64_t>(q.size()));
      plan.clear();
      for (size_t i = 0; i < q.size(); ++i) {
        const double d = static_cast<double>(q[i]) - weight->value.floats()[i];
        fs.squared_error += d * d;
      }
      fs.loss_increase =
          0.5 * s.trace / static_cast<double>(std::max<int64_t>(1, s.weight_count)) *
          fs.squared_error;
      if (options.measure_weights) {
        absl::StatusOr<double> measured = measure(index, {f, fp32, fp32});
        if (!measured.ok()) {
          return Annotate(measured.status(),
                          absl::StrCat("layer ", info.name, " weights ", quant::FormatToString(f)));
        }
        fs.measured_loss_increase = *measured;
      }
      s.weights.push_back(fs);
    }
    for (const quant::NumberFormat& f : options.activation_formats) {
      absl::StatusOr<double> measured = measure(index, {fp32, f, f});
      if (!measured.ok()) {
        return Annotate(measured.status(), absl::StrCat("layer ", info.name, " activations ",
                                                        quant::FormatToString(f)));
      }
      FormatSensitivity fs{f};
      fs.loss_increase = fs.measured_loss_increase = *measured;
      s.activations.push_back(fs);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace bitsweep::engine
