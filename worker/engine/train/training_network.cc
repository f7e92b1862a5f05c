// TrainingNetwork assembly: imports the model, finds the trainable parameters and running
// statistics, compiles every node through its per-op file (*_op.cc, via CompileByOpKind), routes
// gradients (each value's first writer in backward order writes its diff, later ones accumulate),
// and runs the forward and backward loops; also WriteTo and EvaluateTrainingNetwork.
#include "worker/engine/train/training_network.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/train/network_impl.h"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/graph.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {

namespace {

void AddInto(float* dst, const float* src, int64_t n) {
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

namespace train_internal {

void Arranged::Bind(Impl& net, const memory& p, const memory::desc& wanted) {
  plain = p;
  if (p.get_desc() == wanted) {
    mem = p;
    reordered = false;
    return;
  }
  mem = memory(wanted, net.engine_);
  to_mem = dnnl::reorder(plain, mem);
  to_plain = dnnl::reorder(mem, plain);
  reordered = true;
}

void Arranged::In(Impl& net) const {
  if (reordered) net.Exec(to_mem, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, mem}});
}

void Arranged::Out(Impl& net) const {
  if (reordered) net.Exec(to_plain, {{DNNL_ARG_FROM, mem}, {DNNL_ARG_TO, plain}});
}

}  // namespace train_internal

// ---------------------------------------------------------------------------------------------
// Compilation.

absl::StatusOr<int> Impl::Get(const std::string& name, const Node& n) {
  auto it = ids_.find(name);
  if (it != ids_.end()) return it->second;
  auto p = param_index_.find(name);
  if (p != param_index_.end()) {
    Parameter& param = params_[p->second];
    const Dims dims = DnnlDims(param.value.shape());
    const int id = AddVal(name, param.value.shape(),
                          memory(PlainDesc(dims), engine_, param.value.floats().data()));
    vals_[id].param = p->second;
    vals_[id].needs_grad = true;
    vals_[id].diff = memory(PlainDesc(dims), engine_, param.grad.floats().data());
    return id;
  }
  auto c = graph_.constants.find(name);
  if (c == graph_.constants.end()) {
    return NodeError(n, absl::StrCat("input '", name, "' is undefined"));
  }
  if (c->second.dtype() != DataType::kFloat) {
    return NodeError(n, absl::StrCat("input '", name, "' is int64; float32 data is required"));
  }
  const int id = AddVal(name, c->second.shape());
  std::memcpy(vals_[id].mem.get_data_handle(), c->second.floats().data(),
              c->second.floats().size() * sizeof(float));
  return id;
}

absl::Status Impl::FindParameters(const onnx::ModelProto& model) {
  std::set<std::string> initializers;
  for (const auto& init : model.graph().initializer()) {
    if (init.data_type() == onnx::TensorProto::FLOAT) initializers.insert(init.name());
  }
  auto add_param = [&](const Node& n, size_t slot, ParameterRole role) {
    if (slot >= n.inputs.size() || n.inputs[slot].empty()) return;
    const std::string& name = n.inputs[slot];
    if (!initializers.count(name) || param_index_.count(name) || stat_index_.count(name)) return;
    auto c = graph_.constants.find(name);
    if (c == graph_.constants.end() || c->second.dtype() != DataType::kFloat) return;
    Parameter p;
    p.name = name;
    p.node = n.name;
    p.role = role;
    p.weight_decay = role == ParameterRole::kWeight;
    p.value = c->second;
    p.grad = Tensor::Float(c->second.shape());
    param_index_[name] = static_cast<int>(params_.size());
    params_.push_back(std::move(p));
  };
  auto add_stat = [&](const Node& n, size_t slot) {
    if (slot >= n.inputs.size()) return;
    const std::string& name = n.inputs[slot];
    if (!initializers.count(name) || param_index_.count(name) || stat_index_.count(name)) return;
    auto c = graph_.constants.find(name);
    if (c == graph_.constants.end() || c->second.dtype() != DataType::kFloat) return;
    stat_index_[name] = static_cast<int>(stats_.size());
    stats_.push_back(RunningStat{name, c->second});
  };
  auto add_batch_norm = [&](const Node& bn) {
    add_param(bn, 1, ParameterRole::kBatchNormScale);
    add_param(bn, 2, ParameterRole::kBatchNormShift);
    add_stat(bn, 3);
    add_stat(bn, 4);
  };
  for (const Node& n : graph_.nodes) {
    switch (n.op) {
      case OpKind::kConv:
      case OpKind::kGemm:
        add_param(n, 1, ParameterRole::kWeight);
        add_param(n, 2, ParameterRole::kBias);
        if (auto bn = folded_batch_norms_.find(n.name); bn != folded_batch_norms_.end()) {
          add_batch_norm(bn->second);
        }
        break;
      case OpKind::kMatMul:
        add_param(n, 1, ParameterRole::kWeight);
        break;
      case OpKind::kBatchNorm:
        add_batch_norm(n);
        break;
      case OpKind::kAdd:
        add_param(n, 0, ParameterRole::kBias);
        add_param(n, 1, ParameterRole::kBias);
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

absl::Status Impl::CompileNode(const Node& n) {
  return CompileByOpKind(*this, n, "cannot be trained: unknown operator kind");
}

absl::Status Impl::Build(const onnx::ModelProto& model) {
  if (options_.threads > 0) omp_set_num_threads(options_.threads);
  if (options_.batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must be >= 1, got ", options_.batch));
  }
  const std::string source = model.graph().name().empty() ? "<model>" : model.graph().name();
  ASSIGN_OR_RETURN(graph_, ImportOnnxModel(model, {}, source));
  FoldQuantizedBatchNorms();
  FuseActivations(&graph_);
  FindOutputHookPoints();
  for (int i = 0; i < model.graph().node_size(); ++i) {
    const onnx::NodeProto& p = model.graph().node(i);
    proto_nodes_[p.name().empty() ? absl::StrCat(p.op_type(), "_", i) : p.name()] = &p;
  }
  if (graph_.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": training needs exactly one runtime input, the model has ",
        graph_.inputs.size()));
  }
  const ValueInfo& input = graph_.inputs[0];
  if (!options_.sample_shape.empty()) {
    input_shape_ = {options_.batch};
    input_shape_.insert(input_shape_.end(), options_.sample_shape.begin(),
                        options_.sample_shape.end());
    if (!input.shape.empty() && input.shape.size() != input_shape_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": samples of shape ", ShapeToString(options_.sample_shape),
          " do not fit input '", input.name, "' ", ShapeToString(input.shape)));
    }
  } else {
    input_shape_ = input.shape;
    if (input_shape_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": input '", input.name,
                                                     "' needs a batch dimension"));
    }
    input_shape_[0] = options_.batch;
  }
  for (size_t i = 0; i < input_shape_.size(); ++i) {
    if (input_shape_[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": input '", input.name, "' has unknown dimension ", i, " in ",
          ShapeToString(input.shape), "; give the sample shape"));
    }
    if (i > 0 && i < input.shape.size() && input.shape[i] > 0 &&
        input.shape[i] != input_shape_[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": samples of shape ", ShapeToString(options_.sample_shape),
          " do not fit input '", input.name, "' ", ShapeToString(input.shape)));
    }
  }

  // The loss reads logits: a final Softmax is skipped and its input trained on.
  logits_name_ = graph_.outputs[0];
  int softmax = -1;
  const int producer = graph_.ProducerOf(logits_name_);
  if (producer >= 0 && graph_.nodes[producer].op == OpKind::kSoftmax) {
    softmax = producer;
    logits_name_ = graph_.nodes[producer].inputs[0];
  }
  RETURN_IF_ERROR(FindParameters(model));
  input_id_ = AddVal(input.name, input_shape_);
  vals_[input_id_].needs_grad = options_.input_gradient;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (static_cast<int>(i) == softmax) continue;
    const Node& n = graph_.nodes[i];
    try {
      RETURN_IF_ERROR(CompileNode(n));
      AddOutputHooks(n);
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                              "): oneDNN rejected it: ", e.what()));
    }
  }
  auto logits = ids_.find(logits_name_);
  if (logits == ids_.end() || logits->second == input_id_ || vals_[logits->second].param >= 0 ||
      graph_.IsConstant(logits_name_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": output '", logits_name_, "' is not computed from the input; nothing to train"));
  }
  logits_id_ = logits->second;
  const Shape& ls = vals_[logits_id_].shape;
  if (ls.size() < 2 || ls[0] != options_.batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": logits '", logits_name_, "' have shape ", ShapeToString(ls),
        "; training needs class scores [batch, classes]"));
  }
  if (softmax >= 0) {
    const Node& s = graph_.nodes[softmax];
    ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(s.axis, static_cast<int64_t>(ls.size()), s));
    if (!(axis == 1 && (ls.size() == 2 || s.softmax_coerce_2d))) {
      return NodeError(s, "cannot be trained: the final Softmax must normalize over the classes "
                          "(axis 1 of [batch, classes])");
    }
  }
  classes_ = NumElements(ls) / options_.batch;

  // Which values need gradients, who writes them, and the backward primitives.
  for (auto& op : ops_) {
    if (op->out < 0) continue;
    bool needs = false;
    for (int id : op->in) needs |= vals_[id].needs_grad;
    vals_[op->out].needs_grad = needs;
  }
  for (Val& v : vals_) {
    if (v.needs_grad && !v.diff) v.diff = memory(v.mem.get_desc(), engine_);
  }
  if (vals_[logits_id_].needs_grad) vals_[logits_id_].claimed = true;
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    Op& op = **it;
    op.grads.assign(op.in.size(), GradTarget());
    for (size_t i = 0; i < op.in.size(); ++i) {
      Val& v = vals_[op.in[i]];
      if (!v.needs_grad) continue;
      if (!v.claimed) {
        op.grads[i].mem = v.diff;
        v.claimed = true;
      } else {
        op.grads[i].mem = memory(v.diff.get_desc(), engine_);
        op.grads[i].accumulate_into = v.diff;
      }
    }
  }
  for (Val& v : vals_) {
    if (v.needs_grad && !v.claimed && v.param < 0) {
      std::memset(v.diff.get_data_handle(), 0, v.diff.get_desc().get_size());
    }
  }
  for (auto& op : ops_) {
    if (!op->AnyGrad()) continue;
    try {
      op->BuildBackward(*this);
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("node '", op->node, "' (", op->onnx_op,
                                              "): oneDNN rejected its backward pass: ", e.what()));
    }
  }
  return absl::OkStatus();
}

absl::Status Impl::Forward(const float* input, const StepOptions& step) {
  if (options_.threads > 0) omp_set_num_threads(options_.threads);
  const memory& in = vals_[input_id_].mem;
  std::memcpy(in.get_data_handle(), input, in.get_desc().get_size());
  for (auto& op : ops_) {
    try {
      op->Forward(*this, step);
    } catch (const dnnl::error& e) {
      return absl::InternalError(
          absl::StrCat("node '", op->node, "' (", op->onnx_op, ") failed: ", e.what()));
    }
  }
  Sync();
  return absl::OkStatus();
}

absl::StatusOr<BatchLoss> Impl::ForwardBackward(const float* input, const int* labels,
                                                const StepOptions& step) {
  for (int64_t i = 0; i < options_.batch; ++i) {
    if (labels[i] < 0 || labels[i] >= classes_) {
      return absl::InvalidArgumentError(absl::StrCat("label ", labels[i], " of row ", i,
                                                     " is outside [0, ", classes_, ")"));
    }
  }
  StepOptions s = step;
  s.training = true;
  RETURN_IF_ERROR(Forward(input, s));
  Val& logits = vals_[logits_id_];
  BatchLoss result;
  result.loss = SoftmaxCrossEntropy(Data(logits.mem), labels, options_.batch, classes_,
                                    logits.needs_grad ? Data(logits.diff) : nullptr,
                                    &result.correct);
  if (!logits.needs_grad) return result;
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    Op& op = **it;
    if (!op.AnyGrad()) continue;
    try {
      op.Backward(*this);
      for (GradTarget& g : op.grads) {
        if (!g.accumulate_into) continue;
        Sync();
        AddInto(Data(g.accumulate_into), Data(g.mem),
                static_cast<int64_t>(g.mem.get_desc().get_size() / sizeof(float)));
      }
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("node '", op.node, "' (", op.onnx_op,
                                              ") failed in the backward pass: ", e.what()));
    }
  }
  Sync();
  return result;
}

absl::Status Impl::WriteTo(onnx::ModelProto* model) const {
  std::set<std::string> written;
  for (onnx::TensorProto& init : *model->mutable_graph()->mutable_initializer()) {
    const Tensor* value = nullptr;
    if (auto p = param_index_.find(init.name()); p != param_index_.end()) {
      value = &params_[p->second].value;
    } else if (auto s = stat_index_.find(init.name()); s != stat_index_.end()) {
      value = &stats_[s->second].value;
    }
    if (value == nullptr) continue;
    int64_t count = 1;
    for (int64_t d : init.dims()) count *= d;
    if (count != value->num_elements()) {
      return absl::InvalidArgumentError(absl::StrCat("initializer '", init.name(), "' has ",
                                                     count, " values; the trained tensor has ",
                                                     value->num_elements()));
    }
    init.clear_float_data();
    init.clear_raw_data();
    init.set_data_type(onnx::TensorProto::FLOAT);
    init.set_raw_data(std::string(reinterpret_cast<const char*>(value->floats().data()),
                                  value->floats().size() * sizeof(float)));
    written.insert(init.name());
  }
  for (const Parameter& p : params_) {
    if (!written.count(p.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has no initializer '", p.name, "' to write back"));
    }
  }
  for (const RunningStat& s : stats_) {
    if (!written.count(s.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has no initializer '", s.name, "' to write back"));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

TrainingNetwork::TrainingNetwork(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TrainingNetwork::~TrainingNetwork() = default;

absl::StatusOr<std::unique_ptr<TrainingNetwork>> TrainingNetwork::Create(
    const onnx::ModelProto& model, const TrainingNetworkOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  try {
    RETURN_IF_ERROR(impl->Build(model));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("training network: oneDNN error: ", e.what()));
  }
  return std::unique_ptr<TrainingNetwork>(new TrainingNetwork(std::move(impl)));
}

int64_t TrainingNetwork::batch() const { return impl_->options_.batch; }
const Shape& TrainingNetwork::input_shape() const { return impl_->input_shape_; }
int64_t TrainingNetwork::num_classes() const { return impl_->classes_; }
const std::string& TrainingNetwork::logits_name() const { return impl_->logits_name_; }
std::vector<Parameter>& TrainingNetwork::parameters() { return impl_->params_; }
const std::vector<Parameter>& TrainingNetwork::parameters() const { return impl_->params_; }
Parameter* TrainingNetwork::FindParameter(const std::string& name) {
  auto it = impl_->param_index_.find(name);
  return it == impl_->param_index_.end() ? nullptr : &impl_->params_[it->second];
}
const std::vector<RunningStat>& TrainingNetwork::running_stats() const { return impl_->stats_; }

absl::Status TrainingNetwork::Forward(const float* input, const StepOptions& step) {
  return impl_->Forward(input, step);
}
absl::StatusOr<BatchLoss> TrainingNetwork::ForwardBackward(const float* input, const int* labels,
                                                           const StepOptions& step) {
  return impl_->ForwardBackward(input, labels, step);
}
const float* TrainingNetwork::logits() const { return Data(impl_->vals_[impl_->logits_id_].mem); }
const float* TrainingNetwork::input_gradient() const {
  const Val& in = impl_->vals_[impl_->input_id_];
  return in.diff ? Data(in.diff) : nullptr;
}
absl::Status TrainingNetwork::WriteTo(onnx::ModelProto* model) const {
  return impl_->WriteTo(model);
}

}  // namespace bitsweep::engine

namespace bitsweep::engine {

absl::StatusOr<EvalResult> EvaluateTrainingNetwork(TrainingNetwork& net, const Dataset& data) {
  if (data.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", data.reference, "' is empty"));
  }
  const int64_t batch = net.batch();
  const int64_t sample = NumElements(net.input_shape()) / batch;
  if (NumElements(data.sample_shape()) != sample) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", data.reference, "' has samples of shape ", ShapeToString(data.sample_shape()),
        "; the network takes ", ShapeToString(net.input_shape())));
  }
  const int64_t classes = net.num_classes();
  if (data.num_classes > classes) {
    return absl::InvalidArgumentError(absl::StrCat("dataset '", data.reference,
                                                   "' has labels up to ", data.num_classes - 1,
                                                   " but the model has ", classes, " classes"));
  }
  return ScoreDataset(data, batch, static_cast<int>(classes), /*probabilities=*/false,
                      [&net](const float* input) -> absl::StatusOr<const float*> {
                        RETURN_IF_ERROR(net.Forward(input, {.training = false}));
                        return net.logits();
                      });
}

}  // namespace bitsweep::engine
