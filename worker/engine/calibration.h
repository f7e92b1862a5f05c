// Calibration: statistics of every quantizable layer's input and output over a calibration split,
// measured with the fp32 network in inference mode (no dropout, no augmentation) at the layer's
// own output -- after the activations fused into it, exactly where its output quantizer acts
// (Ristretto measured after in-place successors but quantized before them).
//
//   ASSIGN_OR_RETURN(Dataset calib, LoadDataset("idx:.../train", {.limit = 1000}));
//   ASSIGN_OR_RETURN(auto stats, CalibrateActivations(graph, calib, {}));
//   stats.at("conv1").outputs.max_abs();
#ifndef BITSWEEP_WORKER_ENGINE_CALIBRATION_H_
#define BITSWEEP_WORKER_ENGINE_CALIBRATION_H_

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"
#include "quant/plan.h"
#include "worker/engine/stop.h"

namespace bitsweep::engine {

struct CalibrationRunOptions {
  // Small batches keep calibration's memory (activations plus their observed plain copies) well
  // below an evaluation's; 100 divides the default 1000 calibration images.
  int64_t batch = 100;
  int threads = 0;
  // A second pass fills |x| histograms (percentile, mse and entropy calibrators need them).
  bool histograms = true;
  // Polled before every batch of each pass (stop.h): true ends the calibration with CANCELLED
  // (a CalibrationCache keeps nothing of it).
  StopFn stop;
};

using ActivationStatsMap = std::map<std::string, quant::ActivationStats>;

absl::StatusOr<ActivationStatsMap> CalibrateActivations(const Graph& graph, const Dataset& data,
                                                        const CalibrationRunOptions& options);

// Calibration results kept per (model, calibration split): the trials of a sweep share one model
// and split, so calibration runs once per process instead of once per trial. Keys are chosen by
// the caller and must identify content (e.g. the model's SHA-256 and the split's reference with
// its preprocessing). Thread-safe.
//
//   CalibrationCache cache;
//   ASSIGN_OR_RETURN(auto stats, cache.GetOrCompute(graph, model_sha, calib, calib_key, {}));
class CalibrationCache {
 public:
  // Computes on a miss. An entry with histograms also serves requests without them.
  absl::StatusOr<ActivationStatsMap> GetOrCompute(const Graph& graph, const std::string& model_key,
                                                  const Dataset& data, const std::string& data_key,
                                                  const CalibrationRunOptions& options)
      ABSL_LOCKS_EXCLUDED(mu_);
  // How many calibrations ran (misses).
  int64_t computations() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    bool histograms = false;
    ActivationStatsMap stats;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  int64_t computations_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_CALIBRATION_H_
