#include "worker/engine/onnx_import.h"

#include <fcntl.h>

#include <algorithm>
#include <cfloat>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "onnx/checker.h"
#include "onnx/shape_inference/implementation.h"
#include "worker/engine/constant_folding.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {
namespace {

// Reads a node's attributes and remembers which were read, so that any attribute the engine does
// not interpret is reported instead of silently ignored.
class AttributeReader {
 public:
  AttributeReader(const onnx::NodeProto& node, std::string node_name)
      : node_(node), node_name_(std::move(node_name)) {}

  const onnx::AttributeProto* Find(const std::string& name) {
    for (const auto& a : node_.attribute()) {
      if (a.name() == name) {
        used_.insert(name);
        return &a;
      }
    }
    return nullptr;
  }
  int64_t Int(const std::string& name, int64_t fallback) {
    const auto* a = Find(name);
    return a ? a->i() : fallback;
  }
  float Float(const std::string& name, float fallback) {
    const auto* a = Find(name);
    return a ? a->f() : fallback;
  }
  std::string String(const std::string& name, const std::string& fallback) {
    const auto* a = Find(name);
    return a ? a->s() : fallback;
  }
  std::vector<int64_t> Ints(const std::string& name) {
    const auto* a = Find(name);
    if (!a) return {};
    return {a->ints().begin(), a->ints().end()};
  }
  // Reads and accepts an attribute only when it has the one value the engine implements.
  absl::Status RequireInt(const std::string& name, int64_t supported) {
    const auto* a = Find(name);
    if (a != nullptr && a->i() != supported) return Unsupported(name, absl::StrCat(a->i()));
    return absl::OkStatus();
  }
  void Ignore(const std::string& name) { used_.insert(name); }

  absl::Status Unsupported(const std::string& attribute, const std::string& value) const {
    return absl::UnimplementedError(absl::StrCat("node '", node_name_, "' (", node_.op_type(),
                                                 "): attribute ", attribute, "=", value,
                                                 " is not supported"));
  }
  absl::Status CheckAllUsed() const {
    for (const auto& a : node_.attribute()) {
      if (!used_.count(a.name())) {
        return absl::UnimplementedError(absl::StrCat("node '", node_name_, "' (", node_.op_type(),
                                                     "): attribute '", a.name(),
                                                     "' is not supported"));
      }
    }
    return absl::OkStatus();
  }

 private:
  const onnx::NodeProto& node_;
  std::string node_name_;
  std::set<std::string> used_;
};

absl::Status NodeError(const Node& n, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("node '", n.name, "' (", n.onnx_op, "): ", what));
}

class Importer {
 public:
  // `model` is the checked, shape-inferred proto (its large initializers may hold placeholder
  // data); `initializers` are the original ones, whose data becomes the graph's constants, unless
  // `preloaded` (may be null) holds an initializer's values already: those are moved from it.
  Importer(const onnx::ModelProto& model,
           const google::protobuf::RepeatedPtrField<onnx::TensorProto>& initializers,
           std::map<std::string, Tensor>* preloaded, const ImportOptions& options,
           std::string source)
      : model_(model), initializers_(initializers), preloaded_(preloaded), options_(options) {
    graph_.source = std::move(source);
  }

  absl::StatusOr<Graph> Run() {
    RETURN_IF_ERROR(ReadOpset());
    const onnx::GraphProto& g = model_.graph();
    for (const auto& init : initializers_) {
      if (preloaded_ != nullptr) {
        auto it = preloaded_->find(init.name());
        if (it != preloaded_->end()) {
          graph_.constants[init.name()] = std::move(it->second);
          preloaded_->erase(it);
          continue;
        }
      }
      absl::StatusOr<Tensor> t = TensorFromProto(init);
      if (!t.ok()) return Annotate(t.status(), absl::StrCat(graph_.source, ": initializer"));
      graph_.constants[init.name()] = *std::move(t);
    }
    for (const auto& [name, tensor] : options_.bound_inputs) {
      bool found = false;
      for (const auto& in : g.input()) found |= in.name() == name;
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat(graph_.source, ": no graph input named '", name, "' to bind"));
      }
      graph_.constants[name] = tensor;
    }
    for (const auto& in : g.input()) {
      if (graph_.IsConstant(in.name())) continue;
      RETURN_IF_ERROR(AddRuntimeInput(in));
    }
    ReadStaticShapes();
    for (int i = 0; i < g.node_size(); ++i) {
      const onnx::NodeProto& node = g.node(i);
      for (const auto& out : node.output()) producers_[out] = i;
      if (TryFold(node)) continue;
      for (const auto& in : node.input()) read_by_unfolded_.insert(in);
      absl::Status status = AddNode(node, i);
      if (absl::IsUnimplemented(status)) {
        unsupported_.push_back({node.op_type(), NodeName(node, i), std::string(status.message())});
      } else if (!status.ok()) {
        return status;
      }
    }
    if (!unsupported_.empty()) return UnsupportedNodesError();
    for (const auto& out : g.output()) graph_.outputs.push_back(out.name());
    if (graph_.outputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(graph_.source, ": the graph has no outputs"));
    }
    // libonnx's checker does not require graph outputs to be computed by anything.
    for (const std::string& out : graph_.outputs) {
      bool defined = graph_.IsConstant(out) || producers_.count(out) > 0;
      for (const ValueInfo& in : graph_.inputs) defined |= in.name == out;
      if (!defined) {
        return absl::InvalidArgumentError(absl::StrCat(
            graph_.source, ": graph output '", out,
            "' is not computed by any node, nor an initializer or graph input"));
      }
    }
    RemoveDeadNodesAndConstants();
    return std::move(graph_);
  }

 private:

  static std::string NodeName(const onnx::NodeProto& node, int index) {
    return node.name().empty() ? absl::StrCat(node.op_type(), "_", index) : node.name();
  }

  // Static shapes of every value shape inference could fully determine (runtime inputs with a
  // dynamic batch were bound to a batch before inference: see ImportOnnxModel).
  void ReadStaticShapes() {
    ReadInferredShapes(model_.graph());
    for (const auto& [name, t] : graph_.constants) static_shapes_[name] = t.shape();
    if (!graph_.inputs.empty() && !graph_.inputs[0].shape.empty()) {
      import_batch_ = graph_.inputs[0].shape[0];
    }
  }

  // The static shapes shape inference found in `g`, for values not known yet.
  void ReadInferredShapes(const onnx::GraphProto& g) {
    auto read = [&](const onnx::ValueInfoProto& v) {
      if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
      Shape shape;
      for (const auto& d : v.type().tensor_type().shape().dim()) {
        if (!d.has_dim_value()) return;
        shape.push_back(d.dim_value());
      }
      static_shapes_.emplace(v.name(), std::move(shape));
    };
    for (const auto& v : g.input()) read(v);
    for (const auto& v : g.value_info()) read(v);
    for (const auto& v : g.output()) read(v);
  }

  // The static shape of `name`, or null. ONNX's shape inference stops at a Reshape whose target
  // is computed (Shape -> Gather -> Concat, as PyTorch exports a model with a dynamic batch, e.g.
  // ShuffleNet's channel shuffle), and so does every shape after it. When such a computation has
  // folded since the last inference, the shapes are inferred again on a copy of the model with
  // the int64 values folded so far as initializers.
  const Shape* StaticShape(const std::string& name) {
    auto it = static_shapes_.find(name);
    if (it == static_shapes_.end() && folded_int64_.size() != folded_at_inference_) {
      InferWithFoldedValues();
      it = static_shapes_.find(name);
    }
    return it == static_shapes_.end() ? nullptr : &it->second;
  }

  void InferWithFoldedValues() {
    folded_at_inference_ = folded_int64_.size();
    onnx::ModelProto copy;
    copy.set_ir_version(model_.ir_version());
    *copy.mutable_opset_import() = model_.opset_import();
    const onnx::GraphProto& g = model_.graph();
    onnx::GraphProto* out = copy.mutable_graph();
    *out->mutable_input() = g.input();
    *out->mutable_output() = g.output();
    *out->mutable_initializer() = g.initializer();  // large ones: placeholders, the dims count
    for (const std::string& name : folded_int64_) {
      *out->add_initializer() = TensorToProto(graph_.constants.at(name), name);
    }
    for (const onnx::NodeProto& node : g.node()) {
      bool computed = node.output_size() > 0;
      for (const std::string& o : node.output()) computed &= folded_int64_.count(o) > 0;
      if (!computed) *out->add_node() = node;
    }
    try {
      onnx::shape_inference::InferShapes(copy, onnx::OpSchemaRegistry::Instance(),
                                         onnx::ShapeInferenceOptions(/*check_type=*/false,
                                                                     /*strict_mode=*/0));
    } catch (const std::exception&) {
      return;  // the shapes stay unknown; the node needing one says so
    }
    ReadInferredShapes(copy.graph());
  }

  // Evaluates `node` when all its inputs are constants (Shape: when its input's shape is
  // static) and stores its outputs as constants. A node that cannot be evaluated is imported as
  // usual; the reason is kept for the error of a consumer that needed a constant.
  bool TryFold(const onnx::NodeProto& node) {
    if (!(node.domain().empty() || node.domain() == "ai.onnx")) return false;
    if (!IsFoldableOperator(node.op_type())) return false;
    std::vector<const Tensor*> inputs;
    std::optional<Shape> input_shape;
    const bool is_shape = node.op_type() == "Shape";
    for (int k = 0; k < node.input_size(); ++k) {
      const std::string& name = node.input(k);
      if (name.empty()) {
        inputs.push_back(nullptr);
        continue;
      }
      auto it = graph_.constants.find(name);
      if (is_shape) {
        const Shape* shape = StaticShape(name);
        if (shape == nullptr) {
          not_folded_[node.output(0)] = "the shape of its input is not static";
          return false;
        }
        input_shape = *shape;
        inputs.push_back(it == graph_.constants.end() ? nullptr : &it->second);
        continue;
      }
      if (it == graph_.constants.end()) return false;
      inputs.push_back(&it->second);
    }
    absl::StatusOr<std::vector<Tensor>> outputs =
        FoldConstantNode(node, inputs, graph_.opset, input_shape);
    if (!outputs.ok() || outputs->size() != static_cast<size_t>(node.output_size())) {
      if (node.output_size() > 0) {
        not_folded_[node.output(0)] =
            outputs.ok() ? "it has extra outputs" : std::string(outputs.status().message());
      }
      return false;
    }
    for (int k = 0; k < node.output_size(); ++k) {
      static_shapes_[node.output(k)] = (*outputs)[k].shape();
      if ((*outputs)[k].dtype() == DataType::kInt64) folded_int64_.insert(node.output(k));
      graph_.constants[node.output(k)] = std::move((*outputs)[k]);
    }
    return true;
  }

  // "input 1 ('x') must be a constant", naming the node that computes it at run time and, when
  // folding it failed, why.
  absl::Status NotConstant(const Node& n, const std::string& what, const std::string& value) {
    std::string why;
    auto p = producers_.find(value);
    if (p != producers_.end()) {
      const onnx::NodeProto& producer = model_.graph().node(p->second);
      why = absl::StrCat("; it is computed at run time by node '", NodeName(producer, p->second),
                         "' (", producer.op_type(), ")");
      auto reason = not_folded_.find(value);
      if (reason != not_folded_.end()) absl::StrAppend(&why, ", which could not be folded: ",
                                                       reason->second);
    } else {
      why = "; it is a graph input (bind it, or make it an initializer)";
    }
    return NodeError(n, absl::StrCat(what, " ('", value, "') must be a constant", why));
  }

  absl::Status UnsupportedNodesError() const {
    // Unknown operators grouped by operator; unsupported variants one by one.
    std::map<std::string, std::vector<std::string>> by_op;
    std::vector<std::string> variants;
    const std::set<std::string> supported(SupportedOnnxOperators().begin(),
                                          SupportedOnnxOperators().end());
    for (const Unsupported& u : unsupported_) {
      if (!supported.count(u.op)) {
        by_op[u.op].push_back(u.node);
      } else {
        variants.push_back(u.message);
      }
    }
    std::string message = absl::StrCat(graph_.source, ": ", unsupported_.size(), " node",
                                       unsupported_.size() == 1 ? " is" : "s are",
                                       " not supported:");
    for (const auto& [op, nodes] : by_op) {
      absl::StrAppend(&message, "\n  ", op, " x", nodes.size(), ": ");
      for (size_t i = 0; i < nodes.size() && i < 3; ++i) {
        absl::StrAppend(&message, i ? ", '" : "'", nodes[i], "'");
      }
      if (nodes.size() > 3) absl::StrAppend(&message, ", ...");
    }
    for (size_t i = 0; i < variants.size() && i < 10; ++i) {
      absl::StrAppend(&message, "\n  ", variants[i]);
    }
    if (variants.size() > 10) absl::StrAppend(&message, "\n  ... and ", variants.size() - 10, " more");
    if (!by_op.empty()) {
      absl::StrAppend(&message, "\nSupported operators: ",
                      absl::StrJoin(SupportedOnnxOperators(), ", "));
    }
    return absl::UnimplementedError(message);
  }

  // Drops nodes no graph output depends on, and constants no remaining node reads: folding
  // leaves the shape subgraphs' inputs and the pre-transposed weights behind.
  void RemoveDeadNodesAndConstants() {
    std::set<std::string> live(graph_.outputs.begin(), graph_.outputs.end());
    std::vector<Node> kept;
    for (auto it = graph_.nodes.rbegin(); it != graph_.nodes.rend(); ++it) {
      bool used = false;
      for (const std::string& out : it->outputs) used |= live.count(out) > 0;
      if (!used) continue;
      for (const std::string& in : it->inputs) live.insert(in);
      kept.push_back(std::move(*it));
    }
    graph_.nodes.assign(std::make_move_iterator(kept.rbegin()),
                        std::make_move_iterator(kept.rend()));
    // Constants an imported node consumed as a parameter (a Dropout ratio, Clip bounds) stay:
    // the training network reads some of them from the ONNX node again.
    for (auto it = graph_.constants.begin(); it != graph_.constants.end();) {
      const bool keep = live.count(it->first) || read_by_unfolded_.count(it->first);
      it = keep ? std::next(it) : graph_.constants.erase(it);
    }
  }

  absl::Status ReadOpset() {
    for (const auto& op : model_.opset_import()) {
      if (op.domain().empty() || op.domain() == "ai.onnx") graph_.opset = op.version();
    }
    if (graph_.opset < kMinOpset || graph_.opset > kMaxOpset) {
      return absl::UnimplementedError(absl::StrCat(graph_.source, ": opset ", graph_.opset,
                                                   " of the default domain is not supported (",
                                                   kMinOpset, "-", kMaxOpset, " are)"));
    }
    return absl::OkStatus();
  }

  absl::Status AddRuntimeInput(const onnx::ValueInfoProto& in) {
    const auto& type = in.type();
    if (!type.has_tensor_type() || type.tensor_type().elem_type() != onnx::TensorProto::FLOAT) {
      std::string type_name = type.has_tensor_type()
                                  ? onnx::TensorProto::DataType_Name(
                                        static_cast<onnx::TensorProto::DataType>(
                                            type.tensor_type().elem_type()))
                                  : "non-tensor";
      return absl::UnimplementedError(absl::StrCat(graph_.source, ": graph input '", in.name(),
                                                   "' has type ", type_name,
                                                   "; only float32 data inputs are supported"));
    }
    ValueInfo info{in.name(), {}};
    for (const auto& d : type.tensor_type().shape().dim()) {
      info.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    }
    graph_.inputs.push_back(std::move(info));
    return absl::OkStatus();
  }

  // A constant int64 vector from an input (Reshape shape, Squeeze axes, ...).
  absl::StatusOr<std::vector<int64_t>> ConstantInts(const Node& n, int index) {
    const std::string& name = n.inputs[index];
    auto it = graph_.constants.find(name);
    if (it == graph_.constants.end()) return NotConstant(n, absl::StrCat("input ", index), name);
    if (it->second.dtype() != DataType::kInt64) {
      return NodeError(n, absl::StrCat("input ", index, " ('", name, "') must be int64"));
    }
    return it->second.int64s();
  }
  absl::StatusOr<float> ConstantScalar(const Node& n, int index) {
    const std::string& name = n.inputs[index];
    auto it = graph_.constants.find(name);
    if (it == graph_.constants.end()) return NotConstant(n, absl::StrCat("input ", index), name);
    if (it->second.dtype() != DataType::kFloat || it->second.num_elements() != 1) {
      return NodeError(n, absl::StrCat("input ", index, " ('", name,
                                       "') must be a constant float scalar"));
    }
    return it->second.floats()[0];
  }
  bool HasInput(const Node& n, int index) const {
    return index < static_cast<int>(n.inputs.size()) && !n.inputs[index].empty();
  }

  absl::Status ReadSpatial(AttributeReader& attrs, Node& n, int spatial, bool with_dilations) {
    n.kernel = attrs.Ints("kernel_shape");
    n.strides = attrs.Ints("strides");
    n.dilations = with_dilations ? attrs.Ints("dilations") : std::vector<int64_t>{};
    std::vector<int64_t> pads = attrs.Ints("pads");
    n.auto_pad = attrs.String("auto_pad", "NOTSET");
    if (n.kernel.empty()) n.kernel.assign(spatial, 0);  // filled from weights by the caller
    if (n.strides.empty()) n.strides.assign(spatial, 1);
    if (n.dilations.empty()) n.dilations.assign(spatial, 1);
    if (pads.empty()) pads.assign(2 * spatial, 0);
    if (static_cast<int>(n.kernel.size()) != spatial ||
        static_cast<int>(n.strides.size()) != spatial ||
        static_cast<int>(n.dilations.size()) != spatial ||
        static_cast<int>(pads.size()) != 2 * spatial) {
      return NodeError(n, absl::StrCat("kernel_shape/strides/dilations/pads do not match ",
                                       spatial, " spatial dimensions"));
    }
    if (spatial < 1 || spatial > 3) {
      return NodeError(n, absl::StrCat(spatial, " spatial dimensions (1-3 are supported)"));
    }
    for (int i = 0; i < spatial; ++i) {
      if (n.strides[i] < 1 || n.dilations[i] < 1 || pads[i] < 0 || pads[spatial + i] < 0) {
        return NodeError(n, "strides and dilations must be >= 1 and pads >= 0");
      }
    }
    n.pads_begin.assign(pads.begin(), pads.begin() + spatial);
    n.pads_end.assign(pads.begin() + spatial, pads.end());
    if (n.auto_pad != "NOTSET" && n.auto_pad != "VALID" && n.auto_pad != "SAME_UPPER" &&
        n.auto_pad != "SAME_LOWER") {
      return attrs.Unsupported("auto_pad", n.auto_pad);
    }
    return absl::OkStatus();
  }

  // Extra outputs (BatchNormalization statistics, MaxPool indices, Dropout mask) are fine as long
  // as nothing reads them.
  absl::Status RequireUnusedExtraOutputs(const onnx::NodeProto& proto, const Node& n) {
    for (int i = 1; i < proto.output_size(); ++i) {
      const std::string& out = proto.output(i);
      if (out.empty()) continue;
      bool used = false;
      for (const auto& other : model_.graph().node()) {
        for (const auto& in : other.input()) used |= in == out;
      }
      for (const auto& go : model_.graph().output()) used |= go.name() == out;
      if (used) {
        return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                                     "): output ", i, " ('", out,
                                                     "') is not supported at inference"));
      }
    }
    return absl::OkStatus();
  }

  // Before opset 7, BatchNormalization and Dropout ran in training mode unless is_test=1.
  absl::Status RequireTestMode(AttributeReader& attrs, const Node& n) {
    if (attrs.Int("is_test", 0) != 1) {
      return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                                   "): training mode (is_test=0) is not "
                                                   "supported; export the model for inference"));
    }
    return absl::OkStatus();
  }

  // Split becomes one Slice node per output along its axis.
  absl::Status AddSplit(const onnx::NodeProto& proto, Node& n, AttributeReader& attrs) {
    const int64_t axis = attrs.Int("axis", 0);
    std::vector<int64_t> sizes;
    if (opset_uses_split_input()) {
      if (HasInput(n, 1)) { ASSIGN_OR_RETURN(sizes, ConstantInts(n, 1)); }
    } else {
      sizes = attrs.Ints("split");
    }
    RETURN_IF_ERROR(attrs.CheckAllUsed());
    const int parts = proto.output_size();
    if (parts < 1) return NodeError(n, "has no outputs");
    if (sizes.empty()) {
      const Shape* shape = StaticShape(n.inputs[0]);
      if (shape == nullptr) return NodeError(n, "an equal split needs the input's static shape");
      const int64_t rank = static_cast<int64_t>(shape->size());
      if (axis < -rank || axis >= rank) return NodeError(n, "axis is out of range");
      const int64_t dim = (*shape)[axis < 0 ? axis + rank : axis];
      const int64_t chunk = (dim + parts - 1) / parts;  // the last part may be smaller
      for (int i = 0; i < parts; ++i) sizes.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
    if (static_cast<int>(sizes.size()) != parts) {
      return NodeError(n, absl::StrCat(sizes.size(), " split sizes for ", parts, " outputs"));
    }
    int64_t start = 0;
    for (int i = 0; i < parts; ++i) {
      Node slice = n;
      slice.op = OpKind::kSlice;
      slice.name = parts == 1 ? n.name : absl::StrCat(n.name, ":", i);
      slice.inputs.resize(1);
      slice.outputs = {proto.output(i)};
      slice.axes = {axis};
      slice.starts = {start};
      slice.ends = {start + sizes[i]};
      slice.steps = {1};
      start += sizes[i];
      if (!proto.output(i).empty()) graph_.nodes.push_back(std::move(slice));
    }
    return absl::OkStatus();
  }
  bool opset_uses_split_input() const { return graph_.opset >= 13; }

  absl::Status AddNode(const onnx::NodeProto& proto, int index) {
    Node n;
    n.onnx_op = proto.op_type();
    n.name = proto.name().empty() ? absl::StrCat(proto.op_type(), "_", index) : proto.name();
    n.inputs.assign(proto.input().begin(), proto.input().end());
    if (proto.output_size() > 0) n.outputs.push_back(proto.output(0));
    if (!proto.domain().empty() && proto.domain() != "ai.onnx") {
      return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                                   "): domain '", proto.domain(),
                                                   "' is not supported"));
    }
    AttributeReader attrs(proto, n.name);
    const std::string& op = n.onnx_op;
    const int64_t opset = graph_.opset;

    if (op == "Constant") {
      Tensor value;
      if (const auto* a = attrs.Find("value")) {
        absl::StatusOr<Tensor> t = TensorFromProto(a->t());
        if (!t.ok()) return Annotate(t.status(), absl::StrCat("node '", n.name, "' (Constant)"));
        value = *std::move(t);
      } else if (const auto* a = attrs.Find("value_float")) {
        value = Tensor::Float({}, {a->f()});
      } else if (const auto* a = attrs.Find("value_floats")) {
        value = Tensor::Float({a->floats_size()}, {a->floats().begin(), a->floats().end()});
      } else if (const auto* a = attrs.Find("value_int")) {
        value = Tensor::Int64({}, {a->i()});
      } else if (const auto* a = attrs.Find("value_ints")) {
        value = Tensor::Int64({a->ints_size()}, {a->ints().begin(), a->ints().end()});
      } else {
        return absl::UnimplementedError(absl::StrCat(
            "node '", n.name, "' (Constant): only value, value_float(s) and value_int(s) are "
            "supported"));
      }
      RETURN_IF_ERROR(attrs.CheckAllUsed());
      graph_.constants[n.outputs[0]] = std::move(value);
      return absl::OkStatus();
    }

    if (op == "Conv") {
      n.op = OpKind::kConv;
      if (n.inputs.size() < 2) return NodeError(n, "needs inputs X and W");
      auto w = graph_.constants.find(n.inputs[1]);
      if (w == graph_.constants.end()) return NotConstant(n, "weights", n.inputs[1]);
      if (w->second.dtype() != DataType::kFloat) {
        return NodeError(n, absl::StrCat("weights '", n.inputs[1],
                                         "' must be a float constant (initializer)"));
      }
      const Shape& ws = w->second.shape();
      if (ws.size() < 3) return NodeError(n, "weights must have rank >= 3");
      RETURN_IF_ERROR(ReadSpatial(attrs, n, static_cast<int>(ws.size()) - 2, true));
      for (size_t i = 0; i < n.kernel.size(); ++i) {
        if (n.kernel[i] == 0) n.kernel[i] = ws[i + 2];
        if (n.kernel[i] != ws[i + 2]) {
          return NodeError(n, absl::StrCat("kernel_shape ", ShapeToString(n.kernel),
                                           " disagrees with weights ", ShapeToString(ws)));
        }
      }
      n.group = attrs.Int("group", 1);
      if (n.group < 1 || ws[0] % n.group != 0) {
        return NodeError(n, absl::StrCat("group ", n.group, " does not divide ", ws[0],
                                         " output channels"));
      }
      if (HasInput(n, 2) && !graph_.IsConstant(n.inputs[2])) {
        return NotConstant(n, "bias", n.inputs[2]);
      }
    } else if (op == "Gemm") {
      n.op = OpKind::kGemm;
      n.alpha = attrs.Float("alpha", 1.0f);
      n.beta = attrs.Float("beta", 1.0f);
      n.trans_a = attrs.Int("transA", 0) != 0;
      n.trans_b = attrs.Int("transB", 0) != 0;
      attrs.Ignore("broadcast");  // opset < 7: C always broadcasts unidirectionally here
      if (n.inputs.size() < 2) return NodeError(n, "needs inputs A and B");
      if (!graph_.IsConstant(n.inputs[1])) return NotConstant(n, "B", n.inputs[1]);
      if (HasInput(n, 2) && !graph_.IsConstant(n.inputs[2])) {
        // C computed at run time: Gemm without C, then Add (beta 1 only: beta * C would need a
        // Mul of its own).
        if (n.beta != 1.0f) {
          return attrs.Unsupported("beta", absl::StrCat(n.beta, " with a C computed at run time"));
        }
        RETURN_IF_ERROR(attrs.CheckAllUsed());
        Node add;
        add.name = absl::StrCat(n.name, "/add_C");
        add.onnx_op = "Add";
        add.op = OpKind::kAdd;
        add.inputs = {absl::StrCat(n.outputs[0], "/without_C"), n.inputs[2]};
        add.outputs = n.outputs;
        n.outputs = {add.inputs[0]};
        n.inputs.resize(2);
        graph_.nodes.push_back(std::move(n));
        graph_.nodes.push_back(std::move(add));
        return absl::OkStatus();
      }
    } else if (op == "MatMul") {
      n.op = OpKind::kMatMul;
      if (n.inputs.size() != 2) return NodeError(n, "needs two inputs");
      if (!graph_.IsConstant(n.inputs[0]) && !graph_.IsConstant(n.inputs[1])) {
        return NodeError(n, "one operand must be a constant (weights)");
      }
    } else if (op == "Relu") {
      n.op = OpKind::kRelu;
    } else if (op == "LeakyRelu") {
      n.op = OpKind::kLeakyRelu;
      n.alpha = attrs.Float("alpha", 0.01f);
    } else if (op == "Sigmoid") {
      n.op = OpKind::kSigmoid;
    } else if (op == "Clip") {
      n.op = OpKind::kClip;
      n.alpha = -FLT_MAX;
      n.beta = FLT_MAX;
      if (opset < 11) {
        n.alpha = attrs.Float("min", -FLT_MAX);
        n.beta = attrs.Float("max", FLT_MAX);
      } else {
        if (HasInput(n, 1)) { ASSIGN_OR_RETURN(n.alpha, ConstantScalar(n, 1)); }
        if (HasInput(n, 2)) { ASSIGN_OR_RETURN(n.beta, ConstantScalar(n, 2)); }
        n.inputs.resize(1);
      }
    } else if (op == "MaxPool" || op == "AveragePool") {
      const bool is_max = op == "MaxPool";
      n.op = is_max ? OpKind::kMaxPool : OpKind::kAveragePool;
      const int spatial = static_cast<int>(attrs.Ints("kernel_shape").size());
      RETURN_IF_ERROR(ReadSpatial(attrs, n, spatial, is_max));
      n.ceil_mode = attrs.Int("ceil_mode", 0) != 0;
      if (is_max) {
        RETURN_IF_ERROR(attrs.RequireInt("storage_order", 0));
        RETURN_IF_ERROR(RequireUnusedExtraOutputs(proto, n));
      } else {
        n.count_include_pad = attrs.Int("count_include_pad", 0) != 0;
      }
    } else if (op == "GlobalAveragePool") {
      n.op = OpKind::kGlobalAveragePool;
    } else if (op == "Concat") {
      n.op = OpKind::kConcat;
      const auto* axis = attrs.Find("axis");
      if (axis == nullptr && opset >= 4) return NodeError(n, "attribute 'axis' is required");
      n.axis = axis ? axis->i() : 1;  // Concat-1 defaults to 1
    } else if (op == "Add" || op == "Mul") {
      n.op = op == "Add" ? OpKind::kAdd : OpKind::kMul;
      attrs.Ignore("broadcast");  // opset < 7; numpy broadcasting covers the axis-less form
      if (n.inputs.size() != 2) return NodeError(n, "needs two inputs");
    } else if (op == "BatchNormalization") {
      n.op = OpKind::kBatchNorm;
      n.epsilon = attrs.Float("epsilon", 1e-5f);
      attrs.Ignore("momentum");  // training-only
      RETURN_IF_ERROR(attrs.RequireInt("training_mode", 0));
      RETURN_IF_ERROR(attrs.RequireInt("spatial", 1));
      if (opset < 7) RETURN_IF_ERROR(RequireTestMode(attrs, n));
      RETURN_IF_ERROR(RequireUnusedExtraOutputs(proto, n));
      if (n.inputs.size() != 5) return NodeError(n, "needs inputs X, scale, B, mean, var");
      for (int i = 1; i < 5; ++i) {
        if (!graph_.IsConstant(n.inputs[i])) return NotConstant(n, "input", n.inputs[i]);
      }
    } else if (op == "Flatten") {
      n.op = OpKind::kFlatten;
      n.axis = attrs.Int("axis", 1);
    } else if (op == "Reshape") {
      n.op = OpKind::kReshape;
      n.allowzero = attrs.Int("allowzero", 0) != 0;
      if (n.inputs.size() != 2) return NodeError(n, "needs inputs data and shape");
      ASSIGN_OR_RETURN(n.target_shape, ConstantInts(n, 1));
      // A target computed for the batch of the import (PyTorch bakes x.size(0) in) copies the
      // batch instead, so the network compiles for any batch.
      const Shape* in_shape = StaticShape(n.inputs[0]);
      if (!n.allowzero && import_batch_ > 0 && !n.target_shape.empty() &&
          n.target_shape[0] == import_batch_ && in_shape != nullptr && !in_shape->empty() &&
          (*in_shape)[0] == import_batch_) {
        n.target_shape[0] = 0;
      }
      n.inputs.resize(1);
    } else if (op == "Squeeze" || op == "Unsqueeze") {
      n.op = op == "Squeeze" ? OpKind::kSqueeze : OpKind::kUnsqueeze;
      if (opset < 13) {
        n.axes = attrs.Ints("axes");
      } else if (HasInput(n, 1)) {
        ASSIGN_OR_RETURN(n.axes, ConstantInts(n, 1));
      }
      n.inputs.resize(1);
      if (n.op == OpKind::kUnsqueeze && n.axes.empty()) return NodeError(n, "needs axes");
    } else if (op == "Dropout") {
      n.op = OpKind::kIdentity;
      attrs.Ignore("ratio");
      attrs.Ignore("seed");
      if (opset < 7) RETURN_IF_ERROR(RequireTestMode(attrs, n));
      if (HasInput(n, 2)) {
        auto it = graph_.constants.find(n.inputs[2]);
        bool training = it == graph_.constants.end();  // runtime flag: cannot promise inference
        if (!training) {
          const Tensor& t = it->second;
          training = t.dtype() == DataType::kInt64 ? t.int64s().at(0) != 0 : t.floats().at(0) != 0;
        }
        if (training) return NodeError(n, "training_mode must be a constant false");
      }
      RETURN_IF_ERROR(RequireUnusedExtraOutputs(proto, n));
      n.inputs.resize(1);
    } else if (op == "Identity") {
      n.op = OpKind::kIdentity;
    } else if (op == "LRN") {
      n.op = OpKind::kLrn;
      n.alpha = attrs.Float("alpha", 1e-4f);
      n.beta = attrs.Float("beta", 0.75f);
      n.bias = attrs.Float("bias", 1.0f);
      n.size = attrs.Int("size", 0);
      if (n.size < 1) return NodeError(n, "attribute 'size' must be >= 1");
      if (n.size % 2 == 0) {
        return attrs.Unsupported("size", absl::StrCat(n.size, " (only odd window sizes)"));
      }
    } else if (op == "Softmax") {
      n.op = OpKind::kSoftmax;
      n.softmax_coerce_2d = opset < 13;
      n.axis = attrs.Int("axis", opset < 13 ? 1 : -1);
    } else if (op == "HardSigmoid") {
      n.op = OpKind::kHardSigmoid;
      n.alpha = attrs.Float("alpha", 0.2f);
      n.beta = attrs.Float("beta", 0.5f);
    } else if (op == "HardSwish") {
      n.op = OpKind::kHardSwish;
    } else if (op == "Tanh") {
      n.op = OpKind::kTanh;
    } else if (op == "Sub" || op == "Div") {
      n.op = op == "Sub" ? OpKind::kSub : OpKind::kDiv;
      attrs.Ignore("broadcast");
      if (n.inputs.size() != 2) return NodeError(n, "needs two inputs");
    } else if (op == "Pad") {
      n.op = OpKind::kPad;
      n.pad_mode = attrs.String("mode", "constant");
      if (n.pad_mode != "constant" && n.pad_mode != "reflect" && n.pad_mode != "edge") {
        return attrs.Unsupported("mode", n.pad_mode);
      }
      if (opset < 11) {
        n.pads = attrs.Ints(opset < 2 ? "paddings" : "pads");
        n.alpha = attrs.Float("value", 0.0f);
      } else {
        if (!HasInput(n, 1)) return NodeError(n, "needs pads");
        ASSIGN_OR_RETURN(n.pads, ConstantInts(n, 1));
        if (HasInput(n, 2)) { ASSIGN_OR_RETURN(n.alpha, ConstantScalar(n, 2)); }
        if (HasInput(n, 3)) {
          // Opset 18's axes input; not in opsets up to 17, kept for a clear message.
          return NodeError(n, "the axes input is not supported");
        }
      }
      n.inputs.resize(1);
    } else if (op == "ReduceMean" || op == "ReduceMax") {
      n.op = op == "ReduceMean" ? OpKind::kReduceMean : OpKind::kReduceMax;
      n.axes = attrs.Ints("axes");
      n.keepdims = attrs.Int("keepdims", 1) != 0;
      if (HasInput(n, 1)) return NodeError(n, "axes given as an input are not supported");
    } else if (op == "Transpose") {
      n.op = OpKind::kTranspose;
      n.axes = attrs.Ints("perm");
    } else if (op == "Slice") {
      n.op = OpKind::kSlice;
      if (opset < 10) {
        n.starts = attrs.Ints("starts");
        n.ends = attrs.Ints("ends");
        n.axes = attrs.Ints("axes");
      } else {
        if (!HasInput(n, 1) || !HasInput(n, 2)) return NodeError(n, "needs starts and ends");
        ASSIGN_OR_RETURN(n.starts, ConstantInts(n, 1));
        ASSIGN_OR_RETURN(n.ends, ConstantInts(n, 2));
        if (HasInput(n, 3)) { ASSIGN_OR_RETURN(n.axes, ConstantInts(n, 3)); }
        if (HasInput(n, 4)) { ASSIGN_OR_RETURN(n.steps, ConstantInts(n, 4)); }
      }
      if (n.axes.empty()) {
        for (size_t i = 0; i < n.starts.size(); ++i) n.axes.push_back(static_cast<int64_t>(i));
      }
      if (n.steps.empty()) n.steps.assign(n.starts.size(), 1);
      if (n.starts.size() != n.ends.size() || n.axes.size() != n.starts.size() ||
          n.steps.size() != n.starts.size()) {
        return NodeError(n, "starts, ends, axes and steps differ in length");
      }
      n.inputs.resize(1);
    } else if (op == "Split") {
      return AddSplit(proto, n, attrs);
    } else {
      return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", op, "): operator ", op,
                                                   " is not supported. Supported: ",
                                                   absl::StrJoin(SupportedOnnxOperators(), ", ")));
    }
    RETURN_IF_ERROR(attrs.CheckAllUsed());
    if (n.outputs.empty() || n.outputs[0].empty()) return NodeError(n, "has no output");
    // Data inputs must be float: int64 constants are only parameters (consumed above).
    for (const std::string& in : n.inputs) {
      auto it = graph_.constants.find(in);
      if (it != graph_.constants.end() && it->second.dtype() != DataType::kFloat) {
        return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", op, "): input '",
                                                     in, "' is int64; only float32 data is "
                                                     "supported"));
      }
    }
    graph_.nodes.push_back(std::move(n));
    return absl::OkStatus();
  }

  struct Unsupported {
    std::string op, node, message;
  };

  const onnx::ModelProto& model_;
  const google::protobuf::RepeatedPtrField<onnx::TensorProto>& initializers_;
  std::map<std::string, Tensor>* preloaded_;
  const ImportOptions& options_;
  Graph graph_;
  std::map<std::string, Shape> static_shapes_;
  std::set<std::string> folded_int64_;  // int64 values folded from nodes (StaticShape)
  size_t folded_at_inference_ = 0;      // folded_int64_'s size at the last inference
  std::map<std::string, int> producers_;           // value -> index of its ONNX node
  std::map<std::string, std::string> not_folded_;  // value -> why folding its node failed
  std::vector<Unsupported> unsupported_;
  std::set<std::string> read_by_unfolded_;  // inputs of the nodes that were not folded
  int64_t import_batch_ = 0;
};

}  // namespace

const std::vector<std::string>& SupportedOnnxOperators() {
  static const std::vector<std::string> kOps = {
      "Conv",     "Gemm",      "MatMul",  "Relu",    "LeakyRelu",     "Clip",
      "Sigmoid",  "MaxPool",   "AveragePool", "GlobalAveragePool", "Concat", "Add",
      "Mul",      "BatchNormalization", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
      "Dropout",  "LRN",       "Softmax", "Identity", "Constant", "HardSigmoid", "HardSwish",
      "Tanh",     "Sub",       "Div",     "Pad",     "ReduceMean",    "ReduceMax", "Transpose",
      "Slice",    "Split"};
  return kOps;
}

std::string SupportedOperatorsHelp() {
  std::vector<std::string> ops = SupportedOnnxOperators();
  std::sort(ops.begin(), ops.end());
  auto wrap = [](const std::vector<std::string>& names) {
    std::string out = "  ";
    size_t column = 2;
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string item = names[i] + (i + 1 < names.size() ? "," : "");
      if (column + item.size() + 1 > 96) {
        absl::StrAppend(&out, "\n  ");
        column = 2;
      } else if (i > 0) {
        absl::StrAppend(&out, " ");
        ++column;
      }
      absl::StrAppend(&out, item);
      column += item.size();
    }
    return out + "\n";
  };
  return absl::StrCat(
      "ONNX operators bitsweep runs (default domain, opsets ", kMinOpset, "-", kMaxOpset,
      ", float32 data):\n", wrap(ops),
      "Evaluated once at import when all their inputs are constant (shape arithmetic, weights\n"
      "through Identity, Cast or Transpose), whatever the list above says:\n",
      wrap(FoldableOperators()),
      "BatchNormalization after a Conv folds into it; Dropout is an identity; Split becomes one\n"
      "Slice per output. Quantizable layers: Conv (incl. grouped and depthwise), Gemm, and MatMul\n"
      "with a constant operand. An unsupported model is refused with every unsupported node\n"
      "listed. Quantizer placement per operator: docs/QUANTIZATION.md.\n");
}

absl::StatusOr<onnx::ModelProto> ReadOnnxModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open model file '", path, "'"));
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not an ONNX model (protobuf "
                                                   "parse failed)"));
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError(absl::StrCat("ONNX model '", path, "' has no graph"));
  }
  return model;
}

namespace {

// Initializers with more elements than this are copied into the checker's model with placeholder
// data: the checker only asks for one value field, and shape inference reads the data of small
// (shape) tensors only. Keeps loading from holding a second copy of the weights.
constexpr int64_t kStripElements = 1024;

// `init` with its data replaced by one placeholder element when it is a large float/int tensor.
onnx::TensorProto StrippedInitializer(const onnx::TensorProto& init) {
  // Dimensions that are negative or overflow are kept for the checker and TensorFromProto to
  // refuse.
  const std::optional<int64_t> elements =
      CheckedNumElements(Shape(init.dims().begin(), init.dims().end()));
  const bool external = init.has_data_location() &&
                        init.data_location() == onnx::TensorProto::EXTERNAL;
  if (!elements || *elements <= kStripElements || external) return init;
  onnx::TensorProto t;
  t.set_name(init.name());
  t.set_data_type(init.data_type());
  *t.mutable_dims() = init.dims();
  if (!init.raw_data().empty()) {
    t.set_raw_data(std::string(1, '\0'));
  } else if (init.float_data_size() > 0) {
    t.add_float_data(0);
  } else if (init.int32_data_size() > 0) {
    t.add_int32_data(0);
  } else if (init.int64_data_size() > 0) {
    t.add_int64_data(0);
  } else if (init.double_data_size() > 0) {
    t.add_double_data(0);
  } else if (init.uint64_data_size() > 0) {
    t.add_uint64_data(0);
  } else {
    return init;  // strings and empty tensors: kept as they are
  }
  return t;
}

// A copy of `model` for the checker and shape inference, without the bulk of the weights.
onnx::ModelProto CheckerCopy(const onnx::ModelProto& model) {
  onnx::ModelProto checked;
  if (model.has_ir_version()) checked.set_ir_version(model.ir_version());
  *checked.mutable_opset_import() = model.opset_import();
  if (model.has_producer_name()) checked.set_producer_name(model.producer_name());
  if (model.has_producer_version()) checked.set_producer_version(model.producer_version());
  if (model.has_domain()) checked.set_domain(model.domain());
  if (model.has_model_version()) checked.set_model_version(model.model_version());
  if (model.has_doc_string()) checked.set_doc_string(model.doc_string());
  *checked.mutable_metadata_props() = model.metadata_props();
  *checked.mutable_training_info() = model.training_info();
  *checked.mutable_functions() = model.functions();
  const onnx::GraphProto& g = model.graph();
  onnx::GraphProto* out = checked.mutable_graph();
  *out->mutable_node() = g.node();
  if (g.has_name()) out->set_name(g.name());
  for (const onnx::TensorProto& init : g.initializer()) {
    *out->add_initializer() = StrippedInitializer(init);
  }
  *out->mutable_sparse_initializer() = g.sparse_initializer();
  if (g.has_doc_string()) out->set_doc_string(g.doc_string());
  *out->mutable_input() = g.input();
  *out->mutable_output() = g.output();
  *out->mutable_value_info() = g.value_info();
  *out->mutable_quantization_annotation() = g.quantization_annotation();
  return checked;
}

// The ONNX field numbers the model file reader looks at.
constexpr int kModelGraphField = 7;        // ModelProto.graph
constexpr int kGraphInitializerField = 5;  // GraphProto.initializer
constexpr int kTensorRawDataField = 9;     // TensorProto.raw_data

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

constexpr uint32_t LengthDelimitedTag(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}

// A model file whose large initializers' raw data was read straight into Tensors.
struct ModelFile {
  onnx::ModelProto model;  // those initializers keep one placeholder byte of raw data
  std::map<std::string, Tensor> weights;  // their values, by initializer name
};

// Copies the field whose `tag` was just read from `in` to `out`, unchanged.
bool CopyField(CodedInputStream* in, uint32_t tag, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  CodedOutputStream coded(&stream);
  return WireFormatLite::SkipField(in, tag, &coded);
}

// Appends a length-delimited field to `out`.
void AppendBytesField(uint32_t tag, const std::string& bytes, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  CodedOutputStream coded(&stream);
  coded.WriteTag(tag);
  coded.WriteVarint32(static_cast<uint32_t>(bytes.size()));
  coded.WriteString(bytes);
}

// Reads a TensorProto of `size` bytes. Raw float/int64 data of more than kStripElements values
// goes straight into a Tensor (stored in `weights` under the tensor's name), and the proto keeps
// one placeholder byte, as StrippedInitializer leaves it; anything else stays in the proto.
bool ReadInitializer(CodedInputStream* in, uint32_t size, onnx::TensorProto* proto,
                     std::map<std::string, Tensor>* weights) {
  const CodedInputStream::Limit limit = in->PushLimit(static_cast<int>(size));
  std::string fields;  // everything but preloaded raw data, serialized
  std::optional<Tensor> values;
  while (const uint32_t tag = in->ReadTag()) {
    if (tag != LengthDelimitedTag(kTensorRawDataField) || values) {
      if (!CopyField(in, tag, &fields)) return false;
      continue;
    }
    uint32_t bytes = 0;
    if (!in->ReadVarint32(&bytes)) return false;
    onnx::TensorProto head;  // the fields before the raw data: dims and type, in practice
    if (!head.ParseFromString(fields)) return false;
    const Shape shape(head.dims().begin(), head.dims().end());
    const bool all_sizes = std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d >= 0; });
    const int64_t n = all_sizes ? NumElements(shape) : -1;
    const bool is_float = head.data_type() == onnx::TensorProto::FLOAT;
    const bool is_int64 = head.data_type() == onnx::TensorProto::INT64;
    if (n > kStripElements && (is_float || is_int64) &&
        static_cast<int64_t>(bytes) == n * (is_float ? 4 : 8)) {
      values = is_float ? Tensor::Float(shape)
                        : Tensor::Int64(shape, std::vector<int64_t>(static_cast<size_t>(n)));
      void* data = is_float ? static_cast<void*>(values->floats().data())
                            : static_cast<void*>(values->int64s().data());
      if (!in->ReadRaw(data, static_cast<int>(bytes))) return false;
      AppendBytesField(tag, std::string(1, '\0'), &fields);
    } else {
      std::string raw;
      if (!in->ReadString(&raw, static_cast<int>(bytes))) return false;
      AppendBytesField(tag, raw, &fields);
    }
  }
  if (!in->ConsumedEntireMessage()) return false;
  in->PopLimit(limit);
  if (!proto->ParseFromString(fields)) return false;
  if (values) (*weights)[proto->name()] = *std::move(values);
  return true;
}

// Reads a GraphProto of `size` bytes into `out` (serialized), its initializers through
// ReadInitializer.
bool ReadGraph(CodedInputStream* in, uint32_t size, std::string* out,
               std::map<std::string, Tensor>* weights) {
  const CodedInputStream::Limit limit = in->PushLimit(static_cast<int>(size));
  while (const uint32_t tag = in->ReadTag()) {
    if (tag != LengthDelimitedTag(kGraphInitializerField)) {
      if (!CopyField(in, tag, out)) return false;
      continue;
    }
    uint32_t bytes = 0;
    onnx::TensorProto init;
    if (!in->ReadVarint32(&bytes) || !ReadInitializer(in, bytes, &init, weights)) return false;
    AppendBytesField(tag, init.SerializeAsString(), out);
  }
  if (!in->ConsumedEntireMessage()) return false;
  in->PopLimit(limit);
  return true;
}

// ReadOnnxModel, except that the weights are read once, into their Tensors: protobuf would hold
// them in strings (growing a string above 50 MB by doubling) before they are copied out.
absl::StatusOr<ModelFile> ReadModelFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open model file '", path, "'"));
  google::protobuf::io::FileInputStream file(fd);
  file.SetCloseOnDelete(true);
  CodedInputStream in(&file);
  in.SetTotalBytesLimit(std::numeric_limits<int>::max());
  ModelFile result;
  std::string fields, graph;  // the model's fields but its graph; the graph's
  bool ok = true;
  while (ok) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      ok = in.ConsumedEntireMessage();
      break;
    }
    if (tag == LengthDelimitedTag(kModelGraphField)) {
      uint32_t bytes = 0;
      ok = in.ReadVarint32(&bytes) && ReadGraph(&in, bytes, &graph, &result.weights);
    } else {
      ok = CopyField(&in, tag, &fields);
    }
  }
  // A repeated message field merges its occurrences, as concatenating their bytes does.
  if (!ok || !result.model.ParseFromString(fields) ||
      (!graph.empty() && !result.model.mutable_graph()->ParseFromString(graph))) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not an ONNX model (protobuf "
                                                   "parse failed)"));
  }
  if (!result.model.has_graph()) {
    return absl::InvalidArgumentError(absl::StrCat("ONNX model '", path, "' has no graph"));
  }
  return result;
}


// Checks `model` (on a copy without the bulk of its weights) and imports it; `preloaded` (may be
// null) holds the values of initializers whose data `model` leaves out.
absl::StatusOr<Graph> CheckAndImport(const onnx::ModelProto& model,
                                     std::map<std::string, Tensor>* preloaded,
                                     const ImportOptions& options, const std::string& source) {
  onnx::ModelProto checked = CheckerCopy(model);
  // A dynamic leading dimension of a runtime input is bound to the import batch, so that shape
  // computations on it fold (Reshape targets computed from it keep copying the batch: see the
  // Reshape import). Other dynamic dimensions stay unknown.
  std::set<std::string> constant_names;
  for (const auto& init : checked.graph().initializer()) constant_names.insert(init.name());
  for (const auto& [name, tensor] : options.bound_inputs) constant_names.insert(name);
  for (auto& in : *checked.mutable_graph()->mutable_input()) {
    if (!in.type().has_tensor_type()) continue;
    auto* shape = in.mutable_type()->mutable_tensor_type()->mutable_shape();
    // An input given a value (`bitsweep run`) has that value's shape, dynamic dimensions too.
    auto bound = options.bound_inputs.find(in.name());
    if (bound != options.bound_inputs.end()) {
      const Shape& dims = bound->second.shape();
      if (shape->dim_size() == static_cast<int>(dims.size())) {
        for (size_t d = 0; d < dims.size(); ++d) {
          if (!shape->dim(d).has_dim_value()) shape->mutable_dim(d)->set_dim_value(dims[d]);
        }
      }
      continue;
    }
    if (constant_names.count(in.name())) continue;
    if (shape->dim_size() > 0 && !shape->dim(0).has_dim_value()) {
      shape->mutable_dim(0)->set_dim_value(options.batch);
    }
  }
  // libonnx's shape inference divides by strides and dilations unchecked (a zero stride kills
  // the process with SIGFPE: found by fuzz_onnx_import), so window attributes are checked first.
  for (const onnx::NodeProto& node : checked.graph().node()) {
    for (const onnx::AttributeProto& attribute : node.attribute()) {
      const std::string& a = attribute.name();
      if (a != "strides" && a != "dilations" && a != "kernel_shape") continue;
      for (int64_t v : attribute.ints()) {
        if (v < 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              source, ": node '", node.name(), "' (", node.op_type(), "): attribute '", a,
              "' has ", v, "; every value must be >= 1"));
        }
      }
    }
  }
  try {
    onnx::checker::check_model(checked);
    onnx::shape_inference::InferShapes(checked, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true,
                                                                   /*strict_mode=*/1));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid ONNX model: ", e.what()));
  }
  return Importer(checked, model.graph().initializer(), preloaded, options, source).Run();
}

}  // namespace

absl::StatusOr<Graph> ImportOnnxModel(const onnx::ModelProto& model, const ImportOptions& options,
                                      const std::string& source) {
  return CheckAndImport(model, nullptr, options, source);
}

absl::StatusOr<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options) {
  ASSIGN_OR_RETURN(ModelFile file, ReadModelFile(path));
  return CheckAndImport(file.model, &file.weights, options, path);
}

}  // namespace bitsweep::engine
