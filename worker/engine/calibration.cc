#include "worker/engine/calibration.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/network.h"

namespace bitsweep::engine {
namespace {

// Runs `data` through a network whose observer is `observer`, batch by batch. The last batch is
// run at its true size (a second, smaller network) so padding never enters the statistics.
absl::Status RunObserved(const Graph& graph, const Dataset& data, const CalibrationRunOptions& options,
                         const ActivationObserver& observer) {
  const int64_t sample = NumElements(data.sample_shape());
  const int64_t full = std::min<int64_t>(options.batch, data.size());
  std::unique_ptr<Network> net;
  int64_t net_batch = 0;
  std::vector<float> input(static_cast<size_t>(full * sample));
  for (int64_t first = 0; first < data.size(); first += full) {
    RETURN_IF_ERROR(CheckStop(options.stop, "calibration"));
    const int64_t count = std::min(full, data.size() - first);
    if (count != net_batch) {
      net.reset();  // one network (and its activation buffers) alive at a time
      NetworkOptions net_options;
      net_options.threads = options.threads;
      Shape shape = data.shape();
      shape[0] = count;
      net_options.input_shapes[graph.inputs[0].name] = shape;
      net_options.observer = observer;
      ASSIGN_OR_RETURN(net, Network::Create(graph, net_options));
      net_batch = count;
    }
    std::vector<float> out(NumElements(net->outputs()[0].shape));
    RETURN_IF_ERROR(data.ReadSamples(first, count, input.data()));
    RETURN_IF_ERROR(net->RunSingle(input.data(), out.data()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, quant::ActivationStats>> CalibrateActivations(
    const Graph& graph, const Dataset& data, const CalibrationRunOptions& options) {
  if (graph.inputs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(graph.source, ": calibration needs exactly one runtime input"));
  }
  if (data.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("calibration dataset '", data.reference,
                                                   "' is empty"));
  }
  RETURN_IF_ERROR(CheckFitsInput(data, graph.inputs[0].shape, graph.inputs[0].name));
  std::map<std::string, quant::ActivationStats> stats;
  auto slot = [&stats](const std::string& layer, bool is_output) -> quant::TensorStats& {
    quant::ActivationStats& s = stats[layer];
    return is_output ? s.outputs : s.inputs;
  };
  RETURN_IF_ERROR(RunObserved(graph, data, options,
                              [&](const std::string& layer, bool is_output, const float* values,
                                  int64_t count) { slot(layer, is_output).Add(values, count); }));
  if (options.histograms) {
    for (auto& [layer, s] : stats) {
      s.inputs.StartHistogram();
      s.outputs.StartHistogram();
    }
    RETURN_IF_ERROR(RunObserved(
        graph, data, options,
        [&](const std::string& layer, bool is_output, const float* values, int64_t count) {
          slot(layer, is_output).AddToHistogram(values, count);
        }));
  }
  return stats;
}

absl::StatusOr<ActivationStatsMap> CalibrationCache::GetOrCompute(
    const Graph& graph, const std::string& model_key, const Dataset& data,
    const std::string& data_key, const CalibrationRunOptions& options) {
  const std::string key = model_key + '\n' + data_key;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end() && (it->second.histograms || !options.histograms)) {
      return it->second.stats;
    }
  }
  // Calibrate without the lock: other keys stay available meanwhile. Two threads missing on the
  // same key both compute; the results are identical.
  ASSIGN_OR_RETURN(ActivationStatsMap stats, CalibrateActivations(graph, data, options));
  absl::MutexLock lock(&mu_);
  ++computations_;
  entries_[key] = Entry{options.histograms, stats};
  return stats;
}

int64_t CalibrationCache::computations() const {
  absl::MutexLock lock(&mu_);
  return computations_;
}

}  // namespace bitsweep::engine
