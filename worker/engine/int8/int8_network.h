// Int8Network: a Graph plus a QuantPlan for an int:8 config, compiled into oneDNN's true int8
// primitives (u8 activations, s8 weights, s32 accumulation). It computes what the fp32 emulation
// (network.h with NetworkOptions::quant) computes, with integer arithmetic instead of float, so
// that `bitsweep eval --int8` can show the speed of real 8-bit inference next to the emulation's
// accuracy.
//
//   ASSIGN_OR_RETURN(QuantPlan plan, BuildQuantPlan(layers, formats, stats, config));  // plan.h
//   Int8NetworkOptions opts;
//   opts.batch = 256;
//   opts.plan = &plan;
//   ASSIGN_OR_RETURN(std::unique_ptr<Int8Network> net, Int8Network::Create(graph, opts));
//   RETURN_IF_ERROR(net->RunSingle(input, scores));
//
// What it runs (CheckInt8Plan says exactly why anything else is refused; nothing falls back to
// the emulation silently):
//   * Quantized layers (Conv, Gemm, MatMul with a constant 2-D B): weights int:8:sym per tensor or
//     per channel (s8 codes), inputs int:8:sym, outputs int:8:sym or fp32, rounding nearest_even
//     (oneDNN's conversions round half to even). One oneDNN int8 convolution / matmul each: bias
//     f32 in the accumulator's units, output scales s_in*s_w (per tensor or per output channel),
//     the fused activations, then linear(1/s_out) and clip(-127, 127) as post-ops; the conversion
//     to u8 (non-negative outputs) or s8 rounds.
//   * Grouped and depthwise convolutions are oneDNN grouped int8 convolutions (weights
//     [G, OC/G, IC/G, kh, kw]), per-tensor or per-channel scales as above; a signed input is split
//     within each group (below), so a depthwise layer with a signed input runs two input channels
//     per group.
//   * Layers whose weights, inputs and outputs are all fp32 run as fp32 primitives.
//   * Max pooling and concatenation of equally quantized parts stay in int8; reshapes and
//     flattening reorder int8 codes; every other operator runs in fp32 on dequantized values
//     (a reorder with the input's scale, which gives exactly the emulation's fl(code * scale)).
//   * A layer input not already in the layer's u8 codes (network input, fp32 regions, another
//     grid) is quantized by a vectorized host pass with the emulation's math (fl(x * fl(1 / s)),
//     clamp to +-127, round half to even).
// Why signed inputs are split: on CPUs without VNNI (AVX2 machines) oneDNN multiplies u8 by s8
// with vpmaddubsw, whose 16-bit pair sums saturate above 32767, and avoids that for s8 sources by
// halving the weights (its "scale adjust"), which loses their last bit. One code path serves
// every CPU, VNNI and AMX ones included, so results do not depend on the machine. u8 codes in [0, 127] times
// s8 weights in [-127, 127] stay below 2 * 127 * 127 = 32258, so a layer whose input can be
// negative reads x as two u8 halves, max(x, 0) and max(-x, 0), over doubled input channels with
// weights [w, -w]: exact, at twice the MACs of that layer (usually only the first).
// Not supported: asymmetric (zero-point) activations or weights, widths other than 8, stochastic
// or nearest_away rounding, Gemm with transA=1 in a quantized layer, and any layer for which
// oneDNN would pick a kernel that halves the weights (refused naming the layer and the kernel).
//
// An Int8Network is not thread-safe: one caller runs it at a time (oneDNN parallelizes inside).
#ifndef BITSWEEP_WORKER_ENGINE_INT8_INT8_NETWORK_H_
#define BITSWEEP_WORKER_ENGINE_INT8_INT8_NETWORK_H_

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

namespace bitsweep::engine::int8 {

struct Int8NetworkOptions {
  // The first dimension of every runtime input (its batch), unless `input_shapes` names it.
  int64_t batch = 1;
  // Full shapes for runtime inputs; overrides `batch` for the inputs it names.
  std::map<std::string, Shape> input_shapes;
  // OpenMP threads for oneDNN; 0 keeps the process default.
  int threads = 0;
  // Required (not owned; must outlive Create): the calibrated plan, as BuildQuantPlan makes it.
  const quant::QuantPlan* plan = nullptr;
};

// OK when every quantizable layer of `graph` (BatchNorm folded, activations fused, as compiled)
// can run exactly through the int8 path under `plan`, and at least one layer is int8. Otherwise
// InvalidArgument naming the first offending layer, the role and the reason, e.g.
// "layer 'conv1' weights fixed:8: the int8 path runs int:8:sym weights only (s8 codes)".
absl::Status CheckInt8Plan(const Graph& graph, const quant::QuantPlan& plan);

// The accessors and Run/RunSingle are InferenceNetwork's (inference_network.h): inputs are float
// tensors of the compiled shapes (quantized inside), outputs float32; weight_quantizers() holds
// every int8 layer's (the same scales the emulation chooses).
class Int8Network : public InferenceNetwork {
 public:
  // Checks the plan (CheckInt8Plan) and compiles. oneDNN errors are converted to Status here,
  // naming the node.
  static absl::StatusOr<std::unique_ptr<Int8Network>> Create(const Graph& graph,
                                                             const Int8NetworkOptions& options);

  // The oneDNN implementation each layer's primitive runs (e.g. "jit_int8:avx2"), for reports.
  const std::map<std::string, std::string>& layer_implementations() const;

 private:
  class Impl;
  explicit Int8Network(std::unique_ptr<Impl> impl);
};

}  // namespace bitsweep::engine::int8

#endif  // BITSWEEP_WORKER_ENGINE_INT8_INT8_NETWORK_H_
