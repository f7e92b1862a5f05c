#include "worker/engine/train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/train/training_network.h"

namespace bitsweep::engine {

absl::StatusOr<onnx::ModelProto> Train(const onnx::ModelProto& model, const Dataset& train,
                                       const TrainOptions& options) {
  if (options.threads > 0) omp_set_num_threads(options.threads);
  if (train.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", train.reference, "' is empty"));
  }
  if (options.batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must be >= 1, got ", options.batch));
  }
  if (options.epochs < 1 && options.max_steps < 1) {
    return absl::InvalidArgumentError("epochs must be >= 1");
  }
  if (!(options.learning_rate >= 0) || !(options.momentum >= 0) || !(options.weight_decay >= 0)) {
    return absl::InvalidArgumentError(
        "learning_rate, momentum and weight_decay must be non-negative numbers");
  }
  const int64_t batch = std::min<int64_t>(options.batch, train.size());
  TrainingNetworkOptions net_options;
  net_options.batch = batch;
  net_options.sample_shape = train.sample_shape();
  net_options.threads = options.threads;
  net_options.seed = options.seed;
  net_options.quant = options.quant;
  ASSIGN_OR_RETURN(std::unique_ptr<TrainingNetwork> net,
                   TrainingNetwork::Create(model, net_options));
  if (train.num_classes > net->num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", train.reference, "' has labels up to ", train.num_classes - 1,
        " but the model's logits '", net->logits_name(), "' have only ", net->num_classes(),
        " classes"));
  }

  std::vector<Parameter>& params = net->parameters();
  std::vector<std::vector<float>> velocity(params.size());
  for (size_t i = 0; i < params.size(); ++i) velocity[i].assign(params[i].value.num_elements(), 0);

  const int64_t sample = NumElements(train.sample_shape());
  std::vector<int64_t> order(train.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(options.seed);
  std::vector<float> input(batch * sample);
  std::vector<int> labels(batch);
  double lr = options.learning_rate;
  const float momentum = static_cast<float>(options.momentum);
  const float decay = static_cast<float>(options.weight_decay);
  int64_t steps = 0;
  const int epochs = std::max(options.epochs, 1);
  bool done = false;
  for (int epoch = 1; epoch <= epochs && !done; ++epoch) {
    // Fisher-Yates with explicit arithmetic: the order depends only on the seed.
    for (int64_t i = train.size() - 1; i > 0; --i) {
      std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
    }
    const auto start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t correct = 0, batches = 0;
    for (int64_t first = 0; first + batch <= train.size(); first += batch) {
      RETURN_IF_ERROR(CheckStop(options.stop, "training"));
      for (int64_t i = 0; i < batch; ++i) {
        const int64_t s = order[first + i];
        RETURN_IF_ERROR(train.ReadSamples(s, 1, input.data() + i * sample));
        labels[i] = train.labels[s];
      }
      ASSIGN_OR_RETURN(BatchLoss l, net->ForwardBackward(input.data(), labels.data()));
      loss_sum += l.loss;
      correct += l.correct;
      ++batches;
      // SGD as PyTorch: v = m * v + (g + wd * w); w -= lr * v.
      const float rate = static_cast<float>(lr);
      for (size_t p = 0; p < params.size(); ++p) {
        float* w = params[p].value.floats().data();
        const float* g = params[p].grad.floats().data();
        float* v = velocity[p].data();
        const float wd = params[p].weight_decay ? decay : 0.0f;
        const int64_t count = params[p].value.num_elements();
        for (int64_t i = 0; i < count; ++i) {
          v[i] = momentum * v[i] + g[i] + wd * w[i];
          w[i] -= rate * v[i];
        }
      }
      ++steps;
      if (options.max_steps > 0 && steps >= options.max_steps) {
        done = true;
        break;
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EpochReport report;
    report.epoch = epoch;
    report.steps = steps;
    report.mean_loss = batches > 0 ? loss_sum / batches : 0;
    report.train_top1 = batches > 0 ? static_cast<double>(correct) / (batches * batch) : 0;
    report.images_per_second = seconds > 0 ? batches * batch / seconds : 0;
    if (options.validation != nullptr) {
      ASSIGN_OR_RETURN(EvalResult r, EvaluateTrainingNetwork(*net, *options.validation));
      report.validation_top1 = r.top1;
      report.validation_loss = r.loss;
    }
    if (options.on_epoch) options.on_epoch(report);
    lr *= options.lr_decay;
  }

  onnx::ModelProto trained = model;
  RETURN_IF_ERROR(net->WriteTo(&trained));
  return trained;
}

}  // namespace bitsweep::engine
