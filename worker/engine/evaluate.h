// Evaluation: accuracy and loss of a graph on a dataset, batched through a compiled Network.
//
// The last partial batch is padded with zeros and the padded rows ignored, so one Network serves
// the whole dataset. A batch whose activations would not stay in cache (more than 16 MiB, e.g.
// mobilenet_v2 at 64 px above about 40 images) runs as sub-batches through a network compiled for
// fewer images (EvalSubBatch in eval_backend.h): large batches are not slower than small ones. The first graph output is read as class scores [N, num_classes]: logits, or
// probabilities when the graph ends in Softmax (then the loss is -log p directly).
//
//   ASSIGN_OR_RETURN(EvalResult r, Evaluate(graph, dataset, {.batch = 256, .threads = 2}));
//   printf("top1 %.4f\n", r.top1);
#ifndef BITSWEEP_WORKER_ENGINE_EVALUATE_H_
#define BITSWEEP_WORKER_ENGINE_EVALUATE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"
#include "quant/layer_info.h"
#include "quant/plan.h"
#include "worker/engine/stop.h"

namespace bitsweep::engine {

struct EvalOptions {
  int64_t batch = 256;
  int threads = 0;  // 0: OpenMP default
  const quant::QuantPlan* quant = nullptr;  // emulate this quantization (not owned)
  // Polled before every batch (stop.h): true ends the evaluation with CANCELLED. RunTrial and
  // FinetuneTrial pass it on to their calibration and training too.
  StopFn stop;
};

struct EvalResult {
  double top1 = 0;  // fraction in [0, 1]
  double top5 = 0;
  double loss = 0;  // mean cross-entropy, natural log
  int64_t samples = 0;
  double seconds = 0;  // inference time only (compilation excluded)
  double images_per_second = 0;
  std::vector<quant::LayerInfo> layers;                             // the quantizable layers
  std::map<std::string, quant::Quantizer> weight_quantizers;  // as chosen from the weights
};

// Top-k hits and cross-entropy of one row of class scores; shared with tests and training.
struct RowScore {
  bool top1 = false;
  bool top5 = false;
  double loss = 0;
};
RowScore ScoreRow(const float* scores, int num_classes, int label, bool scores_are_probabilities);

absl::StatusOr<EvalResult> Evaluate(const Graph& graph, const Dataset& dataset,
                                    const EvalOptions& options);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_EVALUATE_H_
