// A closed-form baseline: a linear classifier fitted by ridge regression on one-hot targets.
//
// It needs no training loop, takes about a second on Fashion-MNIST's 60,000 training images, and
// gives a real trained ONNX model (Flatten -> Gemm) whose accuracy is meaningful (about 81% on
// Fashion-MNIST's test split): the embedded default model until the SGD-trained zoo exists.
//
//   ASSIGN_OR_RETURN(Dataset train, LoadDataset("idx:/usr/share/datasets/fashion-mnist/train"));
//   ASSIGN_OR_RETURN(onnx::ModelProto model, FitRidgeClassifier(train, {}));
#ifndef BITSWEEP_WORKER_ENGINE_ZOO_LINEAR_FIT_H_
#define BITSWEEP_WORKER_ENGINE_ZOO_LINEAR_FIT_H_

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/dataset.h"

namespace bitsweep::engine::zoo {

struct RidgeOptions {
  double lambda = 10.0;  // L2 penalty on the weights (not the bias), in units of summed squares
  int threads = 0;       // OpenMP threads for the Gram matrix; 0 keeps the default
};

// Solves min_W ||[X 1] W - Y||^2 + lambda ||W_x||^2 over the dataset and returns an opset-13 ONNX
// model with input "input" (the dataset's sample shape, batch "N"), nodes "flatten" and "fc", and
// output "logits" [N, num_classes].
absl::StatusOr<onnx::ModelProto> FitRidgeClassifier(const Dataset& train,
                                                    const RidgeOptions& options);

}  // namespace bitsweep::engine::zoo

#endif  // BITSWEEP_WORKER_ENGINE_ZOO_LINEAR_FIT_H_
