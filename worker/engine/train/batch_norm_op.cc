// BatchNormalization for training: batch statistics in training mode (and the running mean and
// variance updated with the node's momentum and the unbiased batch variance), running statistics
// in eval mode; backward gives the input, scale and shift gradients.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

class BatchNormOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const memory x = net.ViewOf(net.V(in[0]).mem, dims);
    const memory y = net.ViewOf(net.V(out).mem, dims);
    if (step.training) {
      Args args = {{DNNL_ARG_SRC, x},
                   {DNNL_ARG_SCALE, net.V(in[1]).mem},
                   {DNNL_ARG_SHIFT, net.V(in[2]).mem},
                   {DNNL_ARG_MEAN, batch_mean},
                   {DNNL_ARG_VARIANCE, batch_var},
                   {DNNL_ARG_DST, y}};
      if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
      net.Exec(fwd_train, args);
      if (step.update_running_stats && running_mean_stat >= 0) {
        net.Sync();
        float* rm = net.stats_[running_mean_stat].value.floats().data();
        float* rv = net.stats_[running_var_stat].value.floats().data();
        const float* bm = Data(batch_mean);
        const float* bv = Data(batch_var);
        const int64_t c = dims[1];
        const double count = static_cast<double>(Product(Shape(dims.begin(), dims.end()), 0,
                                                         dims.size())) / c;
        const double unbias = count > 1 ? count / (count - 1) : 1.0;
        for (int64_t i = 0; i < c; ++i) {
          rm[i] = static_cast<float>(momentum * rm[i] + (1 - momentum) * bm[i]);
          rv[i] = static_cast<float>(momentum * rv[i] + (1 - momentum) * bv[i] * unbias);
        }
      }
    } else {
      net.Exec(fwd_eval, {{DNNL_ARG_SRC, x},
                          {DNNL_ARG_SCALE, net.V(in[1]).mem},
                          {DNNL_ARG_SHIFT, net.V(in[2]).mem},
                          {DNNL_ARG_MEAN, running_mean},
                          {DNNL_ARG_VARIANCE, running_var},
                          {DNNL_ARG_DST, y}});
    }
  }
  void BuildBackward(Impl& net) override {
    const memory::desc d = PlainDesc(dims);
    dnnl::batch_normalization_backward::desc bd(
        dnnl::prop_kind::backward, d, d, epsilon,
        dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift);
    bwd = dnnl::batch_normalization_backward({bd, net.engine_, fwd_train_pd});
    const int64_t c = dims[1];
    diff_x = grads[0].needed() ? net.ViewOf(grads[0].mem, dims) : net.NewMem(dims);
    diff_scale = grads[1].needed() ? grads[1].mem : net.NewMem({c});
    diff_shift = grads[2].needed() ? grads[2].mem : net.NewMem({c});
  }
  void Backward(Impl& net) override {
    Args args = {{DNNL_ARG_SRC, net.ViewOf(net.V(in[0]).mem, dims)},
                 {DNNL_ARG_MEAN, batch_mean},
                 {DNNL_ARG_VARIANCE, batch_var},
                 {DNNL_ARG_DIFF_DST, net.ViewOf(net.V(out).diff, dims)},
                 {DNNL_ARG_SCALE, net.V(in[1]).mem},
                 {DNNL_ARG_SHIFT, net.V(in[2]).mem},
                 {DNNL_ARG_DIFF_SRC, diff_x},
                 {DNNL_ARG_DIFF_SCALE, diff_scale},
                 {DNNL_ARG_DIFF_SHIFT, diff_shift}};
    if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
    net.Exec(bwd, args);
  }

  Dims dims;  // [N, C, spatial...] (a rank-2 input gets a unit spatial dimension)
  float epsilon = 1e-5f;
  double momentum = 0.9;
  dnnl::batch_normalization_forward::primitive_desc fwd_train_pd;
  dnnl::batch_normalization_forward fwd_train, fwd_eval;
  memory batch_mean, batch_var, workspace;
  memory running_mean, running_var;
  int running_mean_stat = -1, running_var_stat = -1;  // indices into stats_, -1: not updated
  dnnl::batch_normalization_backward bwd;
  memory diff_x, diff_scale, diff_shift;
};

}  // namespace

absl::Status Impl::CompileBatchNorm(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape shape = vals_[x_id].shape;
  if (shape.size() < 2) return NodeError(n, "input needs a channel dimension");
  const int64_t c = shape[1];
  auto op = std::make_unique<BatchNormOp>(n);
  op->in = {x_id};
  for (int i = 1; i <= 2; ++i) {
    ASSIGN_OR_RETURN(int id, Get(n.inputs[i], n));
    if (NumElements(vals_[id].shape) != c) {
      return NodeError(n, absl::StrCat("input '", n.inputs[i], "' needs ", c, " float values"));
    }
    op->in.push_back(id);
  }
  memory* running[2] = {&op->running_mean, &op->running_var};
  int* stat_ids[2] = {&op->running_mean_stat, &op->running_var_stat};
  for (int i = 0; i < 2; ++i) {
    const std::string& name = n.inputs[3 + i];
    auto t = graph_.constants.find(name);
    if (t == graph_.constants.end() || t->second.dtype() != DataType::kFloat ||
        t->second.num_elements() != c) {
      return NodeError(n, absl::StrCat("input '", name, "' needs ", c, " float constant values"));
    }
    auto s = stat_index_.find(name);
    if (s != stat_index_.end()) {
      *running[i] = memory(PlainDesc({c}), engine_, stats_[s->second].value.floats().data());
      *stat_ids[i] = s->second;
    } else {  // not an initializer: fixed
      *running[i] = NewMem({c});
      std::memcpy(running[i]->get_data_handle(), t->second.floats().data(), c * sizeof(float));
    }
  }
  op->dims = DnnlDims(shape);
  if (shape.size() == 2) op->dims.push_back(1);  // oneDNN wants a spatial dimension
  op->epsilon = n.epsilon;
  auto proto = proto_nodes_.find(n.name);
  if (proto != proto_nodes_.end()) {
    for (const auto& a : proto->second->attribute()) {
      if (a.name() == "momentum") op->momentum = a.f();
    }
  }
  const memory::desc d = PlainDesc(op->dims);
  const auto scale_shift =
      dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  dnnl::batch_normalization_forward::desc train_desc(dnnl::prop_kind::forward_training, d,
                                                     n.epsilon, scale_shift);
  op->fwd_train_pd = dnnl::batch_normalization_forward::primitive_desc(train_desc, engine_);
  op->fwd_train = dnnl::batch_normalization_forward(op->fwd_train_pd);
  op->batch_mean = memory(op->fwd_train_pd.mean_desc(), engine_);
  op->batch_var = memory(op->fwd_train_pd.variance_desc(), engine_);
  if (op->fwd_train_pd.workspace_desc().get_size() > 0) {
    op->workspace = memory(op->fwd_train_pd.workspace_desc(), engine_);
  }
  dnnl::batch_normalization_forward::desc eval_desc(
      dnnl::prop_kind::forward_inference, d, n.epsilon,
      scale_shift | dnnl::normalization_flags::use_global_stats);
  op->fwd_eval = dnnl::batch_normalization_forward({eval_desc, engine_});
  op->out = AddVal(n.outputs[0], shape);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
