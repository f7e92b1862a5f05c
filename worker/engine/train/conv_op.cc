// Conv for training (groups, strides, dilations, pads): oneDNN convolution forward_training,
// backward_data and backward_weights (with the bias gradient), in the blocked layouts oneDNN
// chooses; the quantization hooks see copies of the input and the weights.
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

// ---------------------------------------------------------------------------------------------
// Conv: convolution forward_training, backward_data and backward_weights (with bias).

class ConvOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const FakeQuantHooks& q = net.options_.quant;
    if (q.inputs) HookCopy(net, q.inputs, node, net.V(in[0]).mem, src.plain);
    if (q.weights) HookCopy(net, q.weights, node, net.V(in[1]).mem, w_copy);
    src.In(net);
    weights.In(net);
    Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_WEIGHTS, weights.mem},
                 {DNNL_ARG_DST, dst.mem}};
    if (has_bias) args[DNNL_ARG_BIAS] = net.V(in[2]).mem;
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
    if (grads[1].needed() || bias_grad) {
      const memory diff_w =
          grads[1].needed() ? net.ViewOf(grads[1].mem, w_dims) : net.NewMem(w_dims);
      memory::desc bias_desc;
      if (has_bias) {
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
      if (has_bias) args[DNNL_ARG_DIFF_BIAS] = diff_b;
      net.Exec(bwd_weights, args);
      bw_diff_w.Out(net);
    }
  }

  Dims w_dims, strides, dilations, pb, pe;
  int64_t w_dims_oc = 0;
  bool has_bias = false;
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
  op->strides = Dims(n.strides.begin(), n.strides.end());
  op->dilations = DnnlDilations(n.dilations);
  const memory::desc bias_desc = op->has_bias ? PlainDesc({ws[0]}) : memory::desc();
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

}  // namespace bitsweep::engine
