// Gemm and MatMul for training: Y[M,N] = alpha * A'[M,K] B'[K,N] + beta * C as oneDNN matmuls over
// strided views (transposes are never materialized), the A and B gradients as two more matmuls, C
// and its gradient (summed over broadcast rows/columns) on the host.
#include <algorithm>
#include <cstdint>
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

// A 2-D matrix view: dims and strides (elements).
struct Mat {
  Dims dims;
  Dims strides;
  memory::desc desc() const { return memory::desc(dims, memory::data_type::f32, strides); }
  Mat T() const { return Mat{{dims[1], dims[0]}, {strides[1], strides[0]}}; }
};
Mat RowMajor(int64_t rows, int64_t cols) { return Mat{{rows, cols}, {cols, 1}}; }

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

}  // namespace bitsweep::engine
