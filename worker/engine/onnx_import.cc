#include "worker/engine/onnx_import.h"

#include <cfloat>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "onnx/checker.h"
#include "onnx/shape_inference/implementation.h"
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
  Importer(const onnx::ModelProto& model, const ImportOptions& options, std::string source)
      : model_(model), options_(options) {
    graph_.source = std::move(source);
  }

  absl::StatusOr<Graph> Run() {
    RETURN_IF_ERROR(ReadOpset());
    const onnx::GraphProto& g = model_.graph();
    for (const auto& init : g.initializer()) {
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
    for (int i = 0; i < g.node_size(); ++i) RETURN_IF_ERROR(AddNode(g.node(i), i));
    for (const auto& out : g.output()) graph_.outputs.push_back(out.name());
    if (graph_.outputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(graph_.source, ": the graph has no outputs"));
    }
    return std::move(graph_);
  }

 private:
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
    if (it == graph_.constants.end()) {
      return NodeError(n, absl::StrCat("input ", index, " ('", name, "') must be a constant"));
    }
    if (it->second.dtype() != DataType::kInt64) {
      return NodeError(n, absl::StrCat("input ", index, " ('", name, "') must be int64"));
    }
    return it->second.int64s();
  }
  absl::StatusOr<float> ConstantScalar(const Node& n, int index) {
    const std::string& name = n.inputs[index];
    auto it = graph_.constants.find(name);
    if (it == graph_.constants.end() || it->second.dtype() != DataType::kFloat ||
        it->second.num_elements() != 1) {
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
      if (w == graph_.constants.end() || w->second.dtype() != DataType::kFloat) {
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
        return NodeError(n, absl::StrCat("bias '", n.inputs[2], "' must be a constant"));
      }
    } else if (op == "Gemm") {
      n.op = OpKind::kGemm;
      n.alpha = attrs.Float("alpha", 1.0f);
      n.beta = attrs.Float("beta", 1.0f);
      n.trans_a = attrs.Int("transA", 0) != 0;
      n.trans_b = attrs.Int("transB", 0) != 0;
      attrs.Ignore("broadcast");  // opset < 7: C always broadcasts unidirectionally here
      if (n.inputs.size() < 2) return NodeError(n, "needs inputs A and B");
      if (!graph_.IsConstant(n.inputs[1])) {
        return NodeError(n, absl::StrCat("B ('", n.inputs[1], "') must be a constant"));
      }
      if (HasInput(n, 2) && !graph_.IsConstant(n.inputs[2])) {
        return NodeError(n, absl::StrCat("C ('", n.inputs[2], "') must be a constant"));
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
        if (!graph_.IsConstant(n.inputs[i])) {
          return NodeError(n, absl::StrCat("input '", n.inputs[i], "' must be a constant"));
        }
      }
    } else if (op == "Flatten") {
      n.op = OpKind::kFlatten;
      n.axis = attrs.Int("axis", 1);
    } else if (op == "Reshape") {
      n.op = OpKind::kReshape;
      n.allowzero = attrs.Int("allowzero", 0) != 0;
      if (n.inputs.size() != 2) return NodeError(n, "needs inputs data and shape");
      ASSIGN_OR_RETURN(n.target_shape, ConstantInts(n, 1));
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

  const onnx::ModelProto& model_;
  const ImportOptions& options_;
  Graph graph_;
};

}  // namespace

const std::vector<std::string>& SupportedOnnxOperators() {
  static const std::vector<std::string> kOps = {
      "Conv",     "Gemm",      "MatMul",  "Relu",    "LeakyRelu",     "Clip",
      "Sigmoid",  "MaxPool",   "AveragePool", "GlobalAveragePool", "Concat", "Add",
      "Mul",      "BatchNormalization", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
      "Dropout",  "LRN",       "Softmax", "Identity", "Constant"};
  return kOps;
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

absl::StatusOr<Graph> ImportOnnxModel(const onnx::ModelProto& model, const ImportOptions& options,
                                      const std::string& source) {
  onnx::ModelProto checked = model;
  try {
    onnx::checker::check_model(checked);
    onnx::shape_inference::InferShapes(checked, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true,
                                                                   /*strict_mode=*/1));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid ONNX model: ", e.what()));
  }
  return Importer(checked, options, source).Run();
}

absl::StatusOr<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options) {
  ASSIGN_OR_RETURN(onnx::ModelProto model, ReadOnnxModel(path));
  return ImportOnnxModel(model, options, path);
}

}  // namespace bitsweep::engine
