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

#include "absl/status/statusor.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"
#include "worker/engine/quant/plan.h"

namespace bitsweep::engine {

struct CalibrationRunOptions {
  // Small batches keep calibration's memory (activations plus their observed plain copies) well
  // below an evaluation's; 100 divides the default 1000 calibration images.
  int64_t batch = 100;
  int threads = 0;
  // A second pass fills |x| histograms (percentile, mse and entropy calibrators need them).
  bool histograms = true;
};

absl::StatusOr<std::map<std::string, quant::ActivationStats>> CalibrateActivations(
    const Graph& graph, const Dataset& data, const CalibrationRunOptions& options);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_CALIBRATION_H_
