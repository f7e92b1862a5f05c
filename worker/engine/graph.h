// Graph IR: the engine's model, imported from ONNX and compiled into a Network.
//
// A Graph is a topologically ordered list of Nodes over named values. Constant values
// (initializers, Constant nodes, inputs bound at import) live in `constants`; runtime inputs are
// listed in `inputs` with their declared shapes (symbolic dimensions are -1). Attributes are parsed
// and validated at import, so compiling never meets an unknown attribute.
//
// Activations (Relu, LeakyRelu, Clip, Sigmoid, HardSwish, Tanh) that directly follow a Conv/Gemm/MatMul are fused
// into that node's `post_ops` by FuseActivations (graph_passes.h); the quantizers of later work sit
// on the same chain, so a layer's output quantizer runs inside the producing primitive.
//
//   ASSIGN_OR_RETURN(Graph g, ImportOnnxFile("lenet5.onnx"));   // onnx_import.h
//   for (const Node& n : g.nodes) if (IsQuantizableLayer(n.op)) ...
#ifndef BITSWEEP_WORKER_ENGINE_GRAPH_H_
#define BITSWEEP_WORKER_ENGINE_GRAPH_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/tensor.h"

namespace bitsweep::engine {

enum class OpKind {
  kConv,
  kGemm,
  kMatMul,
  kRelu,
  kLeakyRelu,
  kClip,
  kSigmoid,
  kMaxPool,
  kAveragePool,
  kGlobalAveragePool,
  kConcat,
  kAdd,
  kMul,
  kBatchNorm,
  kFlatten,
  kReshape,
  kSqueeze,
  kUnsqueeze,
  kLrn,
  kSoftmax,
  kIdentity,  // also Dropout at inference
  kHardSigmoid,
  kHardSwish,
  kTanh,
  kSub,
  kDiv,
  kPad,
  kReduceMean,
  kReduceMax,
  kTranspose,
  kSlice,  // also each output of a Split
};

std::string_view OpKindName(OpKind op);
// Conv, Gemm and MatMul: the layers whose weights and outputs get number formats.
bool IsQuantizableLayer(OpKind op);
// Elementwise activations that can run as a post-op of the producing layer.
bool IsFusableActivation(OpKind op);

// An elementwise operation applied inside a layer's primitive, after its accumulation.
struct PostOp {
  OpKind op = OpKind::kRelu;  // an IsFusableActivation kind
  float alpha = 0.0f;         // LeakyRelu slope; Clip minimum
  float beta = 0.0f;          // Clip maximum
  std::string source_node;    // the ONNX node this came from, for messages
};

struct Node {
  std::string name;     // ONNX node name, or "<op>_<index>" when the model leaves it empty
  std::string onnx_op;  // e.g. "Dropout" for an identity made from Dropout
  OpKind op = OpKind::kIdentity;
  std::vector<std::string> inputs;  // value names; "" marks an absent optional input
  std::vector<std::string> outputs;

  // Conv and pooling. Spatial vectors have one entry per spatial dimension (after import, always
  // filled: defaults applied). pads_begin/pads_end are explicit; auto_pad is resolved at compile
  // time, when input shapes are known.
  std::vector<int64_t> kernel, strides, dilations, pads_begin, pads_end;
  std::string auto_pad = "NOTSET";
  int64_t group = 1;
  bool ceil_mode = false;
  bool count_include_pad = false;

  // Gemm: alpha, beta, trans_a, trans_b. LeakyRelu: alpha. Clip: alpha = min, beta = max.
  // LRN: alpha, beta, bias, size.
  float alpha = 0.0f, beta = 0.0f, bias = 0.0f;
  bool trans_a = false, trans_b = false;
  int64_t size = 0;

  // Concat, Flatten, Softmax: axis (possibly negative). Squeeze/Unsqueeze, ReduceMean/Max and
  // Slice: axes. Transpose: perm (in `axes`). ReduceMean/Max: keepdims.
  int64_t axis = 0;
  std::vector<int64_t> axes;
  bool softmax_coerce_2d = false;  // Softmax before opset 13 flattens to 2-D at `axis`
  std::vector<int64_t> target_shape;  // Reshape (0 copies, -1 infers)
  bool allowzero = false;             // Reshape
  float epsilon = 1e-5f;           // BatchNormalization
  bool keepdims = true;            // ReduceMean, ReduceMax
  // Slice: per entry of `axes`, start, end and step, as ONNX gives them (clamped at compile time).
  std::vector<int64_t> starts, ends, steps;
  // Pad: begin pads then end pads per dimension (ONNX order); mode "constant", "reflect" or
  // "edge"; the constant in `alpha`.
  std::vector<int64_t> pads;
  std::string pad_mode = "constant";

  std::vector<PostOp> post_ops;  // fused activations (quantizable layers only)
};

struct ValueInfo {
  std::string name;
  Shape shape;  // -1 for a symbolic or unknown dimension
};

struct Graph {
  std::string source;      // file the graph came from, for messages
  int64_t opset = 0;       // default-domain opset version
  std::vector<Node> nodes;  // topological order
  std::vector<ValueInfo> inputs;          // runtime inputs (not constants)
  std::vector<std::string> outputs;       // graph output value names
  std::map<std::string, Tensor> constants;

  bool IsConstant(const std::string& value) const { return constants.count(value) > 0; }
  // Index of the node producing `value`, or -1 (graph input or constant).
  int ProducerOf(const std::string& value) const;
  // Indices of the nodes reading `value`.
  std::vector<int> ConsumersOf(const std::string& value) const;
  bool IsGraphOutput(const std::string& value) const;
  // A copy whose constants share their values with this graph's instead of copying them
  // (Tensor::Share): what a network compiles from, so that the weights exist once.
  Graph SharedCopy() const;
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_GRAPH_H_
