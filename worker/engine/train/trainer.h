// Training and fine-tuning: backward passes with oneDNN backward primitives, SGD with momentum and
// weight decay, fp32 shadow weights, and fake-quantization hooks with a straight-through estimator.
//
//   ASSIGN_OR_RETURN(onnx::ModelProto init, zoo::BuildArchitecture("lenet5", {}));
//   TrainOptions options;
//   options.epochs = 10;
//   ASSIGN_OR_RETURN(onnx::ModelProto trained, Train(init, train_split, options));
//
// The model is imported like any other (onnx_import.h) and trained in place of its float
// initializers; the result is the same ModelProto with new weight values (and updated
// BatchNormalization running statistics), so it passes the ONNX checker and re-imports as is.
//
// Fine-tuning a quantized configuration: FakeQuantHooks quantize, in the forward pass, a copy of
// each quantizable layer's weights (the fp32 shadow weights receive the updates) and the layer's
// input and output activations; the backward pass treats every quantizer as the identity
// (straight-through estimator). A Conv with quantized weights followed by a BatchNormalization
// that the emulation folds into it trains folded, as it is evaluated: the hook quantizes
// W * gamma / sqrt(var + eps) computed from the running statistics, which stay frozen, and the
// gradients reach W, the bias, gamma and beta through the fold (training_network.h).
#ifndef BITSWEEP_WORKER_ENGINE_TRAIN_TRAINER_H_
#define BITSWEEP_WORKER_ENGINE_TRAIN_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/dataset.h"
#include "worker/engine/stop.h"

namespace bitsweep::engine {

// Each hook, when set, quantizes `count` values in place for the quantizable layer (Conv, Gemm,
// MatMul) named `layer`. Weights are given in the ONNX layout ([OC, IC/G, k...] / Gemm's B);
// activations in plain row-major [N, ...] layout.
struct FakeQuantHooks {
  std::function<void(const std::string& layer, float* data, int64_t count)> weights;
  // Whether `weights` quantizes this layer's weights, asked once per Conv when the training
  // network is built: a Conv it answers true for trains with the BatchNormalization after it
  // folded in (frozen running statistics). Empty: true for every layer when `weights` is set.
  std::function<bool(const std::string& layer)> quantizes_weights;
  std::function<void(const std::string& layer, float* data, int64_t count)> inputs;
  std::function<void(const std::string& layer, float* data, int64_t count)> outputs;
};

struct EpochReport {
  int epoch = 0;             // 1-based
  int64_t steps = 0;         // optimizer steps so far
  double mean_loss = 0;      // over this epoch's (or this run's) training batches
  double train_top1 = 0;     // on the training batches, in training mode
  double images_per_second = 0;
  // With TrainOptions::validation: top-1 and mean cross-entropy on it after this epoch, in eval
  // mode (BatchNormalization running statistics, no dropout, quantization hooks applied);
  // otherwise -1.
  double validation_top1 = -1;
  double validation_loss = -1;
};

struct TrainOptions {
  int epochs = 1;
  int64_t max_steps = 0;     // > 0: stop after this many optimizer steps (fine-tuning)
  int64_t batch = 64;
  double learning_rate = 0.01;
  double momentum = 0.9;
  double weight_decay = 5e-4;  // on weights only, not biases or BatchNorm parameters
  // Learning rate is multiplied by lr_decay after every epoch.
  double lr_decay = 1.0;
  uint64_t seed = 1;         // shuffling, dropout masks
  int threads = 0;           // OpenMP threads for oneDNN; 0 keeps the default
  FakeQuantHooks quant;      // empty: fp32 training
  std::function<void(const EpochReport&)> on_epoch;  // progress reports (optional)
  const Dataset* validation = nullptr;  // evaluated after every epoch when set (not owned)
  // Polled before every training batch (stop.h): true ends training with CANCELLED (no model).
  StopFn stop;
};

// Trains with softmax cross-entropy on the model's first output ([N, classes] logits; a final
// Softmax is skipped and its input trained on). Dropout is active (inverted scaling) and
// BatchNormalization uses batch statistics while training (except one folded into a Conv with
// quantized weights, which stays frozen; see FakeQuantHooks). Each epoch visits the training set in
// a new order (shuffled with `seed`) in batches of min(batch, size) samples; the last partial
// batch of an epoch is dropped (a different remainder each epoch). Training stops after `epochs`
// epochs or `max_steps` steps, whichever comes first; on_epoch also reports a partial last epoch.
// The same model, data and options (including threads) give identical weights.
// Errors name the node and operator that cannot be trained.
// Supported operators and the details of the backward pass: training_network.h.
absl::StatusOr<onnx::ModelProto> Train(const onnx::ModelProto& model, const Dataset& train,
                                       const TrainOptions& options);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TRAIN_TRAINER_H_
