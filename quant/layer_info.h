// LayerInfo: what the cost model, `bitsweep inspect` and the planner need to know about one
// quantizable layer (Conv, Gemm, MatMul) of a compiled network, per single inference (batch 1).
// Shapes are plain vectors (the engine's Shape alias is the same type).
//
//   for (const LayerInfo& l : network->layers()) printf("%s %lld MACs\n", l.name.c_str(), l.macs);
#ifndef BITSWEEP_QUANT_LAYER_INFO_H_
#define BITSWEEP_QUANT_LAYER_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

namespace bitsweep::quant {

enum class LayerClass { kConv, kFc };  // Ristretto's groups: Conv -> conv; Gemm, MatMul -> fc

struct LayerInfo {
  std::string name;         // ONNX node name
  LayerClass layer_class = LayerClass::kConv;
  std::vector<int64_t> weight_shape;  // as in the ONNX model (Conv: [OC, IC/G, k...]; Gemm: B's shape)
  std::vector<int64_t> input_shape;   // of one sample, batch dimension 1
  std::vector<int64_t> output_shape;  // of one sample, batch dimension 1
  int64_t macs = 0;         // multiply-accumulates per inference
  int64_t weight_count = 0; // weights (bias excluded)
  int64_t bias_count = 0;
  int64_t output_channels = 0;  // the weights' output channels (Conv: OC; fc: N): per-channel groups
  int64_t fan_in = 0;       // accumulation length per output (Conv: IC/G * prod(k); fc: K)
  bool output_non_negative = false;  // a fused Relu/Clip(min >= 0)/Sigmoid ends the layer
};

}  // namespace bitsweep::quant

#endif  // BITSWEEP_QUANT_LAYER_INFO_H_
