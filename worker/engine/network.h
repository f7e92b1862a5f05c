// Network: a Graph compiled into oneDNN primitives for fixed input shapes, ready to run batches.
//
// Compilation resolves every shape, creates each primitive descriptor once, reorders constant
// weights once into the layouts oneDNN prefers, and lets activations flow between primitives in
// blocked layouts; reorders happen only where an operator needs plain row-major data (Flatten,
// Reshape, Softmax, Gemm) and at the graph's outputs. oneDNN errors are converted to Status here,
// at one boundary, naming the node being compiled or run.
//
//   NetworkOptions opts;
//   opts.batch = 256;
//   ASSIGN_OR_RETURN(std::unique_ptr<Network> net, Network::Create(graph, opts));
//   std::map<std::string, Tensor> outputs;
//   RETURN_IF_ERROR(net->Run({{"input", &batch}}, &outputs));
//
// Create compiles from the caller's weights without copying them (Graph::SharedCopy: a network
// that quantizes or folds a weight gets its own copy) and does not keep them: after compiling, the
// weights live in the primitives' memory only, and graph() has nodes but no constants.
//
// A Network is not thread-safe: one caller runs it at a time (oneDNN parallelizes inside).
#ifndef BITSWEEP_WORKER_ENGINE_NETWORK_H_
#define BITSWEEP_WORKER_ENGINE_NETWORK_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/graph.h"
#include "worker/engine/inference_network.h"
#include "quant/layer_info.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// Sees a quantizable layer's input (is_output false) or output (after its fused activations) as
// plain row-major data for the whole batch, during Run. Calibration uses it.
using ActivationObserver = std::function<void(const std::string& layer, bool is_output,
                                              const float* data, int64_t count)>;

struct NetworkOptions {
  // The first dimension of every runtime input (its batch), unless `input_shapes` names it.
  int64_t batch = 1;
  // Full shapes for runtime inputs; overrides `batch` for the inputs it names.
  std::map<std::string, Shape> input_shapes;
  // OpenMP threads for oneDNN; 0 keeps the process default.
  int threads = 0;
  // Inference rewrites (graph_passes.h); tests turn them off to compare.
  bool fold_batch_norm = true;
  bool fuse_activations = true;
  // Quantization emulation (not owned; must outlive Create). Layers it does not name stay fp32.
  // Weights are quantized once here; fixed-point outputs with nearest-even rounding run as
  // oneDNN post-ops of the producing primitive, other formats as a vectorized pass after it; a
  // layer input is quantized (into its own copy: other readers keep their values) unless it is
  // already on the right grid.
  const quant::QuantPlan* quant = nullptr;
  ActivationObserver observer;
  // Values whose lifetimes do not overlap share memory (InferenceCompilerOptions); tests turn
  // it off to compare.
  bool reuse_buffers = true;
};

// The accessors and Run/RunSingle are InferenceNetwork's (inference_network.h).
class Network : public InferenceNetwork {
 public:
  static absl::StatusOr<std::unique_ptr<Network>> Create(const Graph& graph,
                                                         const NetworkOptions& options);

 private:
  class Impl;
  explicit Network(std::unique_ptr<Impl> impl);
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_NETWORK_H_
