#include "worker/engine/train/training_network.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/eval_backend.h"
#include "worker/engine/graph.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/tensor_proto.h"

namespace bitsweep::engine {
namespace {

using dnnl::memory;
using Dims = memory::dims;
using Args = std::unordered_map<int, memory>;

float* Data(const memory& m) { return static_cast<float*>(m.get_data_handle()); }

// A 2-D matrix view: dims and strides (elements).
struct Mat {
  Dims dims;
  Dims strides;
  memory::desc desc() const { return memory::desc(dims, memory::data_type::f32, strides); }
  Mat T() const { return Mat{{dims[1], dims[0]}, {strides[1], strides[0]}}; }
};
Mat RowMajor(int64_t rows, int64_t cols) { return Mat{{rows, cols}, {cols, 1}}; }

void AddInto(float* dst, const float* src, int64_t n) {
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// splitmix64: counter-based random bits for dropout masks (independent of the thread count).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

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

}  // namespace

double SoftmaxCrossEntropy(const float* logits, const int* labels, int64_t batch, int64_t classes,
                           float* grad, int64_t* correct) {
  double total = 0;
  int64_t hits = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const float* row = logits + r * classes;
    const int label = labels[r];
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (row[c] > row[best]) best = c;
    }
    hits += best == label;
    const double max_score = row[best];
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(double{row[c]} - max_score);
    total += std::log(sum) + max_score - row[label];
    if (grad != nullptr) {
      for (int64_t c = 0; c < classes; ++c) {
        const double p = std::exp(double{row[c]} - max_score) / sum;
        grad[r * classes + c] = static_cast<float>((p - (c == label ? 1.0 : 0.0)) / batch);
      }
    }
  }
  if (correct != nullptr) *correct = hits;
  return total / static_cast<double>(batch);
}

// ---------------------------------------------------------------------------------------------
// Values, gradient targets and the operation interface.

namespace train_internal {

struct Val {
  std::string name;
  Shape shape;
  memory mem;  // plain row-major, dims DnnlDims(shape)
  bool needs_grad = false;
  memory diff;  // plain, same desc as mem (allocated when needs_grad)
  bool claimed = false;  // some backward step writes diff directly
  int param = -1;        // index into parameters, or -1
};

// Where an operation writes the gradient with respect to one of its inputs: straight into the
// value's diff (the first writer in backward order), or into scratch that is then added to it.
struct GradTarget {
  memory mem;
  memory accumulate_into;
  bool needed() const { return static_cast<bool>(mem); }
};

class Op {
 public:
  explicit Op(const Node& n) : node(n.name), onnx_op(n.onnx_op) {}
  Op(std::string node_name, std::string op_name)
      : node(std::move(node_name)), onnx_op(std::move(op_name)) {}
  virtual ~Op() = default;
  virtual void Forward(TrainingNetwork::Impl& net, const StepOptions& step) = 0;
  virtual void BuildBackward(TrainingNetwork::Impl& net) {}
  virtual void Backward(TrainingNetwork::Impl& net) {}
  bool AnyGrad() const {
    for (const GradTarget& g : grads) {
      if (g.needed()) return true;
    }
    return false;
  }

  std::string node, onnx_op;  // for messages
  std::vector<int> in;        // input value ids
  std::vector<GradTarget> grads;  // one per input
  int out = -1;                   // output value id, -1 for in-place steps
};

}  // namespace train_internal

using train_internal::GradTarget;
using train_internal::Op;
using train_internal::Val;

class TrainingNetwork::Impl {
 public:
  explicit Impl(const TrainingNetworkOptions& options)
      : options_(options), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  absl::Status Build(const onnx::ModelProto& model);
  absl::Status Forward(const float* input, const StepOptions& step);
  absl::StatusOr<BatchLoss> ForwardBackward(const float* input, const int* labels,
                                            const StepOptions& step);
  absl::Status WriteTo(onnx::ModelProto* model) const;

  // Shared with the operations.
  void Sync() { stream_.wait(); }
  void Exec(const dnnl::primitive& p, const Args& args) { p.execute(stream_, args); }
  memory NewMem(const Dims& dims) { return memory(PlainDesc(dims), engine_); }
  memory ViewOf(const memory& m, const Dims& dims) {
    return memory(PlainDesc(dims), engine_, m.get_data_handle());
  }
  void Copy(const memory& from, const memory& to) {  // same element count, plain
    memory src = from;
    memory dst = to.get_desc() == from.get_desc() ? to : ViewOf(to, from.get_desc().dims());
    dnnl::reorder(src, dst).execute(stream_, src, dst);
  }
  Val& V(int id) { return vals_[id]; }
  int AddVal(const std::string& name, const Shape& shape, memory mem = memory()) {
    Val v;
    v.name = name;
    v.shape = shape;
    v.mem = mem ? mem : NewMem(DnnlDims(shape));
    vals_.push_back(std::move(v));
    ids_[name] = static_cast<int>(vals_.size()) - 1;
    return static_cast<int>(vals_.size()) - 1;
  }

  TrainingNetworkOptions options_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  Graph graph_;
  std::vector<Val> vals_;
  std::map<std::string, int> ids_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<Parameter> params_;
  std::map<std::string, int> param_index_;
  std::vector<RunningStat> stats_;
  std::map<std::string, int> stat_index_;
  std::map<std::string, const onnx::NodeProto*> proto_nodes_;  // by engine node name
  Shape input_shape_;
  int input_id_ = -1;
  int logits_id_ = -1;
  int64_t classes_ = 0;
  std::string logits_name_;
  uint64_t dropout_step_ = 0;

  absl::StatusOr<int> Get(const std::string& name, const Node& n);
  absl::Status FindParameters(const onnx::ModelProto& model);
  absl::Status CompileNode(const Node& n);
  absl::Status CompileConv(const Node& n);
  absl::Status CompileGemm(const Node& n);
  absl::Status CompileMatMul(const Node& n);
  absl::Status CompileEltwise(const Node& n);
  absl::Status CompilePool(const Node& n);
  absl::Status CompileGlobalAveragePool(const Node& n);
  absl::Status CompileLrn(const Node& n);
  // Finishes a pooling or LRN op whose fwd_pd is chosen: workspace, output value, layout binds.
  template <typename Op>
  absl::Status AddWorkspaceOp(std::unique_ptr<Op> op, int x_id, const Node& n,
                              const Shape& out_shape) {
    if (op->fwd_pd.workspace_desc().get_size() > 0) {
      op->workspace = memory(op->fwd_pd.workspace_desc(), engine_);
    }
    op->in = {x_id};
    op->out = AddVal(n.outputs[0], out_shape);
    op->src.Bind(*this, vals_[x_id].mem, op->fwd_pd.src_desc());
    op->dst.Bind(*this, vals_[op->out].mem, op->fwd_pd.dst_desc());
    ops_.push_back(std::move(op));
    return absl::OkStatus();
  }
  absl::Status CompileBatchNorm(const Node& n);
  absl::Status CompileConcat(const Node& n);
  absl::Status CompileBinary(const Node& n);
  // Softmax is not trainable inside a model (only as its last node, which Build drops).
  absl::Status CompileSoftmax(const Node& n);
  // Views, and Dropout (imported as Identity).
  absl::Status CompileView(const Node& n);
  // Operators the inference networks run but training does not differentiate yet.
  absl::Status CompilePad(const Node& n) { return NotTrainable(n); }
  absl::Status CompileReduce(const Node& n) { return NotTrainable(n); }
  absl::Status CompileTranspose(const Node& n) { return NotTrainable(n); }
  absl::Status CompileSlice(const Node& n) { return NotTrainable(n); }
  static absl::Status NotTrainable(const Node& n) {
    return absl::UnimplementedError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                                 "): fine-tuning does not support this "
                                                 "operator yet (inference does)"));
  }
  absl::Status CompileDropout(const Node& n);
  // Adds eltwise steps for a layer's fused activations and its output hook; `pre` is the
  // layer's raw output, the last step writes n.outputs[0].
  void AddLayerTail(const Node& n, int pre);
  // Output value for a layer with fused activations: a fresh intermediate, else outputs[0].
  std::string LayerOutputName(const Node& n) const {
    return n.post_ops.empty() ? n.outputs[0] : n.name + "/pre_activation";
  }
};

namespace {

using Impl = TrainingNetwork::Impl;

// Applies a hook to a copy of `src` in `copy` (allocated by the caller).
void HookCopy(Impl& net, const std::function<void(const std::string&, float*, int64_t)>& hook,
              const std::string& layer, const memory& src, const memory& copy) {
  net.Sync();
  const size_t bytes = src.get_desc().get_size();
  std::memcpy(copy.get_data_handle(), src.get_data_handle(), bytes);
  hook(layer, Data(copy), static_cast<int64_t>(bytes / sizeof(float)));
}

// A primitive argument in the layout the primitive chose (oneDNN's blocked layouts are several
// times faster for convolutions and pooling): the plain memory itself when the layouts agree,
// else a second buffer and reorders between the two.
struct Arranged {
  memory plain, mem;
  dnnl::reorder to_mem, to_plain;
  bool reordered = false;

  void Bind(Impl& net, const memory& p, const memory::desc& wanted);
  // Uses `other`'s buffer (already filled by `other.In`).
  void Share(const Arranged& other) {
    plain = other.plain;
    mem = other.mem;
    reordered = false;
  }
  void In(Impl& net) const;
  void Out(Impl& net) const;
};

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

// ---------------------------------------------------------------------------------------------
// Gemm and MatMul: Y[M,N] = alpha * A'[M,K] B'[K,N] + beta * C, as oneDNN matmuls over strided
// views (no transposes are materialized); C and its gradient on the host.

dnnl::matmul MakeMatMul(Impl& net, const Mat& src, const Mat& wei, const Mat& dst, float scale) {
  dnnl::primitive_attr attr;
  if (scale != 1.0f) attr.set_output_scales(0, {scale});
  dnnl::matmul::desc d(src.desc(), wei.desc(), dst.desc());
  return dnnl::matmul({d, attr, net.engine_});
}

class MatMulOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const FakeQuantHooks& q = net.options_.quant;
    if (q.inputs) HookCopy(net, q.inputs, node, net.V(in[0]).mem, a_copy);
    if (q.weights) HookCopy(net, q.weights, node, net.V(in[1]).mem, b_copy);
    float* y = Data(net.V(out).mem);
    net.Exec(fwd, {{DNNL_ARG_SRC, a_used}, {DNNL_ARG_WEIGHTS, b_used},
                   {DNNL_ARG_DST, net.ViewOf(net.V(out).mem, {m, n})}});
    if (has_c) {
      net.Sync();
      const float* c = Data(net.V(in[2]).mem);
      const int64_t m_ = m, n_ = n, cr = c_rows, cc = c_cols;
      const float b = beta;
#pragma omp parallel for if (m_ * n_ > 32768)
      for (int64_t i = 0; i < m_; ++i) {
        for (int64_t j = 0; j < n_; ++j) {
          y[i * n_ + j] += b * c[(cr == 1 ? 0 : i) * cc + (cc == 1 ? 0 : j)];
        }
      }
    }
  }
  void BuildBackward(Impl& net) override {
    const Mat dy = RowMajor(m, n);
    if (grads[0].needed()) {
      if (!trans_a) {  // dA[M,K] = dY[M,N] B'^T[N,K]
        bwd_a = MakeMatMul(net, dy, b.T(), RowMajor(m, k), alpha);
        da_dst = net.ViewOf(grads[0].mem, {m, k});
      } else {  // A stored [K,M]: dA = B'[K,N] dY^T[N,M]
        bwd_a = MakeMatMul(net, b, dy.T(), RowMajor(k, m), alpha);
        da_dst = net.ViewOf(grads[0].mem, {k, m});
      }
    }
    if (grads[1].needed()) {
      if (!trans_b) {  // dB[K,N] = A'^T[K,M] dY[M,N]
        bwd_b = MakeMatMul(net, a.T(), dy, RowMajor(k, n), alpha);
        db_dst = net.ViewOf(grads[1].mem, {k, n});
      } else {  // B stored [N,K]: dB = dY^T[N,M] A'[M,K]
        bwd_b = MakeMatMul(net, dy.T(), a, RowMajor(n, k), alpha);
        db_dst = net.ViewOf(grads[1].mem, {n, k});
      }
    }
  }
  void Backward(Impl& net) override {
    const memory& dy_mem = net.V(out).diff;
    auto view = [&](const memory& mem, const Mat& mat) {
      return memory(mat.desc(), net.engine_, mem.get_data_handle());
    };
    const Mat dy = RowMajor(m, n);
    if (grads[0].needed()) {
      if (!trans_a) {
        net.Exec(bwd_a, {{DNNL_ARG_SRC, view(dy_mem, dy)}, {DNNL_ARG_WEIGHTS, view(b_used, b.T())},
                         {DNNL_ARG_DST, da_dst}});
      } else {
        net.Exec(bwd_a, {{DNNL_ARG_SRC, view(b_used, b)}, {DNNL_ARG_WEIGHTS, view(dy_mem, dy.T())},
                         {DNNL_ARG_DST, da_dst}});
      }
    }
    if (grads[1].needed()) {
      if (!trans_b) {
        net.Exec(bwd_b, {{DNNL_ARG_SRC, view(a_used, a.T())}, {DNNL_ARG_WEIGHTS, view(dy_mem, dy)},
                         {DNNL_ARG_DST, db_dst}});
      } else {
        net.Exec(bwd_b, {{DNNL_ARG_SRC, view(dy_mem, dy.T())}, {DNNL_ARG_WEIGHTS, view(a_used, a)},
                         {DNNL_ARG_DST, db_dst}});
      }
    }
    if (has_c && grads[2].needed()) {
      net.Sync();
      float* dc = Data(grads[2].mem);
      const float* g = Data(dy_mem);
      std::fill(dc, dc + c_rows * c_cols, 0.0f);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          dc[(c_rows == 1 ? 0 : i) * c_cols + (c_cols == 1 ? 0 : j)] += beta * g[i * n + j];
        }
      }
    }
  }

  int64_t m = 0, k = 0, n = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 1.0f;
  Mat a, b;  // A' [M,K] and B' [K,N] as views of the stored operands
  bool has_c = false;
  int64_t c_rows = 1, c_cols = 1;
  dnnl::matmul fwd;
  memory a_used, b_used;  // the operands (or hooked copies), with the views' descs
  memory a_copy, b_copy;  // plain copies, same buffers as a_used/b_used when hooked
  dnnl::matmul bwd_a, bwd_b;
  memory da_dst, db_dst;
};

// ---------------------------------------------------------------------------------------------

class EltwiseOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    net.Exec(fwd, {{DNNL_ARG_SRC, net.V(in[0]).mem}, {DNNL_ARG_DST, net.V(out).mem}});
  }
  void BuildBackward(Impl& net) override {
    const memory::desc d = net.V(in[0]).mem.get_desc();
    dnnl::eltwise_backward::desc bd(alg, d, d, alpha, beta);
    bwd = dnnl::eltwise_backward({bd, net.engine_, fwd_pd});
  }
  void Backward(Impl& net) override {
    net.Exec(bwd, {{DNNL_ARG_SRC, net.V(in[0]).mem}, {DNNL_ARG_DIFF_DST, net.V(out).diff},
                   {DNNL_ARG_DIFF_SRC, grads[0].mem}});
  }

  dnnl::algorithm alg = dnnl::algorithm::eltwise_relu;
  float alpha = 0, beta = 0;
  dnnl::eltwise_forward::primitive_desc fwd_pd;
  dnnl::eltwise_forward fwd;
  dnnl::eltwise_backward bwd;
};

class PoolOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    src.In(net);
    Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}};
    if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
    net.Exec(fwd, args);
    dst.Out(net);
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
    src.In(net);
    Args args = {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}};
    if (workspace) args[DNNL_ARG_WORKSPACE] = workspace;
    net.Exec(fwd, args);
    dst.Out(net);
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

class ConcatOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    Args args = {{DNNL_ARG_DST, net.V(out).mem}};
    for (size_t i = 0; i < in.size(); ++i) {
      args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] = net.V(in[i]).mem;
    }
    net.Exec(fwd, args);
  }
  void BuildBackward(Impl& net) override {
    const memory::desc out_desc = net.V(out).mem.get_desc();
    int64_t offset = 0;
    parts.resize(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const Dims d = net.V(in[i]).mem.get_desc().dims();
      if (grads[i].needed()) {
        Dims offsets(d.size(), 0);
        offsets[axis] = offset;
        parts[i] = memory(out_desc.submemory_desc(d, offsets), net.engine_,
                          net.V(out).diff.get_data_handle());
        copies.push_back({dnnl::reorder(parts[i], grads[i].mem), i});
      }
      offset += d[axis];
    }
  }
  void Backward(Impl& net) override {
    for (auto& [reorder, i] : copies) {
      net.Exec(reorder, {{DNNL_ARG_FROM, parts[i]}, {DNNL_ARG_TO, grads[i].mem}});
    }
  }

  int axis = 0;
  dnnl::concat fwd;
  std::vector<memory> parts;
  std::vector<std::pair<dnnl::reorder, size_t>> copies;
};

// Add / Mul with numpy broadcasting.
class BinaryOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const memory a = net.ViewOf(net.V(in[0]).mem, dims[0]);
    const memory b = net.ViewOf(net.V(in[1]).mem, dims[1]);
    const memory y = net.V(out).mem;
    if (dims[0] == out_dims) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    } else if (dims[1] == out_dims) {
      net.Exec(fwd, {{DNNL_ARG_SRC_0, b}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, y}});
    } else {  // both operands broadcast: expand a first (0 + a)
      net.Exec(expand, {{DNNL_ARG_SRC_0, zeros}, {DNNL_ARG_SRC_1, a}, {DNNL_ARG_DST, expanded}});
      net.Exec(fwd, {{DNNL_ARG_SRC_0, expanded}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, y}});
    }
  }
  void BuildBackward(Impl& net) override {
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      const bool full = dims[i] == out_dims;
      s.target = net.ViewOf(grads[i].mem, dims[i]);
      if (mul) {
        s.product = full ? s.target : net.NewMem(out_dims);
        dnnl::binary::desc d(dnnl::algorithm::binary_mul, PlainDesc(out_dims),
                             PlainDesc(dims[1 - i]), PlainDesc(out_dims));
        s.multiply = dnnl::binary({d, net.engine_});
      }
      if (!full) {
        dnnl::reduction::desc d(dnnl::algorithm::reduction_sum, PlainDesc(out_dims),
                                PlainDesc(dims[i]), 0.0f, 0.0f);
        s.reduce = dnnl::reduction({d, net.engine_});
      }
    }
  }
  void Backward(Impl& net) override {
    const memory dy = net.V(out).diff;
    for (int i = 0; i < 2; ++i) {
      if (!grads[i].needed()) continue;
      Slot& s = slots[i];
      memory g = dy;
      if (mul) {
        net.Exec(s.multiply, {{DNNL_ARG_SRC_0, dy},
                              {DNNL_ARG_SRC_1, net.ViewOf(net.V(in[1 - i]).mem, dims[1 - i])},
                              {DNNL_ARG_DST, s.product}});
        g = s.product;
      }
      if (s.reduce) {
        net.Exec(s.reduce, {{DNNL_ARG_SRC, g}, {DNNL_ARG_DST, s.target}});
      } else if (!mul) {
        net.Copy(dy, s.target);
      }
    }
  }

  struct Slot {
    memory target, product;
    dnnl::binary multiply;
    dnnl::reduction reduce;
  };
  bool mul = false;
  Dims dims[2], out_dims;  // operand dims aligned to the output rank
  dnnl::binary fwd, expand;
  memory zeros, expanded;
  Slot slots[2];
};

// Flatten, Reshape, Squeeze, Unsqueeze, Identity: the output aliases the input's data.
class ViewOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {}
  void Backward(Impl& net) override { net.Copy(net.V(out).diff, grads[0].mem); }
};

class DropoutOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    const memory x = net.V(in[0]).mem;
    const memory y = net.V(out).mem;
    active = step.training && ratio > 0;
    if (!active) {
      net.Copy(x, y);
      return;
    }
    net.Sync();
    const int64_t count = static_cast<int64_t>(mask.size());
    if (step.new_dropout_masks || !have_mask) {
      const uint64_t base = Mix(Mix(net.options_.seed) ^ Mix(index + 0x51ed27) ^
                                Mix(++net.dropout_step_ * 0x9E3779B1ULL));
      const float scale = 1.0f / (1.0f - ratio);
      const double r = ratio;
#pragma omp parallel for if (count > 32768)
      for (int64_t i = 0; i < count; ++i) {
        const double u = static_cast<double>(Mix(base + static_cast<uint64_t>(i)) >> 11) *
                         0x1.0p-53;
        mask[i] = u < r ? 0.0f : scale;
      }
      have_mask = true;
    }
    const float* xs = Data(x);
    float* ys = Data(y);
#pragma omp parallel for if (count > 32768)
    for (int64_t i = 0; i < count; ++i) ys[i] = xs[i] * mask[i];
  }
  void Backward(Impl& net) override {
    if (!active) {
      net.Copy(net.V(out).diff, grads[0].mem);
      return;
    }
    net.Sync();
    const float* dy = Data(net.V(out).diff);
    float* dx = Data(grads[0].mem);
    const int64_t count = static_cast<int64_t>(mask.size());
#pragma omp parallel for if (count > 32768)
    for (int64_t i = 0; i < count; ++i) dx[i] = dy[i] * mask[i];
  }

  float ratio = 0.5f;
  uint64_t index = 0;
  std::vector<float> mask;
  bool have_mask = false;
  bool active = false;
};

// Applies hooks.outputs in place to a layer's final output.
class OutputHookOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    net.Sync();
    const Val& v = net.V(target);
    net.options_.quant.outputs(node, Data(v.mem), NumElements(v.shape));
  }
  int target = -1;
};

}  // namespace

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
  for (const Node& n : graph_.nodes) {
    switch (n.op) {
      case OpKind::kConv:
      case OpKind::kGemm:
        add_param(n, 1, ParameterRole::kWeight);
        add_param(n, 2, ParameterRole::kBias);
        break;
      case OpKind::kMatMul:
        add_param(n, 1, ParameterRole::kWeight);
        break;
      case OpKind::kBatchNorm:
        add_param(n, 1, ParameterRole::kBatchNormScale);
        add_param(n, 2, ParameterRole::kBatchNormShift);
        add_stat(n, 3);
        add_stat(n, 4);
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

void Impl::AddLayerTail(const Node& n, int pre) {
  int cur = pre;
  for (size_t i = 0; i < n.post_ops.size(); ++i) {
    const PostOp& p = n.post_ops[i];
    auto op = std::make_unique<EltwiseOp>(p.source_node, std::string(OpKindName(p.op)));
    op->alg = PostOpAlgorithm(p.op);
    std::tie(op->alpha, op->beta) = EltwiseParams(p.op, p.alpha, p.beta);
    const Val& x = vals_[cur];
    const std::string name =
        i + 1 == n.post_ops.size() ? n.outputs[0] : absl::StrCat(n.name, "/post_op", i);
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, op->alg, x.mem.get_desc(),
                                  op->alpha, op->beta);
    op->fwd_pd = dnnl::eltwise_forward::primitive_desc(d, engine_);
    op->fwd = dnnl::eltwise_forward(op->fwd_pd);
    op->in = {cur};
    const Shape shape = x.shape;
    op->out = AddVal(name, shape);
    cur = op->out;
    ops_.push_back(std::move(op));
  }
  if (options_.quant.outputs) {
    auto hook = std::make_unique<OutputHookOp>(n.name, n.onnx_op);
    hook->target = cur;
    ops_.push_back(std::move(hook));
  }
}

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

namespace {

// Finishes a Gemm or MatMul: operand views (or hooked copies), the forward matmul, the output
// value and the layer's fused activations.
absl::Status AddMatMul(Impl& net, std::unique_ptr<MatMulOp> op, const Node& n,
                       const Shape& out_shape) {
  const FakeQuantHooks& q = net.options_.quant;
  memory a = net.V(op->in[0]).mem;
  memory b = net.V(op->in[1]).mem;
  if (q.inputs) {
    op->a_copy = net.NewMem(a.get_desc().dims());
    a = op->a_copy;
  }
  if (q.weights) {
    op->b_copy = net.NewMem(b.get_desc().dims());
    b = op->b_copy;
  }
  op->a_used = memory(op->a.desc(), net.engine_, a.get_data_handle());
  op->b_used = memory(op->b.desc(), net.engine_, b.get_data_handle());
  op->fwd = MakeMatMul(net, op->a, op->b, RowMajor(op->m, op->n), op->alpha);
  const int pre = net.AddVal(net.LayerOutputName(n), out_shape);
  op->out = pre;
  net.ops_.push_back(std::move(op));
  net.AddLayerTail(n, pre);
  return absl::OkStatus();
}

}  // namespace

absl::Status Impl::CompileGemm(const Node& n) {
  ASSIGN_OR_RETURN(int a_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(int b_id, Get(n.inputs[1], n));
  const Shape as = vals_[a_id].shape, bs = vals_[b_id].shape;
  if (as.size() != 2) return NodeError(n, absl::StrCat("A must be 2-D, got ", ShapeToString(as)));
  if (bs.size() != 2) return NodeError(n, "B must be 2-D");
  auto op = std::make_unique<MatMulOp>(n);
  op->trans_a = n.trans_a;
  op->trans_b = n.trans_b;
  op->alpha = n.alpha;
  op->beta = n.beta;
  op->m = n.trans_a ? as[1] : as[0];
  op->k = n.trans_a ? as[0] : as[1];
  const int64_t bk = n.trans_b ? bs[1] : bs[0];
  op->n = n.trans_b ? bs[0] : bs[1];
  if (bk != op->k) {
    return NodeError(n, absl::StrCat("A ", ShapeToString(as), " and B ", ShapeToString(bs),
                                     " disagree on K (transA=", n.trans_a, ", transB=", n.trans_b,
                                     ")"));
  }
  op->a = n.trans_a ? RowMajor(op->k, op->m).T() : RowMajor(op->m, op->k);
  op->b = n.trans_b ? RowMajor(op->n, op->k).T() : RowMajor(op->k, op->n);
  op->in = {a_id, b_id};
  if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
    ASSIGN_OR_RETURN(int c_id, Get(n.inputs[2], n));
    ASSIGN_OR_RETURN(const Shape cs, GemmCShape(n, vals_[c_id].shape, op->m, op->n));
    op->has_c = true;
    op->c_rows = cs[0];
    op->c_cols = cs[1];
    op->in.push_back(c_id);
  }
  const Shape out_shape = {op->m, op->n};
  return AddMatMul(*this, std::move(op), n, out_shape);
}

absl::Status Impl::CompileMatMul(const Node& n) {
  ASSIGN_OR_RETURN(int a_id, Get(n.inputs[0], n));
  if (!graph_.IsConstant(n.inputs[1])) {
    return NodeError(n, "cannot be trained: B must be a constant (initializer)");
  }
  ASSIGN_OR_RETURN(int b_id, Get(n.inputs[1], n));
  const Shape as = vals_[a_id].shape, bs = vals_[b_id].shape;
  if (bs.size() != 2) {
    return NodeError(n, absl::StrCat("cannot be trained: B must be 2-D, got ", ShapeToString(bs)));
  }
  if (as.empty() || as.back() != bs[0]) {
    return NodeError(n, absl::StrCat("shapes ", ShapeToString(as), " and ", ShapeToString(bs),
                                     " disagree on K"));
  }
  auto op = std::make_unique<MatMulOp>(n);
  op->k = bs[0];
  op->n = bs[1];
  op->m = NumElements(as) / op->k;
  op->a = RowMajor(op->m, op->k);
  op->b = RowMajor(op->k, op->n);
  op->in = {a_id, b_id};
  Shape out_shape = as;
  out_shape.back() = bs[1];
  return AddMatMul(*this, std::move(op), n, out_shape);
}

absl::Status Impl::CompileEltwise(const Node& n) {
  if (n.op == OpKind::kHardSigmoid) return NotTrainable(n);
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  auto op = std::make_unique<EltwiseOp>(n);
  op->alg = PostOpAlgorithm(n.op);
  std::tie(op->alpha, op->beta) = EltwiseParams(n.op, n.alpha, n.beta);
  dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_training, op->alg,
                                vals_[x_id].mem.get_desc(), op->alpha, op->beta);
  op->fwd_pd = dnnl::eltwise_forward::primitive_desc(d, engine_);
  op->fwd = dnnl::eltwise_forward(op->fwd_pd);
  op->in = {x_id};
  const Shape shape = vals_[x_id].shape;
  op->out = AddVal(n.outputs[0], shape);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

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

absl::Status Impl::CompileConcat(const Node& n) {
  std::vector<int> ids;
  for (const std::string& name : n.inputs) {
    ASSIGN_OR_RETURN(int id, Get(name, n));
    ids.push_back(id);
  }
  std::vector<Shape> shapes;
  std::vector<memory::desc> descs;
  for (int id : ids) {
    shapes.push_back(vals_[id].shape);
    descs.push_back(vals_[id].mem.get_desc());
  }
  int64_t axis = 0;
  ASSIGN_OR_RETURN(const Shape out, ConcatOutputShape(n, shapes, &axis));
  auto op = std::make_unique<ConcatOp>(n);
  op->axis = static_cast<int>(axis);
  op->fwd = dnnl::concat(dnnl::concat::primitive_desc(PlainDesc(DnnlDims(out)),
                                                      static_cast<int>(axis), descs, engine_));
  op->in = ids;
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompileBinary(const Node& n) {
  if (n.op == OpKind::kSub || n.op == OpKind::kDiv) return NotTrainable(n);
  ASSIGN_OR_RETURN(int a_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(int b_id, Get(n.inputs[1], n));
  Shape as, bs;
  ASSIGN_OR_RETURN(const Shape out,
                   BroadcastShapes(n, vals_[a_id].shape, vals_[b_id].shape, &as, &bs));
  auto op = std::make_unique<BinaryOp>(n);
  op->mul = n.op == OpKind::kMul;
  op->dims[0] = DnnlDims(as);
  op->dims[1] = DnnlDims(bs);
  op->out_dims = DnnlDims(out);
  const dnnl::algorithm alg =
      op->mul ? dnnl::algorithm::binary_mul : dnnl::algorithm::binary_add;
  const memory::desc od = PlainDesc(op->out_dims);
  if (op->dims[0] == op->out_dims) {
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[1]), od}, engine_});
  } else if (op->dims[1] == op->out_dims) {
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[0]), od}, engine_});
  } else {
    op->zeros = NewMem(op->out_dims);
    std::memset(op->zeros.get_data_handle(), 0, od.get_size());
    op->expanded = NewMem(op->out_dims);
    op->expand = dnnl::binary(
        {{dnnl::algorithm::binary_add, od, PlainDesc(op->dims[0]), od}, engine_});
    op->fwd = dnnl::binary({{alg, od, PlainDesc(op->dims[1]), od}, engine_});
  }
  op->in = {a_id, b_id};
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompileView(const Node& n) {
  // The importer maps Dropout to Identity; training applies it.
  if (n.op == OpKind::kIdentity && n.onnx_op == "Dropout") return CompileDropout(n);
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(const Shape out, ViewOutputShape(n, vals_[x_id].shape));
  auto op = std::make_unique<ViewOp>(n);
  op->in = {x_id};
  op->out = AddVal(n.outputs[0], out, ViewOf(vals_[x_id].mem, DnnlDims(out)));
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompileDropout(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  float ratio = 0.5f;
  auto proto = proto_nodes_.find(n.name);
  if (proto != proto_nodes_.end()) {
    const onnx::NodeProto& p = *proto->second;
    for (const auto& a : p.attribute()) {
      if (a.name() == "ratio") ratio = a.f();
    }
    if (p.input_size() > 1 && !p.input(1).empty()) {
      auto t = graph_.constants.find(p.input(1));
      if (t == graph_.constants.end() || t->second.dtype() != DataType::kFloat ||
          t->second.num_elements() != 1) {
        return NodeError(n, "cannot be trained: ratio must be a float scalar constant");
      }
      ratio = t->second.floats()[0];
    }
  }
  if (!(ratio >= 0.0f && ratio < 1.0f)) {
    return NodeError(n, absl::StrCat("ratio ", ratio, " is outside [0, 1)"));
  }
  auto op = std::make_unique<DropoutOp>(n);
  op->ratio = ratio;
  op->index = ops_.size();
  const Shape shape = vals_[x_id].shape;
  op->mask.assign(NumElements(shape), 1.0f);
  op->in = {x_id};
  op->out = AddVal(n.outputs[0], shape);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status Impl::CompileSoftmax(const Node& n) {
  return NodeError(n, "cannot be trained: Softmax is supported only as the model's final "
                      "output (training then uses its input as the logits)");
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
  FuseActivations(&graph_);
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
