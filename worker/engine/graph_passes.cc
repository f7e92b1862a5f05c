#include "worker/engine/graph_passes.h"

#include <algorithm>
#include <utility>

#include "absl/types/span.h"
#include "quant/bn_fold.h"
#include "worker/engine/dnnl_util.h"

namespace bitsweep::engine {
namespace {

// True when `value` is read by exactly one node and is not a graph output.
bool HasSingleInternalConsumer(const Graph& g, const std::string& value) {
  return g.ConsumersOf(value).size() == 1 && !g.IsGraphOutput(value);
}

}  // namespace

int FoldBatchNorm(Graph* graph) {
  Graph& g = *graph;
  int folded = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& conv = g.nodes[i];
    if (conv.op != OpKind::kConv || !conv.post_ops.empty()) continue;
    const std::string& out = conv.outputs[0];
    if (!HasSingleInternalConsumer(g, out)) continue;
    const int bn_index = g.ConsumersOf(out)[0];
    Node& bn = g.nodes[bn_index];
    if (bn.op != OpKind::kBatchNorm || bn.inputs[0] != out) continue;

    // Read through const: the constants may share their values with the caller's graph.
    const std::map<std::string, Tensor>& constants = g.constants;
    const Tensor& w = constants.at(conv.inputs[1]);
    const int64_t oc = w.shape()[0];
    const quant::BatchNormParams params = {.scale = constants.at(bn.inputs[1]).floats(),
                                    .shift = constants.at(bn.inputs[2]).floats(),
                                    .mean = constants.at(bn.inputs[3]).floats(),
                                    .var = constants.at(bn.inputs[4]).floats(),
                                    .epsilon = bn.epsilon};
    const bool has_bias = conv.inputs.size() > 2 && !conv.inputs[2].empty();
    absl::Span<const float> bias;
    if (has_bias) bias = constants.at(conv.inputs[2]).floats();
    if (!quant::CanFoldBatchNorm(w.floats().size(), oc, bias.size(), params)) {
      continue;  // malformed; the unfolded BatchNormalization reports it at compile time
    }
    quant::FoldedConv merged = quant::FoldBatchNormIntoConv(w.floats(), oc, bias, params);
    Tensor folded_w = Tensor::Float(w.shape(), std::move(merged.weights));
    Tensor folded_b = Tensor::Float({oc}, std::move(merged.bias));
    const std::string w_name = conv.name + "/W_bn_folded";
    const std::string b_name = conv.name + "/B_bn_folded";
    g.constants[w_name] = std::move(folded_w);
    g.constants[b_name] = std::move(folded_b);
    conv.inputs.resize(3);
    conv.inputs[1] = w_name;
    conv.inputs[2] = b_name;
    conv.outputs[0] = bn.outputs[0];
    g.nodes.erase(g.nodes.begin() + bn_index);
    ++folded;
  }
  return folded;
}

int FuseActivations(Graph* graph) {
  Graph& g = *graph;
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    // Re-examine the same layer after each fusion: Conv -> Relu -> Clip fuses both.
    while (IsQuantizableLayer(g.nodes[i].op)) {
      Node& layer = g.nodes[i];
      const std::string& out = layer.outputs[0];
      if (!HasSingleInternalConsumer(g, out)) break;
      const int act_index = g.ConsumersOf(out)[0];
      const Node& act = g.nodes[act_index];
      if (!IsFusableActivation(act.op)) break;
      // oneDNN 2.6 runs a repeated post-op algorithm with the first one's parameters
      // (AppendEltwise): a second activation of the same algorithm runs on its own.
      const bool repeated = std::any_of(layer.post_ops.begin(), layer.post_ops.end(),
                                        [&](const PostOp& p) {
                                          return PostOpAlgorithm(p.op) == PostOpAlgorithm(act.op);
                                        });
      if (repeated) break;
      layer.post_ops.push_back(PostOp{act.op, act.alpha, act.beta, act.name});
      layer.outputs[0] = act.outputs[0];
      g.nodes.erase(g.nodes.begin() + act_index);
      ++fused;
    }
  }
  return fused;
}

}  // namespace bitsweep::engine
