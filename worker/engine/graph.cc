#include "worker/engine/graph.h"

#include <algorithm>

namespace bitsweep::engine {

std::string_view OpKindName(OpKind op) {
  switch (op) {
    case OpKind::kConv: return "Conv";
    case OpKind::kGemm: return "Gemm";
    case OpKind::kMatMul: return "MatMul";
    case OpKind::kRelu: return "Relu";
    case OpKind::kLeakyRelu: return "LeakyRelu";
    case OpKind::kClip: return "Clip";
    case OpKind::kSigmoid: return "Sigmoid";
    case OpKind::kMaxPool: return "MaxPool";
    case OpKind::kAveragePool: return "AveragePool";
    case OpKind::kGlobalAveragePool: return "GlobalAveragePool";
    case OpKind::kConcat: return "Concat";
    case OpKind::kAdd: return "Add";
    case OpKind::kMul: return "Mul";
    case OpKind::kBatchNorm: return "BatchNormalization";
    case OpKind::kFlatten: return "Flatten";
    case OpKind::kReshape: return "Reshape";
    case OpKind::kSqueeze: return "Squeeze";
    case OpKind::kUnsqueeze: return "Unsqueeze";
    case OpKind::kLrn: return "LRN";
    case OpKind::kSoftmax: return "Softmax";
    case OpKind::kIdentity: return "Identity";
    case OpKind::kHardSigmoid: return "HardSigmoid";
    case OpKind::kHardSwish: return "HardSwish";
    case OpKind::kTanh: return "Tanh";
    case OpKind::kSub: return "Sub";
    case OpKind::kDiv: return "Div";
    case OpKind::kPad: return "Pad";
    case OpKind::kReduceMean: return "ReduceMean";
    case OpKind::kReduceMax: return "ReduceMax";
    case OpKind::kTranspose: return "Transpose";
    case OpKind::kSlice: return "Slice";
  }
  return "?";
}

bool IsQuantizableLayer(OpKind op) {
  return op == OpKind::kConv || op == OpKind::kGemm || op == OpKind::kMatMul;
}

bool IsFusableActivation(OpKind op) {
  // HardSigmoid needs linear + clip, and a second eltwise_linear in one post-op chain misbehaves
  // in oneDNN 2.6 (the output quantizer appends one): it runs as its own primitives instead.
  return op == OpKind::kRelu || op == OpKind::kLeakyRelu || op == OpKind::kClip ||
         op == OpKind::kSigmoid || op == OpKind::kHardSwish || op == OpKind::kTanh;
}

int Graph::ProducerOf(const std::string& value) const {
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    const auto& outs = nodes[i].outputs;
    if (std::find(outs.begin(), outs.end(), value) != outs.end()) return i;
  }
  return -1;
}

std::vector<int> Graph::ConsumersOf(const std::string& value) const {
  std::vector<int> consumers;
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    const auto& ins = nodes[i].inputs;
    if (std::find(ins.begin(), ins.end(), value) != ins.end()) consumers.push_back(i);
  }
  return consumers;
}

bool Graph::IsGraphOutput(const std::string& value) const {
  return std::find(outputs.begin(), outputs.end(), value) != outputs.end();
}

Graph Graph::SharedCopy() const {
  Graph copy{source, opset, nodes, inputs, outputs, /*constants=*/{}};
  for (const auto& [name, tensor] : constants) copy.constants.emplace(name, tensor.Share());
  return copy;
}

}  // namespace bitsweep::engine
