#include "server/export/qdq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "quant/bn_fold.h"
#include "quant/format.h"

namespace bitsweep::server {
namespace {

bool IsInt8(const v1::QuantParams& p) { return p.bits() == 8 && absl::StartsWith(p.format(), "int:"); }
bool IsFp32(const v1::QuantParams& p) { return p.format().empty() || p.format() == "fp32"; }
// int:B, int:B:sym, int:B:sym:channel ... are symmetric unless they say asym.
bool IsAsymmetric(const v1::QuantParams& p) { return absl::StrContains(p.format(), "asym"); }

absl::Status CheckRole(const std::string& layer, const char* role, const v1::QuantParams& p) {
  if (IsFp32(p) || IsInt8(p)) {
    if (IsInt8(p) && p.scale_size() == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", layer, " ", role, ": the result carries no scale"));
    }
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "layer ", layer, " ", role, " uses ", p.format(),
      ": only int:8 and fp32 have an exact QDQ form (export the JSON manifest instead)"));
}

// Initializer shapes: rank 0 for a per-tensor scale or zero point (as QuantizeLinear and
// DequantizeLinear require), 1-D [n] for per-channel parameters (with the node's `axis`) and
// biases, the original shape for weights. One function per element type takes the shape
// explicitly: a braced {n} must never be read as anything but a shape.
std::vector<int64_t> Scalar() { return {}; }
std::vector<int64_t> Vector(size_t n) { return {static_cast<int64_t>(n)}; }

onnx::TensorProto FloatTensor(const std::string& name, const std::vector<float>& values,
                              const std::vector<int64_t>& dims) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  for (float v : values) t.add_float_data(v);
  return t;
}

// Zero points as int8 (symmetric) or uint8 (asymmetric) tensors; both use int32_data.
onnx::TensorProto ZeroPointTensor(const std::string& name, const std::vector<int32_t>& values,
                                  bool asymmetric, const std::vector<int64_t>& dims) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(asymmetric ? onnx::TensorProto::UINT8 : onnx::TensorProto::INT8);
  for (int64_t d : dims) t.add_dims(d);
  for (int32_t v : values) t.add_int32_data(v);
  return t;
}

std::vector<float> Floats(const onnx::TensorProto& t) {
  if (t.float_data_size() > 0) return {t.float_data().begin(), t.float_data().end()};
  std::vector<float> values(t.raw_data().size() / sizeof(float));
  std::memcpy(values.data(), t.raw_data().data(), values.size() * sizeof(float));
  return values;
}

// Scale and zero point of an activation role as initializers; returns their names.
std::pair<std::string, std::string> AddActivationParams(onnx::GraphProto* graph,
                                                        const std::string& prefix,
                                                        const v1::QuantParams& p) {
  const std::string scale = prefix + "_scale", zero = prefix + "_zero_point";
  *graph->add_initializer() = FloatTensor(scale, {p.scale(0)}, Scalar());
  const int32_t zp = p.zero_point_size() > 0 ? p.zero_point(0) : 0;
  *graph->add_initializer() = ZeroPointTensor(zero, {zp}, IsAsymmetric(p), Scalar());
  return {scale, zero};
}

onnx::NodeProto MakeNode(const std::string& op, const std::string& name,
                         std::vector<std::string> inputs, const std::string& output) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (std::string& in : inputs) n.add_input(std::move(in));
  n.add_output(output);
  return n;
}

const onnx::AttributeProto* FindAttribute(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

// A layer's weights as the engine sees them after constant folding: an initializer, possibly
// reached through Identity (a shared initializer) and Transpose nodes (PyTorch's bias-free
// Linear exports as MatMul(x, Transpose(W))), with the Transposes applied.
struct ResolvedWeights {
  std::vector<float> values;
  std::vector<int64_t> dims;
  std::string initializer;         // the initializer at the start of the chain
  std::vector<int> bypassed_nodes;  // the Identity / Transpose nodes the chain went through
};

absl::StatusOr<ResolvedWeights> ResolveWeights(const onnx::GraphProto& graph,
                                               const std::string& layer,
                                               const std::string& value,
                                               const std::map<std::string, int>& producer,
                                               const std::map<std::string, int>& initializers) {
  std::vector<int> chain;  // producers, from the layer back to the initializer
  std::string name = value;
  while (!initializers.contains(name)) {
    auto p = producer.find(name);
    const onnx::NodeProto* node = p == producer.end() ? nullptr : &graph.node(p->second);
    if (node == nullptr || (node->op_type() != "Identity" && node->op_type() != "Transpose") ||
        node->input_size() != 1 || chain.size() > 64) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", layer, ": weights '", value, "' are not an initializer, nor an Identity or "
          "Transpose of one",
          node == nullptr ? std::string()
                          : absl::StrCat(" (produced by ", node->op_type(), " node '",
                                         node->name(), "')")));
    }
    chain.push_back(p->second);
    name = node->input(0);
  }
  const onnx::TensorProto& t = graph.initializer(initializers.at(name));
  if (t.data_type() != onnx::TensorProto::FLOAT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layer ", layer, ": weights '", name, "' are not float32 (data type ", t.data_type(), ")"));
  }
  ResolvedWeights r{.values = Floats(t), .dims = {t.dims().begin(), t.dims().end()},
                    .initializer = name, .bypassed_nodes = chain};
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const onnx::NodeProto& node = graph.node(*it);
    if (node.op_type() != "Transpose") continue;
    const int rank = static_cast<int>(r.dims.size());
    std::vector<int64_t> perm(rank);
    for (int d = 0; d < rank; ++d) perm[d] = rank - 1 - d;  // ONNX's default: reversed
    if (const onnx::AttributeProto* a = FindAttribute(node, "perm")) {
      perm.assign(a->ints().begin(), a->ints().end());
    }
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    bool permutation = static_cast<int>(sorted.size()) == rank;
    for (int d = 0; permutation && d < rank; ++d) permutation = sorted[d] == d;
    if (!permutation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", layer, ": Transpose node '", node.name(), "' has perm [",
          absl::StrJoin(perm, ","), "], not a permutation of ", rank, " axes"));
    }
    // Row-major strides of the input; output index -> input offset.
    std::vector<int64_t> in_strides(rank, 1), out_dims(rank);
    for (int d = rank - 2; d >= 0; --d) in_strides[d] = in_strides[d + 1] * r.dims[d + 1];
    for (int d = 0; d < rank; ++d) out_dims[d] = r.dims[perm[d]];
    std::vector<float> out(r.values.size());
    std::vector<int64_t> index(rank, 0);
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t offset = 0;
      for (int d = 0; d < rank; ++d) offset += index[d] * in_strides[perm[d]];
      out[i] = r.values[offset];
      for (int d = rank - 1; d >= 0; --d) {
        if (++index[d] < out_dims[d]) break;
        index[d] = 0;
      }
    }
    r.values = std::move(out);
    r.dims = std::move(out_dims);
  }
  return r;
}

// The values that nodes and the graph's outputs read.
std::set<std::string> ReadValues(const onnx::GraphProto& graph) {
  std::set<std::string> read;
  for (const auto& n : graph.node()) read.insert(n.input().begin(), n.input().end());
  for (const auto& o : graph.output()) read.insert(o.name());
  return read;
}

// Drops the nodes that write one of `candidate_outputs` (Identity / Transpose chains the export
// bypassed) once nothing reads it, then the initializers in `initializers` that nothing reads any
// more (also from the graph inputs, where older models list them).
void DropUnread(onnx::GraphProto* graph, const std::set<std::string>& candidate_outputs,
                const std::set<std::string>& initializers) {
  for (bool changed = true; changed;) {
    changed = false;
    const std::set<std::string> read = ReadValues(*graph);
    std::vector<onnx::NodeProto> kept;
    for (const auto& n : graph->node()) {
      if (n.output_size() == 1 && candidate_outputs.contains(n.output(0)) &&
          !read.contains(n.output(0))) {
        changed = true;
        continue;
      }
      kept.push_back(n);
    }
    if (!changed) break;
    graph->clear_node();
    for (onnx::NodeProto& n : kept) *graph->add_node() = std::move(n);
  }
  const std::set<std::string> read = ReadValues(*graph);
  auto unused = [&](const std::string& name) {
    return initializers.contains(name) && !read.contains(name);
  };
  std::vector<onnx::TensorProto> kept;
  for (const onnx::TensorProto& t : graph->initializer()) {
    if (!unused(t.name())) kept.push_back(t);
  }
  graph->clear_initializer();
  for (onnx::TensorProto& t : kept) *graph->add_initializer() = std::move(t);
  std::vector<onnx::ValueInfoProto> inputs;
  for (const onnx::ValueInfoProto& v : graph->input()) {
    if (!unused(v.name())) inputs.push_back(v);
  }
  graph->clear_input();
  for (onnx::ValueInfoProto& v : inputs) *graph->add_input() = std::move(v);
}

// Folds every BatchNormalization that the engine folds before a trial quantizes the weights
// (graph_passes.h: it alone reads a Conv's output, which is no graph output, and the parameters
// are constants) into that Conv, with the engine's own arithmetic (engine/bn_fold.h). The folded
// weights get the engine's names (CONV/W_bn_folded, CONV/B_bn_folded); what no node reads any
// more leaves the graph. Other BatchNormalizations stay: the engine runs them unfolded in fp32.
void FoldBatchNorms(onnx::GraphProto* graph) {
  std::map<std::string, int> readers, producer, initializer_index;
  for (int i = 0; i < graph->node_size(); ++i) {
    for (const std::string& in : graph->node(i).input()) ++readers[in];
    for (const std::string& out : graph->node(i).output()) producer[out] = i;
  }
  std::set<std::string> graph_outputs;
  for (const auto& o : graph->output()) graph_outputs.insert(o.name());
  for (int i = 0; i < graph->initializer_size(); ++i) {
    initializer_index[graph->initializer(i).name()] = i;
  }
  auto float_initializer = [&](const std::string& name) -> const onnx::TensorProto* {
    auto it = initializer_index.find(name);
    if (it == initializer_index.end()) return nullptr;
    const onnx::TensorProto& t = graph->initializer(it->second);
    return t.data_type() == onnx::TensorProto::FLOAT ? &t : nullptr;
  };

  std::set<int> folded_bns;
  std::set<std::string> maybe_unused;
  std::vector<onnx::TensorProto> added;
  for (int i = 0; i < graph->node_size(); ++i) {
    const onnx::NodeProto& bn = graph->node(i);
    if (bn.op_type() != "BatchNormalization" || bn.input_size() < 5 || bn.output_size() != 1) {
      continue;
    }
    auto p = producer.find(bn.input(0));
    if (p == producer.end() || graph->node(p->second).op_type() != "Conv" ||
        readers[bn.input(0)] != 1 || graph_outputs.contains(bn.input(0))) {
      continue;
    }
    onnx::NodeProto& conv = *graph->mutable_node(p->second);
    const onnx::TensorProto* w = conv.input_size() > 1 ? float_initializer(conv.input(1)) : nullptr;
    const bool has_bias = conv.input_size() > 2 && !conv.input(2).empty();
    const onnx::TensorProto* b = has_bias ? float_initializer(conv.input(2)) : nullptr;
    std::vector<std::vector<float>> params;
    for (int k = 1; k <= 4; ++k) {
      if (const onnx::TensorProto* t = float_initializer(bn.input(k))) params.push_back(Floats(*t));
    }
    if (w == nullptr || w->dims_size() == 0 || (has_bias && b == nullptr) || params.size() != 4) {
      continue;
    }
    const onnx::AttributeProto* epsilon = FindAttribute(bn, "epsilon");
    const quant::BatchNormParams bn_params = {.scale = params[0], .shift = params[1],
                                               .mean = params[2], .var = params[3],
                                               .epsilon = epsilon ? epsilon->f() : 1e-5f};
    const std::vector<float> weights = Floats(*w);
    const std::vector<float> bias = b != nullptr ? Floats(*b) : std::vector<float>();
    if (!quant::CanFoldBatchNorm(weights.size(), w->dims(0), bias.size(), bn_params)) continue;
    quant::FoldedConv f = quant::FoldBatchNormIntoConv(weights, w->dims(0), bias, bn_params);
    const std::string w_name = conv.name() + "/W_bn_folded";
    const std::string b_name = conv.name() + "/B_bn_folded";
    added.push_back(FloatTensor(w_name, f.weights, {w->dims().begin(), w->dims().end()}));
    added.push_back(FloatTensor(b_name, f.bias, Vector(f.bias.size())));
    maybe_unused.insert(conv.input(1));
    if (has_bias) maybe_unused.insert(conv.input(2));
    for (int k = 1; k <= 4; ++k) maybe_unused.insert(bn.input(k));
    conv.set_input(1, w_name);
    if (conv.input_size() > 2) {
      conv.set_input(2, b_name);
    } else {
      conv.add_input(b_name);
    }
    conv.set_output(0, bn.output(0));
    folded_bns.insert(i);
  }
  if (folded_bns.empty()) return;
  std::vector<onnx::NodeProto> nodes;
  for (int i = 0; i < graph->node_size(); ++i) {
    if (!folded_bns.contains(i)) nodes.push_back(graph->node(i));
  }
  graph->clear_node();
  for (onnx::NodeProto& n : nodes) *graph->add_node() = std::move(n);
  for (onnx::TensorProto& t : added) *graph->add_initializer() = std::move(t);
  DropUnread(graph, {}, maybe_unused);
}

// The activation family the engine fuses an ONNX op under (graph_passes.h, FuseActivations: one
// per oneDNN algorithm), or "" when it does not fuse it. Relu and LeakyRelu share one.
std::string FusedActivationFamily(const std::string& op) {
  if (op == "Relu" || op == "LeakyRelu") return "relu";
  if (op == "Clip" || op == "Sigmoid" || op == "HardSwish" || op == "Tanh") return op;
  return "";
}

// The node whose output the engine quantizes as layer `layer`'s output: the layer itself, or the
// last activation fused into it. The engine fuses an activation while it is the only reader of
// the value and that value is no graph output, at most one per family, in graph order
// (docs/QUANTIZATION.md, "Placement on real-model graphs"); the output quantizer acts after them.
int OutputQuantizedAt(const onnx::GraphProto& graph, int layer,
                      const std::map<std::string, std::vector<int>>& readers,
                      const std::set<std::string>& graph_outputs) {
  std::set<std::string> fused;
  int at = layer;
  for (;;) {
    const std::string& value = graph.node(at).output(0);
    auto it = readers.find(value);
    if (graph_outputs.contains(value) || it == readers.end() || it->second.size() != 1) break;
    const onnx::NodeProto& next = graph.node(it->second[0]);
    const std::string family = FusedActivationFamily(next.op_type());
    if (family.empty() || next.input(0) != value || fused.contains(family)) break;
    fused.insert(family);
    at = it->second[0];
  }
  return at;
}

}  // namespace

absl::StatusOr<std::string> BuildQdqModel(const std::string& model_bytes,
                                          const v1::TrialResult& result) {
  onnx::ModelProto model;
  if (!model.ParseFromString(model_bytes)) {
    return absl::InternalError("the stored model does not parse as ONNX");
  }
  int64_t opset = 0;
  for (const auto& o : model.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  }
  if (opset < 13) {
    return absl::FailedPreconditionError(absl::StrCat(
        "QDQ export needs opset 13 or later (per-channel DequantizeLinear); the model has ", opset));
  }
  onnx::GraphProto* graph = model.mutable_graph();
  FoldBatchNorms(graph);
  std::map<std::string, int> node_index;
  for (int i = 0; i < graph->node_size(); ++i) node_index[graph->node(i).name()] = i;
  std::map<std::string, int> initializer_index;
  for (int i = 0; i < graph->initializer_size(); ++i) {
    initializer_index[graph->initializer(i).name()] = i;
  }
  // Readers of each value (a node reading it twice counts once) and the graph outputs, for
  // finding where the engine quantizes each layer's output.
  std::map<std::string, std::vector<int>> readers;
  for (int i = 0; i < graph->node_size(); ++i) {
    for (const std::string& in : graph->node(i).input()) {
      std::vector<int>& r = readers[in];
      if (r.empty() || r.back() != i) r.push_back(i);
    }
  }
  std::set<std::string> graph_outputs;
  for (const auto& o : graph->output()) graph_outputs.insert(o.name());
  std::map<std::string, int> producer;
  for (int i = 0; i < graph->node_size(); ++i) {
    for (const std::string& out : graph->node(i).output()) producer[out] = i;
  }
  // Float weights replaced by their codes, and the Identity / Transpose nodes that led to them:
  // dropped at the end when nothing else reads them.
  std::set<std::string> replaced_initializers, bypassed_outputs, quantized_values;

  bool any_int8 = false;
  std::vector<onnx::NodeProto> before;  // inserted ahead of everything (weights: no producers)
  std::map<int, std::vector<onnx::NodeProto>> input_qdq, output_qdq;  // by node index
  for (const v1::LayerResult& layer : result.layers()) {
    if (auto s = CheckRole(layer.name(), "weights", layer.weights()); !s.ok()) return s;
    if (auto s = CheckRole(layer.name(), "inputs", layer.inputs()); !s.ok()) return s;
    if (auto s = CheckRole(layer.name(), "outputs", layer.outputs()); !s.ok()) return s;
    auto it = node_index.find(layer.name());
    if (it == node_index.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", layer.name(), " of the result is not a node of the model"));
    }
    onnx::NodeProto* node = graph->mutable_node(it->second);

    if (IsInt8(layer.weights())) {
      any_int8 = true;
      // The value the layer reads; its constant may come through Identity / Transpose nodes,
      // which the engine folds: the folded value is quantized, as a new initializer.
      const std::string weight_name = node->input(1);
      absl::StatusOr<ResolvedWeights> resolved =
          ResolveWeights(*graph, layer.name(), weight_name, producer, initializer_index);
      if (!resolved.ok()) return resolved.status();
      replaced_initializers.insert(resolved->initializer);
      for (int n : resolved->bypassed_nodes) bypassed_outputs.insert(graph->node(n).output(0));
      const std::vector<float>& values = resolved->values;
      const std::vector<int64_t>& weight_dims = resolved->dims;
      const v1::QuantParams& p = layer.weights();
      const bool asymmetric = IsAsymmetric(p);
      const int channels = p.scale_size();
      // Output channels: axis 0 for Conv and Gemm(transB=1); Gemm(transB=0) and MatMul keep
      // them on axis 1.
      int axis = 0;
      if (node->op_type() != "Conv") {
        const onnx::AttributeProto* trans_b = FindAttribute(*node, "transB");
        axis = trans_b != nullptr && trans_b->i() == 1 ? 0 : 1;
      }
      if (axis >= static_cast<int>(weight_dims.size())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", layer.name(), " weights: rank ", weight_dims.size(),
            " has no output-channel axis ", axis));
      }
      const int64_t axis_size = weight_dims[axis];
      if (channels != 1 && channels != axis_size) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", layer.name(), " weights: ", channels, " scales for ", axis_size,
            " output channels"));
      }
      int64_t inner = 1;
      for (size_t d = axis + 1; d < weight_dims.size(); ++d) inner *= weight_dims[d];
      // The new initializers are named after the value; a second layer reading the same value
      // (with its own scales) prefixes its name.
      const std::string base = quantized_values.insert(weight_name).second
                                   ? weight_name
                                   : absl::StrCat(layer.name(), "/", weight_name);
      const int lo = asymmetric ? 0 : -128, hi = asymmetric ? 255 : 127;
      onnx::TensorProto codes;
      codes.set_name(base + "_quantized");
      for (int64_t d : weight_dims) codes.add_dims(d);
      codes.set_data_type(asymmetric ? onnx::TensorProto::UINT8 : onnx::TensorProto::INT8);
      for (size_t i = 0; i < values.size(); ++i) {
        const int c = channels == 1 ? 0 : static_cast<int>((i / inner) % axis_size);
        const int32_t zp = p.zero_point_size() > c ? p.zero_point(c) : 0;
        // PyTorch's fake quantization rule, as the engine computes it (format.cc): the float
        // product with the float reciprocal, rounded half to even.
        const float inv = quant::IntInverse(p.scale(c));
        const double q = std::nearbyint(static_cast<double>(values[i] * inv)) + zp;
        // One byte per weight: int8 two's complement, or uint8.
        codes.mutable_raw_data()->push_back(
            static_cast<char>(static_cast<int32_t>(std::clamp<double>(q, lo, hi))));
      }
      std::vector<int32_t> zero_points(channels, 0);
      for (int c = 0; c < channels && c < p.zero_point_size(); ++c) zero_points[c] = p.zero_point(c);
      const bool per_tensor = channels == 1;
      const std::vector<int64_t> dims = per_tensor ? Scalar() : Vector(channels);
      *graph->add_initializer() = FloatTensor(base + "_scale",
                                              {p.scale().begin(), p.scale().end()}, dims);
      *graph->add_initializer() =
          ZeroPointTensor(base + "_zero_point", zero_points, asymmetric, dims);
      *graph->add_initializer() = std::move(codes);
      onnx::NodeProto dq = MakeNode("DequantizeLinear", layer.name() + "_weights_dq",
                                    {base + "_quantized", base + "_scale",
                                     base + "_zero_point"},
                                    base + "_dequantized");
      if (!per_tensor) {
        onnx::AttributeProto* a = dq.add_attribute();
        a->set_name("axis");
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(axis);
      }
      before.push_back(std::move(dq));
      node->set_input(1, base + "_dequantized");
    }
    if (IsInt8(layer.inputs())) {
      any_int8 = true;
      const std::string x = node->input(0), prefix = layer.name() + "_input";
      auto [scale, zero] = AddActivationParams(graph, prefix, layer.inputs());
      input_qdq[it->second].push_back(
          MakeNode("QuantizeLinear", prefix + "_q", {x, scale, zero}, prefix + "_quantized"));
      input_qdq[it->second].push_back(MakeNode("DequantizeLinear", prefix + "_dq",
                                               {prefix + "_quantized", scale, zero},
                                               prefix + "_dequantized"));
      node->set_input(0, prefix + "_dequantized");
    }
    if (IsInt8(layer.outputs())) {
      any_int8 = true;
      // After the activations the engine fuses into the layer (Relu, Clip, HardSwish, ...).
      const int at = OutputQuantizedAt(*graph, it->second, readers, graph_outputs);
      onnx::NodeProto* producer = graph->mutable_node(at);
      const std::string y = producer->output(0), prefix = layer.name() + "_output";
      auto [scale, zero] = AddActivationParams(graph, prefix, layer.outputs());
      producer->set_output(0, prefix + "_float");
      output_qdq[at].push_back(MakeNode("QuantizeLinear", prefix + "_q",
                                                {prefix + "_float", scale, zero},
                                                prefix + "_quantized"));
      output_qdq[at].push_back(
          MakeNode("DequantizeLinear", prefix + "_dq", {prefix + "_quantized", scale, zero}, y));
    }
  }
  if (!any_int8) {
    return absl::FailedPreconditionError(
        "the trial quantizes nothing to int:8: a QDQ model would equal the fp32 model");
  }
  // Rebuild the node list in topological order: weight dequantization first, then each node
  // with its input pair before and its output pair after.
  std::vector<onnx::NodeProto> nodes = std::move(before);
  for (int i = 0; i < graph->node_size(); ++i) {
    for (onnx::NodeProto& n : input_qdq[i]) nodes.push_back(std::move(n));
    nodes.push_back(graph->node(i));
    for (onnx::NodeProto& n : output_qdq[i]) nodes.push_back(std::move(n));
  }
  graph->clear_node();
  for (onnx::NodeProto& n : nodes) *graph->add_node() = std::move(n);
  DropUnread(graph, bypassed_outputs, replaced_initializers);
  model.set_producer_name("bitsweep (QDQ export)");
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the QDQ model fails the ONNX checker: ", e.what()));
  }
  return model.SerializeAsString();
}

}  // namespace bitsweep::server
