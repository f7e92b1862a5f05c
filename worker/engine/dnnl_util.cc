#include "worker/engine/dnnl_util.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace bitsweep::engine {

using dnnl::memory;
using Dims = memory::dims;

Dims DnnlDims(const Shape& shape) {
  return shape.empty() ? Dims{1} : Dims(shape.begin(), shape.end());
}

memory::desc PlainDesc(const Dims& dims) {
  Dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * dims[i + 1];
  }
  return memory::desc(dims, memory::data_type::f32, strides);
}

memory::desc AnyDesc(const Dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::any);
}

int64_t Product(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

absl::StatusOr<int64_t> NormalizeAxis(int64_t axis, int64_t rank, const Node& n) {
  if (axis < -rank || axis >= rank) {
    return absl::InvalidArgumentError(absl::StrCat("node '", n.name, "' (", n.onnx_op, "): axis ",
                                                   axis, " is out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

absl::Status NodeError(const Node& n, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("node '", n.name, "' (", n.onnx_op, "): ", what));
}

dnnl::algorithm PostOpAlgorithm(OpKind op) {
  switch (op) {
    case OpKind::kRelu:
    case OpKind::kLeakyRelu: return dnnl::algorithm::eltwise_relu;
    case OpKind::kClip: return dnnl::algorithm::eltwise_clip;
    case OpKind::kSigmoid: return dnnl::algorithm::eltwise_logistic;
    case OpKind::kHardSwish: return dnnl::algorithm::eltwise_hardswish;
    case OpKind::kTanh: return dnnl::algorithm::eltwise_tanh;
    default: return dnnl::algorithm::undef;
  }
}

std::pair<float, float> EltwiseParams(OpKind op, float alpha, float beta) {
  if (op == OpKind::kRelu || op == OpKind::kSigmoid || op == OpKind::kHardSwish ||
      op == OpKind::kTanh) {
    return {0.0f, 0.0f};
  }
  if (op == OpKind::kLeakyRelu) return {alpha, 0.0f};
  return {alpha, beta};  // Clip: [min, max]
}

void AppendEltwise(dnnl::post_ops* ops, dnnl::algorithm alg, float alpha, float beta) {
  auto used = [ops](dnnl::algorithm a) {
    for (int i = 0; i < ops->len(); ++i) {
      if (ops->kind(i) != dnnl::primitive::kind::eltwise) continue;
      float scale, al, be;
      dnnl::algorithm existing;
      ops->get_params_eltwise(i, scale, existing, al, be);
      if (existing == a) return true;
    }
    return false;
  };
  if (alg == dnnl::algorithm::eltwise_clip && used(alg)) alg = dnnl::algorithm::eltwise_clip_v2;
  ops->append_eltwise(1.0f, alg, alpha, beta);
}

dnnl::primitive_attr PostOpAttr(const std::vector<PostOp>& post_ops) {
  dnnl::post_ops ops;
  for (const PostOp& p : post_ops) {
    auto [alpha, beta] = EltwiseParams(p.op, p.alpha, p.beta);
    AppendEltwise(&ops, PostOpAlgorithm(p.op), alpha, beta);
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  return attr;
}


absl::StatusOr<Shape> ViewOutputShape(const Node& n, const Shape& in) {
  const int64_t rank = static_cast<int64_t>(in.size());
  Shape out;
  switch (n.op) {
    case OpKind::kIdentity:
      return in;
    case OpKind::kFlatten: {
      if (n.axis < -rank || n.axis > rank) {
        return NodeError(n, absl::StrCat("axis ", n.axis, " is out of range for rank ", rank));
      }
      const int64_t axis = n.axis < 0 ? n.axis + rank : n.axis;
      out = {Product(in, 0, axis), Product(in, axis, rank)};
      break;
    }
    case OpKind::kReshape: {
      int infer = -1;
      int64_t known = 1;
      for (size_t i = 0; i < n.target_shape.size(); ++i) {
        int64_t d = n.target_shape[i];
        if (d == 0 && !n.allowzero) {
          if (static_cast<int64_t>(i) >= rank) return NodeError(n, "shape copies a missing dimension");
          d = in[i];
        }
        if (d == -1) {
          if (infer >= 0) return NodeError(n, "shape has more than one -1");
          infer = static_cast<int>(i);
          d = 1;
        } else if (d < 0) {
          return NodeError(n, absl::StrCat("invalid dimension ", d, " in shape"));
        } else {
          known *= d;
        }
        out.push_back(d);
      }
      if (infer >= 0) {
        if (known == 0 || NumElements(in) % known != 0) {
          return NodeError(n, absl::StrCat("cannot reshape ", ShapeToString(in), " to ",
                                       ShapeToString(n.target_shape)));
        }
        out[infer] = NumElements(in) / known;
      }
      break;
    }
    case OpKind::kSqueeze: {
      std::vector<bool> drop(rank, false);
      for (int64_t a : n.axes) {
        ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, rank, n));
        if (in[axis] != 1) {
          return NodeError(n, absl::StrCat("cannot squeeze axis ", a, " of size ", in[axis]));
        }
        drop[axis] = true;
      }
      for (int64_t i = 0; i < rank; ++i) {
        if (!(n.axes.empty() ? in[i] == 1 : drop[i])) out.push_back(in[i]);
      }
      break;
    }
    case OpKind::kUnsqueeze: {
      const int64_t out_rank = rank + static_cast<int64_t>(n.axes.size());
      std::vector<bool> inserted(out_rank, false);
      for (int64_t a : n.axes) {
        ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, out_rank, n));
        if (inserted[axis]) return NodeError(n, absl::StrCat("axis ", a, " is repeated"));
        inserted[axis] = true;
      }
      size_t next = 0;
      for (int64_t i = 0; i < out_rank; ++i) out.push_back(inserted[i] ? 1 : in[next++]);
      break;
    }
    default:
      return NodeError(n, "not a reshape");
  }
  if (NumElements(out) != NumElements(in)) {
    return NodeError(n, absl::StrCat("cannot reshape ", ShapeToString(in), " (", NumElements(in),
                                 " values) to ", ShapeToString(out)));
  }
  return out;
}

absl::Status ResolveWindow(const Node& n, const Shape& in_shape, bool ceil_mode, Dims* pads_begin,
                           Dims* pads_end, Shape* out_spatial) {
  const size_t spatial = n.kernel.size();
  if (in_shape.size() != spatial + 2) {
    return NodeError(n, absl::StrCat("input of shape ", ShapeToString(in_shape), " does not have ",
                                 spatial, " spatial dimensions"));
  }
  pads_begin->assign(spatial, 0);
  pads_end->assign(spatial, 0);
  out_spatial->assign(spatial, 0);
  for (size_t i = 0; i < spatial; ++i) {
    const int64_t in = in_shape[i + 2];
    const int64_t s = n.strides[i];
    const int64_t dk = (n.kernel[i] - 1) * n.dilations[i] + 1;
    int64_t pb = 0, pe = 0, out = 0;
    if (n.auto_pad == "SAME_UPPER" || n.auto_pad == "SAME_LOWER") {
      out = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + dk - in);
      const int64_t small = total / 2;
      pb = n.auto_pad == "SAME_UPPER" ? small : total - small;
      pe = total - pb;
    } else {
      if (n.auto_pad == "NOTSET") {
        pb = n.pads_begin[i];
        pe = n.pads_end[i];
      }
      const int64_t span = in + pb + pe - dk;
      if (span < 0) {
        return NodeError(n, absl::StrCat("window ", dk, " is larger than the padded input ", in + pb + pe,
                                     " in spatial dimension ", i));
      }
      out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
      // The last window must start inside the input or its leading pad (Caffe/PyTorch rule).
      if (ceil_mode && (out - 1) * s >= in + pb) --out;
      // oneDNN has no ceil mode: extend the trailing pad so that the last window fits.
      pe = std::max(pe, (out - 1) * s + dk - in - pb);
    }
    if (out < 1) return NodeError(n, absl::StrCat("output spatial dimension ", i, " would be empty"));
    (*pads_begin)[i] = pb;
    (*pads_end)[i] = pe;
    (*out_spatial)[i] = out;
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> WindowOutputShape(const Node& n, const Shape& x_shape,
                                        std::optional<int64_t> out_channels, bool ceil_mode,
                                        Dims* pads_begin, Dims* pads_end) {
  Shape out_spatial;
  RETURN_IF_ERROR(ResolveWindow(n, x_shape, ceil_mode, pads_begin, pads_end, &out_spatial));
  Shape out = {x_shape[0], out_channels.value_or(x_shape[1])};
  out.insert(out.end(), out_spatial.begin(), out_spatial.end());
  return out;
}

Dims DnnlDilations(const std::vector<int64_t>& dilations) {
  Dims out;
  for (int64_t d : dilations) out.push_back(d - 1);
  return out;
}

Dims ConvWeightDims(const Shape& weight_shape, int64_t group) {
  if (group <= 1) return Dims(weight_shape.begin(), weight_shape.end());
  Dims dims = {group, weight_shape[0] / group};
  dims.insert(dims.end(), weight_shape.begin() + 1, weight_shape.end());
  return dims;
}

absl::StatusOr<dnnl::algorithm> PoolingAlgorithm(const Node& n, const Dims& pads_end) {
  if (n.op != OpKind::kAveragePool) return dnnl::algorithm::pooling_max;
  if (n.count_include_pad && n.ceil_mode) {
    for (size_t i = 0; i < pads_end.size(); ++i) {
      const int64_t given = n.auto_pad == "NOTSET" ? n.pads_end[i] : pads_end[i];
      if (pads_end[i] != given) {
        // A limit of ours (oneDNN has no such window), not an invalid model.
        return absl::UnimplementedError(
            NodeError(n, "ceil_mode=1 with count_include_pad=1 whose last window passes the "
                         "padding is not supported")
                .message());
      }
    }
  }
  return n.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                             : dnnl::algorithm::pooling_avg_exclude_padding;
}

absl::StatusOr<Node> GlobalPoolWindow(const Node& n, const Shape& x_shape) {
  if (x_shape.size() < 3) return NodeError(n, "input needs at least one spatial dimension");
  Node window = n;
  const size_t spatial = x_shape.size() - 2;
  window.kernel.assign(x_shape.begin() + 2, x_shape.end());
  window.strides.assign(spatial, 1);
  window.dilations.assign(spatial, 1);
  window.pads_begin.assign(spatial, 0);
  window.pads_end.assign(spatial, 0);
  window.auto_pad = "NOTSET";
  window.op = OpKind::kAveragePool;
  window.count_include_pad = false;
  window.ceil_mode = false;
  return window;
}

absl::StatusOr<Shape> ConcatOutputShape(const Node& n, const std::vector<Shape>& shapes,
                                        int64_t* axis) {
  const Shape& first = shapes[0];
  const int64_t rank = static_cast<int64_t>(first.size());
  if (rank == 0) return NodeError(n, "cannot concatenate scalars");
  ASSIGN_OR_RETURN(*axis, NormalizeAxis(n.axis, rank, n));
  Shape out = first;
  out[*axis] = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    for (int64_t d = 0; d < rank; ++d) {
      if (static_cast<int64_t>(s.size()) != rank || (d != *axis && s[d] != first[d])) {
        return NodeError(n, absl::StrCat("input ", i, " of shape ", ShapeToString(s),
                                         " does not match ", ShapeToString(first),
                                         " outside axis ", *axis));
      }
    }
    out[*axis] += s[*axis];
  }
  return out;
}

absl::StatusOr<Shape> BroadcastShapes(const Node& n, const Shape& a, const Shape& b,
                                      Shape* a_aligned, Shape* b_aligned) {
  const size_t rank = std::max(a.size(), b.size());
  auto aligned = [rank](const Shape& s) {
    Shape r(rank - s.size(), 1);
    r.insert(r.end(), s.begin(), s.end());
    return r;
  };
  *a_aligned = aligned(a);
  *b_aligned = aligned(b);
  Shape out(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = (*a_aligned)[i], db = (*b_aligned)[i];
    if (da != db && da != 1 && db != 1) {
      return NodeError(n, absl::StrCat("shapes ", ShapeToString(a), " and ", ShapeToString(b),
                                       " do not broadcast"));
    }
    out[i] = std::max(da, db);
  }
  return out;
}

absl::StatusOr<Shape> GemmCShape(const Node& n, const Shape& c, int64_t m, int64_t nn) {
  if (c.size() > 2) return NodeError(n, "C must have rank <= 2");
  Shape cs = c;
  while (cs.size() < 2) cs.insert(cs.begin(), 1);
  if ((cs[0] != 1 && cs[0] != m) || (cs[1] != 1 && cs[1] != nn)) {
    return NodeError(n, absl::StrCat("C ", ShapeToString(c), " does not broadcast to [", m, ",",
                                     nn, "]"));
  }
  return cs;
}

bool PostOpsNonNegative(const std::vector<PostOp>& post_ops) {
  bool non_negative = false;
  for (const PostOp& p : post_ops) {
    non_negative |= p.op == OpKind::kRelu || p.op == OpKind::kSigmoid ||
                    (p.op == OpKind::kClip && p.alpha >= 0.0f);
  }
  return non_negative;
}

}  // namespace bitsweep::engine
