// The training loss: softmax cross-entropy on the host in double precision (SoftmaxCrossEntropy,
// declared in training_network.h), and the rule that Softmax trains only as the model's final
// node (Build drops it and trains on its input).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

double SoftmaxCrossEntropy(const float* logits, const int* labels, int64_t batch, int64_t classes,
                           float* grad, int64_t* correct) {
  double total = 0;
  int64_t hits = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const float* row = logits + r * classes;
    const int label = labels[r];
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (row[c] > row[best]) best = c;
    }
    hits += best == label;
    const double max_score = row[best];
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(double{row[c]} - max_score);
    total += std::log(sum) + max_score - row[label];
    if (grad != nullptr) {
      for (int64_t c = 0; c < classes; ++c) {
        const double p = std::exp(double{row[c]} - max_score) / sum;
        grad[r * classes + c] = static_cast<float>((p - (c == label ? 1.0 : 0.0)) / batch);
      }
    }
  }
  if (correct != nullptr) *correct = hits;
  return total / static_cast<double>(batch);
}

absl::Status Impl::CompileSoftmax(const Node& n) {
  return NodeError(n, "cannot be trained: Softmax is supported only as the model's final "
                      "output (training then uses its input as the logits)");
}

}  // namespace bitsweep::engine
