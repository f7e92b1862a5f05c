// Window operations for training: MaxPool, AveragePool and GlobalAveragePool (oneDNN pooling_v2
// with its workspace) and LRN (across channels), run in a channel-blocked layout that has jit
// kernels on this CPU, with reorders to and from the plain values.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

// Channel-blocked layouts (16 and 8 channels) for dims [N, C, spatial...].
std::vector<memory::desc> BlockedDescs(const Dims& dims) {
  using tag = memory::format_tag;
  std::vector<memory::desc> out;
  if (dims.size() == 3) {
    out = {memory::desc(dims, memory::data_type::f32, tag::nCw16c),
           memory::desc(dims, memory::data_type::f32, tag::nCw8c)};
  } else if (dims.size() == 4) {
    out = {memory::desc(dims, memory::data_type::f32, tag::nChw16c),
           memory::desc(dims, memory::data_type::f32, tag::nChw8c)};
  } else if (dims.size() == 5) {
    out = {memory::desc(dims, memory::data_type::f32, tag::nCdhw16c),
           memory::desc(dims, memory::data_type::f32, tag::nCdhw8c)};
  }
  return out;
}

bool IsJit(const std::string& impl) { return impl.find("jit") != std::string::npos; }

// make(layout) for the first channel-blocked layout of `dims` whose primitive descriptors are all
// jit kernels (`all_jit`), else make(plain): oneDNN's plain-layout pooling and LRN kernels are
// slow generic ones.
template <typename Make, typename AllJit>
auto PreferJitLayout(const Dims& dims, Make make, AllJit all_jit) {
  for (const memory::desc& blocked : BlockedDescs(dims)) {
    try {
      auto pds = make(blocked);
      if (all_jit(pds)) return pds;
    } catch (const dnnl::error&) {
      // no implementation for this layout: try the next one
    }
  }
  return make(PlainDesc(dims));
}

// The forward pass of pooling and LRN: src to dst, with the workspace their backward needs.
void ForwardWithWorkspace(Impl& net, const dnnl::primitive& fwd, Arranged& src, Arranged& dst,
                          const memory& workspace) {
  src.In(net);
  Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}};
  if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
  net.Exec(fwd, args);
  dst.Out(net);
}

class PoolOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    ForwardWithWorkspace(net, fwd, src, dst, workspace);
  }
  void BuildBackward(Impl& net) override {
    dnnl::pooling_v2_backward::desc d(alg, fwd_pd.src_desc(), fwd_pd.dst_desc(), strides, kernel,
                                      dilations, pb, pe);
    dnnl::pooling_v2_backward::primitive_desc pd(d, net.engine_, fwd_pd);
    bwd = dnnl::pooling_v2_backward(pd);
    diff_dst.Bind(net, net.V(out).diff, pd.diff_dst_desc());
    diff_src.Bind(net, grads[0].mem, pd.diff_src_desc());
  }
  void Backward(Impl& net) override {
    diff_dst.In(net);
    Args args = {{DNNL_ARG_DIFF_DST, diff_dst.mem}, {DNNL_ARG_DIFF_SRC, diff_src.mem}};
    if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
    net.Exec(bwd, args);
    diff_src.Out(net);
  }

  dnnl::algorithm alg = dnnl::algorithm::pooling_max;
  Dims strides, kernel, dilations, pb, pe;
  dnnl::pooling_v2_forward::primitive_desc fwd_pd;
  dnnl::pooling_v2_forward fwd;
  Arranged src, dst;
  memory workspace;
  dnnl::pooling_v2_backward bwd;
  Arranged diff_dst, diff_src;
};

class LrnOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    ForwardWithWorkspace(net, fwd, src, dst, workspace);
  }
  void BuildBackward(Impl& net) override {
    diff_dst.Bind(net, net.V(out).diff, bwd_pd.diff_dst_desc());
    diff_src.Bind(net, grads[0].mem, bwd_pd.diff_src_desc());
    bwd = dnnl::lrn_backward(bwd_pd);
  }
  void Backward(Impl& net) override {
    diff_dst.In(net);
    Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DIFF_DST, diff_dst.mem},
                 {DNNL_ARG_DIFF_SRC, diff_src.mem}};
    if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
    net.Exec(bwd, args);
    diff_src.Out(net);
  }

  dnnl::lrn_forward::primitive_desc fwd_pd;
  dnnl::lrn_forward fwd;
  Arranged src, dst;
  memory workspace;
  dnnl::lrn_backward::primitive_desc bwd_pd;
  dnnl::lrn_backward bwd;
  Arranged diff_dst, diff_src;
};

}  // namespace

absl::Status Impl::CompilePool(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape x_shape = vals_[x_id].shape;
  auto op = std::make_unique<PoolOp>(n);
  ASSIGN_OR_RETURN(const Shape out_shape,
                   WindowOutputShape(n, x_shape, std::nullopt, n.ceil_mode, &op->pb, &op->pe));
  ASSIGN_OR_RETURN(op->alg, PoolingAlgorithm(n, op->pe));
  op->strides = Dims(n.strides.begin(), n.strides.end());
  op->kernel = Dims(n.kernel.begin(), n.kernel.end());
  op->dilations = DnnlDilations(n.dilations);
  // oneDNN pools plain nchw data with a slow generic kernel: use a channel-blocked layout that
  // has a jit kernel on this CPU (with reorders around the primitive), else plain.
  const Dims x_dims = DnnlDims(x_shape), y_dims = DnnlDims(out_shape);
  auto make = [&](const memory::desc& src_desc, const memory::desc& dst_desc) {
    dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_training, op->alg, src_desc,
                                     dst_desc, op->strides, op->kernel, op->dilations, op->pb,
                                     op->pe);
    return dnnl::pooling_v2_forward::primitive_desc(d, engine_);
  };
  op->fwd_pd = PreferJitLayout(
      x_dims,
      [&](const memory::desc& src) {
        return make(src, src == PlainDesc(x_dims) ? PlainDesc(y_dims) : AnyDesc(y_dims));
      },
      [](const auto& pd) { return IsJit(pd.impl_info_str()); });
  op->fwd = dnnl::pooling_v2_forward(op->fwd_pd);
  return AddWorkspaceOp(std::move(op), x_id, n, out_shape);
}

absl::Status Impl::CompileGlobalAveragePool(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(const Node window, GlobalPoolWindow(n, vals_[x_id].shape));
  return CompilePool(window);
}

absl::Status Impl::CompileLrn(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape shape = vals_[x_id].shape;
  if (shape.size() < 3) return NodeError(n, "input needs rank >= 3 (N, C, spatial...)");
  auto op = std::make_unique<LrnOp>(n);
  // The backward pass has only a reference kernel for plain layouts: prefer a channel-blocked
  // layout with jit kernels both ways (the workspace ties the two passes to one layout).
  const Dims dims = DnnlDims(shape);
  auto make = [&](const memory::desc& d) {
    dnnl::lrn_forward::desc fd(dnnl::prop_kind::forward_training,
                               dnnl::algorithm::lrn_across_channels, d, n.size, n.alpha, n.beta,
                               n.bias);
    dnnl::lrn_forward::primitive_desc fpd(fd, engine_);
    dnnl::lrn_backward::desc bd(dnnl::algorithm::lrn_across_channels, d, d, n.size, n.alpha,
                                n.beta, n.bias);
    return std::make_pair(fpd, dnnl::lrn_backward::primitive_desc(bd, engine_, fpd));
  };
  std::tie(op->fwd_pd, op->bwd_pd) = PreferJitLayout(dims, make, [](const auto& pds) {
    return IsJit(pds.first.impl_info_str()) && IsJit(pds.second.impl_info_str());
  });
  op->fwd = dnnl::lrn_forward(op->fwd_pd);
  return AddWorkspaceOp(std::move(op), x_id, n, shape);
}

}  // namespace bitsweep::engine
