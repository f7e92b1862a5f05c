// Conv for training (groups, strides, dilations, pads): oneDNN convolution forward_training,
// backward_data and backward_weights (with the bias gradient), in the blocked layouts oneDNN
// chooses; the quantization hooks see copies of the input and the weights.
//
// A Conv with quantized weights and a BatchNormalization folded into it (FoldQuantizedBatchNorms,
// the pairs the emulation's FoldBatchNorm folds) runs as the emulation does: every forward pass
// folds the current W, B, gamma and beta with the frozen running mean and variance
// (quant::FoldBatchNormIntoConv: W' = W s, B' = (B - mean) s + beta, s = gamma / sqrt(var + eps)),
// quantizes W' through the weight hook and convolves with the folded bias. Backward: the
// straight-through estimator gives d/dW' = d/dQ(W'); then dW = dW' s, dB = dB' s, dbeta = dB',
// dgamma = (sum_k dW'[k] W[k] + dB' (B - mean)) / sqrt(var + eps).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "quant/bn_fold.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

// ---------------------------------------------------------------------------------------------
// Conv: convolution forward_training, backward_data and backward_weights (with bias).

class ConvOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const FakeQuantHooks& q = net.options_.quant;
    if (q.inputs) HookCopy(net, q.inputs, node, net.V(in[0]).mem, src.plain);
    if (fold) {
      FoldWeights(net);
      q.weights(node, Data(w_copy), NumElements(net.V(in[1]).shape));
    } else if (q.weights) {
      HookCopy(net, q.weights, node, net.V(in[1]).mem, w_copy);
    }
    src.In(net);
    weights.In(net);
    Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_WEIGHTS, weights.mem},
                 {DNNL_ARG_DST, dst.mem}};
    if (fold) {
      args[DNNL_ARG_BIAS] = fold->bias;
    } else if (has_bias) {
      args[DNNL_ARG_BIAS] = net.V(in[2]).mem;
    }
    net.Exec(fwd, args);
    dst.Out(net);
  }
  void BuildBackward(Impl& net) override {
    const Dims x_dims = net.V(in[0]).mem.get_desc().dims();
    const Dims y_dims = net.V(out).mem.get_desc().dims();
    if (grads[0].needed()) {
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct,
                                               AnyDesc(x_dims), AnyDesc(w_dims), AnyDesc(y_dims),
                                               strides, dilations, pb, pe);
      dnnl::convolution_backward_data::primitive_desc pd(d, net.engine_, fwd_pd);
      bwd_data = dnnl::convolution_backward_data(pd);
      bd_diff_dst.Bind(net, net.V(out).diff, pd.diff_dst_desc());
      if (pd.weights_desc() == weights.mem.get_desc()) {
        bd_weights.Share(weights);
      } else {
        bd_weights.Bind(net, weights.plain, pd.weights_desc());
      }
      bd_diff_src.Bind(net, grads[0].mem, pd.diff_src_desc());
    }
    const bool bias_grad = has_bias && grads[2].needed();
    bool weight_grads = grads[1].needed() || bias_grad;
    if (fold) weight_grads |= grads[fold->gamma].needed() || grads[fold->beta].needed();
    if (weight_grads) {
      // Folded: d/dW' and d/dB' into scratch, from which Backward derives the parameters'.
      memory diff_w;
      if (fold) {
        diff_w = fold->diff_w = net.NewMem(w_dims);
      } else {
        diff_w = grads[1].needed() ? net.ViewOf(grads[1].mem, w_dims) : net.NewMem(w_dims);
      }
      memory::desc bias_desc;
      if (fold) {
        bias_desc = PlainDesc({w_dims_oc});
        diff_b = net.NewMem({w_dims_oc});
      } else if (has_bias) {
        bias_desc = PlainDesc({w_dims_oc});
        diff_b = bias_grad ? grads[2].mem : net.NewMem({w_dims_oc});
      }
      dnnl::convolution_backward_weights::desc d(dnnl::algorithm::convolution_direct,
                                                  AnyDesc(x_dims), AnyDesc(w_dims), bias_desc,
                                                  AnyDesc(y_dims), strides, dilations, pb, pe);
      dnnl::convolution_backward_weights::primitive_desc pd(d, net.engine_, fwd_pd);
      bwd_weights = dnnl::convolution_backward_weights(pd);
      if (pd.src_desc() == src.mem.get_desc()) {
        bw_src.Share(src);
      } else {
        bw_src.Bind(net, src.plain, pd.src_desc());
      }
      if (bwd_data && pd.diff_dst_desc() == bd_diff_dst.mem.get_desc()) {
        bw_diff_dst.Share(bd_diff_dst);
      } else {
        bw_diff_dst.Bind(net, net.V(out).diff, pd.diff_dst_desc());
      }
      bw_diff_w.Bind(net, diff_w, pd.diff_weights_desc());
    }
  }
  void Backward(Impl& net) override {
    if (grads[0].needed()) {
      bd_diff_dst.In(net);
      bd_weights.In(net);
      net.Exec(bwd_data, {{DNNL_ARG_DIFF_DST, bd_diff_dst.mem},
                          {DNNL_ARG_WEIGHTS, bd_weights.mem},
                          {DNNL_ARG_DIFF_SRC, bd_diff_src.mem}});
      bd_diff_src.Out(net);
    }
    if (bwd_weights) {
      bw_src.In(net);
      bw_diff_dst.In(net);
      Args args = {{DNNL_ARG_SRC, bw_src.mem}, {DNNL_ARG_DIFF_DST, bw_diff_dst.mem},
                   {DNNL_ARG_DIFF_WEIGHTS, bw_diff_w.mem}};
      if (has_bias || fold) args[DNNL_ARG_DIFF_BIAS] = diff_b;
      net.Exec(bwd_weights, args);
      bw_diff_w.Out(net);
      if (fold) UnfoldGradients(net);
    }
  }

  // The frozen BatchNormalization folded into this Conv; its gamma and beta are inputs of the op.
  struct Fold {
    int gamma = 0, beta = 0;  // indices into `in` (and `grads`)
    absl::Span<const float> mean, var;
    float epsilon = 1e-5f;
    memory bias;            // folded bias, [oc]
    memory diff_w;          // d loss / d folded weights (grouped dims), when gradients are needed
  };

  quant::BatchNormParams FoldParams(Impl& net) const {
    const auto values = [&](int slot) {
      return absl::Span<const float>(Data(net.V(in[slot]).mem), w_dims_oc);
    };
    return {.scale = values(fold->gamma), .shift = values(fold->beta), .mean = fold->mean,
            .var = fold->var, .epsilon = fold->epsilon};
  }
  // W' into w_copy and B' into fold->bias, from the current parameters.
  void FoldWeights(Impl& net) {
    net.Sync();
    const Val& w = net.V(in[1]);
    absl::Span<const float> bias;
    if (has_bias) bias = absl::Span<const float>(Data(net.V(in[2]).mem), w_dims_oc);
    const quant::FoldedConv folded = quant::FoldBatchNormIntoConv(
        absl::Span<const float>(Data(w.mem), NumElements(w.shape)), w_dims_oc, bias,
        FoldParams(net));
    std::memcpy(Data(w_copy), folded.weights.data(), folded.weights.size() * sizeof(float));
    std::memcpy(Data(fold->bias), folded.bias.data(), folded.bias.size() * sizeof(float));
  }
  // The chain rule through the fold, from d/dW' (fold->diff_w) and d/dB' (diff_b).
  void UnfoldGradients(Impl& net) {
    net.Sync();
    const quant::BatchNormParams bn = FoldParams(net);
    const float* w = Data(net.V(in[1]).mem);
    const float* b = has_bias ? Data(net.V(in[2]).mem) : nullptr;
    const float* dw_folded = Data(fold->diff_w);
    const float* db_folded = Data(diff_b);
    float* dw = grads[1].needed() ? Data(grads[1].mem) : nullptr;
    float* db = has_bias && grads[2].needed() ? Data(grads[2].mem) : nullptr;
    float* dgamma = grads[fold->gamma].needed() ? Data(grads[fold->gamma].mem) : nullptr;
    float* dbeta = grads[fold->beta].needed() ? Data(grads[fold->beta].mem) : nullptr;
    const int64_t per_channel = NumElements(net.V(in[1]).shape) / w_dims_oc;
    for (int64_t c = 0; c < w_dims_oc; ++c) {
      const double inv_std = 1.0 / std::sqrt(double{bn.var[c]} + bn.epsilon);
      const double s = bn.scale[c] * inv_std;
      const float* dwc = dw_folded + c * per_channel;
      const float* wc = w + c * per_channel;
      double dot = 0;
      for (int64_t k = 0; k < per_channel; ++k) dot += double{dwc[k]} * wc[k];
      if (dw != nullptr) {
        for (int64_t k = 0; k < per_channel; ++k) {
          dw[c * per_channel + k] = static_cast<float>(dwc[k] * s);
        }
      }
      const double centred_bias = (b != nullptr ? b[c] : 0.0) - bn.mean[c];
      if (dgamma != nullptr) {
        dgamma[c] = static_cast<float>((dot + db_folded[c] * centred_bias) * inv_std);
      }
      if (dbeta != nullptr) dbeta[c] = db_folded[c];
      if (db != nullptr) db[c] = static_cast<float>(db_folded[c] * s);
    }
  }

  Dims w_dims, strides, dilations, pb, pe;
  int64_t w_dims_oc = 0;
  bool has_bias = false;
  std::optional<Fold> fold;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Arranged src;      // plain: the input, or its hooked copy
  Arranged weights;  // plain: grouped view of the weights or of their hooked copy
  Arranged dst;      // plain: the output value
  memory w_copy;     // hooked weights (ONNX dims)
  dnnl::convolution_backward_data bwd_data;
  Arranged bd_diff_dst, bd_weights, bd_diff_src;
  dnnl::convolution_backward_weights bwd_weights;
  Arranged bw_src, bw_diff_dst, bw_diff_w;
  memory diff_b;
};

}  // namespace

absl::Status Impl::CompileConv(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(int w_id, Get(n.inputs[1], n));
  const Shape x_shape = vals_[x_id].shape;
  const Shape ws = vals_[w_id].shape;
  if (x_shape.size() != ws.size() || x_shape[1] != ws[1] * n.group || ws[0] % n.group != 0) {
    return NodeError(n, absl::StrCat("input ", ShapeToString(x_shape), " does not fit weights ",
                                     ShapeToString(ws), " with group ", n.group));
  }
  auto op = std::make_unique<ConvOp>(n);
  ASSIGN_OR_RETURN(const Shape out_shape,
                   WindowOutputShape(n, x_shape, ws[0], false, &op->pb, &op->pe));
  op->w_dims = ConvWeightDims(ws, n.group);
  op->w_dims_oc = ws[0];
  op->has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
  op->in = {x_id, w_id};
  if (op->has_bias) {
    ASSIGN_OR_RETURN(int b_id, Get(n.inputs[2], n));
    if (NumElements(vals_[b_id].shape) != ws[0]) {
      return NodeError(n, absl::StrCat("bias has ", NumElements(vals_[b_id].shape), " values for ",
                                       ws[0], " output channels"));
    }
    op->in.push_back(b_id);
  }
  if (auto bn = folded_batch_norms_.find(n.name); bn != folded_batch_norms_.end()) {
    const Node& b = bn->second;
    ConvOp::Fold fold;
    for (int slot : {1, 2}) {
      ASSIGN_OR_RETURN(int id, Get(b.inputs[slot], b));
      (slot == 1 ? fold.gamma : fold.beta) = static_cast<int>(op->in.size());
      op->in.push_back(id);
    }
    // Frozen: the running statistics (registered by FindParameters and never updated) or fixed
    // constants.
    for (int slot : {3, 4}) {
      const std::string& name = b.inputs[slot];
      auto stat = stat_index_.find(name);
      const Tensor& t =
          stat != stat_index_.end() ? stats_[stat->second].value : graph_.constants.at(name);
      (slot == 3 ? fold.mean : fold.var) = t.floats();
    }
    fold.epsilon = b.epsilon;
    fold.bias = NewMem({ws[0]});
    op->fold = std::move(fold);
  }
  op->strides = Dims(n.strides.begin(), n.strides.end());
  op->dilations = DnnlDilations(n.dilations);
  const memory::desc bias_desc =
      op->has_bias || op->fold ? PlainDesc({ws[0]}) : memory::desc();
  dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      AnyDesc(DnnlDims(x_shape)), AnyDesc(op->w_dims), bias_desc, AnyDesc(DnnlDims(out_shape)),
      op->strides, op->dilations, op->pb, op->pe);
  op->fwd_pd = dnnl::convolution_forward::primitive_desc(d, engine_);
  op->fwd = dnnl::convolution_forward(op->fwd_pd);
  const memory src = options_.quant.inputs ? NewMem(DnnlDims(x_shape)) : vals_[x_id].mem;
  op->src.Bind(*this, src, op->fwd_pd.src_desc());
  if (options_.quant.weights) op->w_copy = NewMem(DnnlDims(ws));
  op->weights.Bind(*this, ViewOf(options_.quant.weights ? op->w_copy : vals_[w_id].mem,
                                 op->w_dims),
                   op->fwd_pd.weights_desc());
  const int pre = AddVal(LayerOutputName(n), out_shape);
  op->out = pre;
  op->dst.Bind(*this, vals_[pre].mem, op->fwd_pd.dst_desc());
  ops_.push_back(std::move(op));
  AddLayerTail(n, pre);
  return absl::OkStatus();
}

void Impl::FoldQuantizedBatchNorms() {
  const FakeQuantHooks& q = options_.quant;
  if (!q.weights) return;
  // The pairs the emulation folds: its pass on a copy moves the BatchNormalization's output to
  // the Conv.
  Graph placement = graph_.SharedCopy();
  FoldBatchNorm(&placement);
  std::map<std::string, std::string> conv_outputs;
  for (const Node& n : placement.nodes) {
    if (n.op == OpKind::kConv) conv_outputs[n.name] = n.outputs[0];
  }
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    Node& conv = graph_.nodes[i];
    if (conv.op != OpKind::kConv) continue;
    auto folded = conv_outputs.find(conv.name);
    if (folded == conv_outputs.end() || folded->second == conv.outputs[0]) continue;
    if (q.quantizes_weights && !q.quantizes_weights(conv.name)) continue;
    const int bn = graph_.ProducerOf(folded->second);
    conv.outputs[0] = folded->second;
    folded_batch_norms_[conv.name] = std::move(graph_.nodes[bn]);
    graph_.nodes.erase(graph_.nodes.begin() + bn);
  }
}

}  // namespace bitsweep::engine
