#include "worker/engine/network.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/graph_passes.h"

namespace bitsweep::engine {
namespace {

using dnnl::memory;
using Dims = memory::dims;

// [r, c] -> [c, r].
Tensor Transposed2D(const Tensor& t) {
  const int64_t rows = t.shape()[0], cols = t.shape()[1];
  Tensor out = Tensor::Float({cols, rows});
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out.floats()[j * rows + i] = t.floats()[i * cols + j];
  }
  return out;
}

}  // namespace

class Network::Impl {
 public:
  Impl(Graph graph, const NetworkOptions& options)
      : graph_(std::move(graph)), options_(options), engine_(dnnl::engine::kind::cpu, 0),
        stream_(engine_) {}

  absl::Status Compile();
  absl::Status Run(const std::map<std::string, const Tensor*>& inputs,
                   std::map<std::string, Tensor>* outputs);
  absl::Status RunSingle(const float* input, float* output);

  Graph graph_;
  std::vector<ValueInfo> inputs_;
  std::vector<ValueInfo> outputs_;
  std::vector<LayerInfo> layers_;
  std::map<std::string, quant::Quantizer> weight_quantizers_;

 private:
  struct Value {
    Shape shape;  // logical ONNX shape (may be rank 0)
    memory mem;   // dims are DnnlDims(shape); layout may be blocked
    // The quantizer whose grid the values lie on, if any: a layer input already on its
    // quantizer's grid is not quantized again.
    std::optional<quant::Quantizer> grid;
  };
  // A oneDNN primitive with its arguments, or a host function (quantization, observation).
  struct Step {
    dnnl::primitive primitive;
    std::unordered_map<int, memory> args;
    std::function<void()> host;
    std::string node;  // for error messages; empty for graph-edge reorders
  };

  absl::Status CompileNode(const Node& n);
  absl::Status CompileConv(const Node& n);
  absl::Status CompilePool(const Node& n);
  absl::Status CompileGlobalAveragePool(const Node& n);
  absl::Status CompileEltwise(const Node& n);
  absl::Status CompileBinary(const Node& n);
  absl::Status CompileConcat(const Node& n);
  absl::Status CompileBatchNorm(const Node& n);
  absl::Status CompileLrn(const Node& n);
  absl::Status CompileSoftmax(const Node& n);
  absl::Status CompileGemm(const Node& n);
  absl::Status CompileMatMul(const Node& n);
  absl::Status CompileReshapeLike(const Node& n);

  absl::StatusOr<Value> Get(const std::string& name, const Node& n);
  absl::Status ExecuteSteps();

  // Quantization and observation around quantizable layers.
  const quant::LayerQuantPlan* PlanFor(const Node& n) const;
  // The layer's data input, quantized (on a copy) when the plan asks for it.
  absl::StatusOr<Value> LayerInput(const Node& n, const std::string& name);
  // `weights` quantized in place per the plan; `channels` is the size of dimension 0.
  void QuantizeWeights(const Node& n, Tensor* weights, int64_t channels);
  // Post-ops of the layer: its fused activations, then the output quantizer when it can be fused.
  dnnl::primitive_attr LayerAttr(const Node& n, bool* output_quantizer_fused) const;
  // Registers the layer's output value: host quantization when not fused, grid, observer, info.
  void FinishLayer(const Node& n, Value out, bool output_quantizer_fused, LayerInfo info);
  void Observe(const Node& n, bool is_output, const std::string& name, const Value& v);
  // The value's data in plain row-major layout, reordering once if needed.
  Value Plain(const std::string& name, const Value& v);
  // A plain view of `v` with other dims (same element count); `v` must be plain.
  Value View(const Value& v, Shape shape);
  memory ConstantMemory(const Dims& dims, const float* data);
  memory ReorderNow(const memory& src, const memory::desc& dst_desc);
  // Adds a primitive reading x and writing a new value (pd.dst_desc()) named by n.outputs[0].
  // `grid`: the quantization grid the output stays on (max pooling and Relu keep their input's).
  template <typename Primitive>
  void AddSrcDstStep(const typename Primitive::primitive_desc& pd, const memory& x,
                     Shape out_shape, const Node& n,
                     std::optional<quant::Quantizer> grid = std::nullopt) {
    memory dst(pd.dst_desc(), engine_);
    AddStep(Primitive(pd), {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, dst}}, &n);
    values_[n.outputs[0]] = Value{std::move(out_shape), dst, std::move(grid)};
  }
  void AddStep(dnnl::primitive p, std::unordered_map<int, memory> args, const Node* n) {
    steps_.push_back(Step{std::move(p), std::move(args), nullptr, n ? n->name : std::string()});
  }
  void AddHostStep(std::function<void()> f, const Node& n) {
    steps_.push_back(Step{dnnl::primitive(), {}, std::move(f), n.name});
  }

  NetworkOptions options_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::string, Value> values_;
  std::map<std::string, Value> plain_cache_;
  std::vector<Step> steps_;
  std::vector<memory> input_mems_;   // plain, one per runtime input
  std::vector<memory> output_mems_;  // plain, one per graph output
};

absl::StatusOr<Network::Impl::Value> Network::Impl::Get(const std::string& name, const Node& n) {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  auto c = graph_.constants.find(name);
  if (c == graph_.constants.end()) return NodeError(n, absl::StrCat("input '", name, "' is undefined"));
  if (c->second.dtype() != DataType::kFloat) {
    return NodeError(n, absl::StrCat("input '", name, "' is int64; float32 data is required"));
  }
  Value v{c->second.shape(), ConstantMemory(DnnlDims(c->second.shape()), c->second.floats().data())};
  values_[name] = v;
  return v;
}

memory Network::Impl::ConstantMemory(const Dims& dims, const float* data) {
  memory m(PlainDesc(dims), engine_);
  std::memcpy(m.get_data_handle(), data, m.get_desc().get_size());
  return m;
}

memory Network::Impl::ReorderNow(const memory& src, const memory::desc& dst_desc) {
  if (src.get_desc() == dst_desc) return src;
  memory dst(dst_desc, engine_);
  dnnl::reorder(src, dst).execute(stream_, const_cast<memory&>(src), dst);
  stream_.wait();
  return dst;
}

Network::Impl::Value Network::Impl::Plain(const std::string& name, const Value& v) {
  const memory::desc plain = PlainDesc(DnnlDims(v.shape));
  if (v.mem.get_desc() == plain) return v;
  auto it = plain_cache_.find(name);
  if (it != plain_cache_.end()) return it->second;
  Value out{v.shape, memory(plain, engine_), v.grid};
  AddStep(dnnl::reorder(v.mem, out.mem), {{DNNL_ARG_FROM, v.mem}, {DNNL_ARG_TO, out.mem}}, nullptr);
  plain_cache_[name] = out;
  return out;
}

Network::Impl::Value Network::Impl::View(const Value& v, Shape shape) {
  Value out{std::move(shape), {}, v.grid};
  out.mem = memory(PlainDesc(DnnlDims(out.shape)), engine_, v.mem.get_data_handle());
  return out;
}

const quant::LayerQuantPlan* Network::Impl::PlanFor(const Node& n) const {
  if (options_.quant == nullptr) return nullptr;
  auto it = options_.quant->find(n.name);
  return it == options_.quant->end() ? nullptr : &it->second;
}

void Network::Impl::Observe(const Node& n, bool is_output, const std::string& name,
                            const Value& v) {
  if (!options_.observer) return;
  const Value plain = Plain(name, v);
  const float* data = static_cast<const float*>(plain.mem.get_data_handle());
  const int64_t count = NumElements(plain.shape);
  AddHostStep([observer = options_.observer, layer = n.name, is_output, data, count] {
    observer(layer, is_output, data, count);
  }, n);
}

absl::StatusOr<Network::Impl::Value> Network::Impl::LayerInput(const Node& n,
                                                               const std::string& name) {
  ASSIGN_OR_RETURN(Value x, Get(name, n));
  Observe(n, /*is_output=*/false, name, x);
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr || plan->inputs.format.kind == quant::FormatKind::kFp32) return x;
  if (x.grid && quant::SameGrid(*x.grid, plan->inputs)) return x;
  // Quantize a copy: other readers of `name` keep their own values (Ristretto quantized a shared
  // blob in place for every consumer).
  Value copy{x.shape, memory(x.mem.get_desc(), engine_), plan->inputs};
  const float* from = static_cast<const float*>(x.mem.get_data_handle());
  float* to = static_cast<float*>(copy.mem.get_data_handle());
  const int64_t count = static_cast<int64_t>(x.mem.get_desc().get_size() / sizeof(float));
  AddHostStep([q = plan->inputs, from, to, count] {
    std::memcpy(to, from, count * sizeof(float));
    quant::QuantizeInPlace(q, to, count);
  }, n);
  return copy;
}

void Network::Impl::QuantizeWeights(const Node& n, Tensor* weights, int64_t channels) {
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr || plan->weights.kind == quant::FormatKind::kFp32) return;
  float* data = weights->floats().data();
  const int64_t count = weights->num_elements();
  quant::Quantizer q =
      quant::MakeWeightQuantizer(plan->weights, plan->rounding, plan->seed, data, count, channels);
  quant::QuantizeInPlace(q, data, count);
  weight_quantizers_[n.name] = std::move(q);
}

dnnl::primitive_attr Network::Impl::LayerAttr(const Node& n, bool* output_quantizer_fused) const {
  *output_quantizer_fused = false;
  dnnl::primitive_attr attr = PostOpAttr(n.post_ops);
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr) return attr;
  const quant::Quantizer& q = plan->outputs;
  const bool is_fixed =
      q.format.kind == quant::FormatKind::kFixed || q.format.kind == quant::FormatKind::kUfixed;
  if (!is_fixed || q.rounding != quant::Rounding::kNearestEven) return attr;
  // linear(2^FL) -> round (half to even) -> clip -> pow(2^-FL, 1). A second eltwise_linear in
  // the chain would reuse the first one's alpha in oneDNN 2.6.3 (DESIGN.md), hence pow.
  const int b = q.format.bits;
  const bool is_signed = q.format.kind == quant::FormatKind::kFixed;
  const float lo = is_signed ? -std::ldexp(1.0f, b - 1) : 0.0f;
  const float hi = is_signed ? std::ldexp(1.0f, b - 1) - 1.0f : std::ldexp(1.0f, b) - 1.0f;
  dnnl::post_ops ops = attr.get_post_ops();
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, std::ldexp(1.0f, q.fractional_bits),
                     0.0f);
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_round, 0.0f, 0.0f);
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, lo, hi);
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_pow, std::ldexp(1.0f, -q.fractional_bits),
                     1.0f);
  attr.set_post_ops(ops);
  *output_quantizer_fused = true;
  return attr;
}

void Network::Impl::FinishLayer(const Node& n, Value out, bool output_quantizer_fused,
                                LayerInfo info) {
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan != nullptr && plan->outputs.format.kind != quant::FormatKind::kFp32) {
    if (!output_quantizer_fused) {
      float* data = static_cast<float*>(out.mem.get_data_handle());
      const int64_t count = static_cast<int64_t>(out.mem.get_desc().get_size() / sizeof(float));
      AddHostStep([q = plan->outputs, data, count] { quant::QuantizeInPlace(q, data, count); }, n);
    }
    out.grid = plan->outputs;
  }
  info.name = n.name;
  for (const PostOp& p : n.post_ops) {
    info.output_non_negative |= p.op == OpKind::kRelu || p.op == OpKind::kSigmoid ||
                                (p.op == OpKind::kClip && p.alpha >= 0.0f);
  }
  layers_.push_back(std::move(info));
  values_[n.outputs[0]] = out;
  Observe(n, /*is_output=*/true, n.outputs[0], out);
}

absl::Status Network::Impl::CompileConv(const Node& n) {
  ASSIGN_OR_RETURN(Value x, LayerInput(n, n.inputs[0]));
  Tensor w = graph_.constants.at(n.inputs[1]);
  const Shape& ws = w.shape();
  if (x.shape.size() != ws.size() || x.shape[1] != ws[1] * n.group) {
    return NodeError(n, absl::StrCat("input ", ShapeToString(x.shape), " does not fit weights ",
                                 ShapeToString(ws), " with group ", n.group));
  }
  Dims pb, pe;
  Shape out_spatial;
  RETURN_IF_ERROR(ResolveWindow(n, x.shape, false, &pb, &pe, &out_spatial));
  Shape out_shape = {x.shape[0], ws[0]};
  out_shape.insert(out_shape.end(), out_spatial.begin(), out_spatial.end());

  Dims w_dims(ws.begin(), ws.end());
  if (n.group > 1) {
    w_dims = {n.group, ws[0] / n.group};
    w_dims.insert(w_dims.end(), ws.begin() + 1, ws.end());
  }
  const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
  Dims strides(n.strides.begin(), n.strides.end());
  Dims dilations;
  for (int64_t d : n.dilations) dilations.push_back(d - 1);
  const memory::desc bias_desc = has_bias ? PlainDesc({ws[0]}) : memory::desc();
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      AnyDesc(DnnlDims(x.shape)), AnyDesc(w_dims), bias_desc, AnyDesc(DnnlDims(out_shape)),
      strides, dilations, pb, pe);
  bool output_fused = false;
  dnnl::convolution_forward::primitive_desc pd(desc, LayerAttr(n, &output_fused), engine_);
  QuantizeWeights(n, &w, ws[0]);

  memory src = x.mem;
  if (src.get_desc() != pd.src_desc()) {
    memory reordered(pd.src_desc(), engine_);
    AddStep(dnnl::reorder(src, reordered), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, reordered}}, &n);
    src = reordered;
  }
  memory weights = ReorderNow(ConstantMemory(w_dims, w.floats().data()), pd.weights_desc());
  memory dst(pd.dst_desc(), engine_);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  if (has_bias) {
    const Tensor& b = graph_.constants.at(n.inputs[2]);
    if (b.num_elements() != ws[0]) {
      return NodeError(n, absl::StrCat("bias has ", b.num_elements(), " values for ", ws[0],
                                   " output channels"));
    }
    args[DNNL_ARG_BIAS] = ConstantMemory({ws[0]}, b.floats().data());
  }
  AddStep(dnnl::convolution_forward(pd), std::move(args), &n);
  LayerInfo info;
  info.layer_class = LayerClass::kConv;
  info.weight_shape = ws;
  info.input_shape = x.shape;
  info.input_shape[0] = 1;
  info.output_shape = out_shape;
  info.output_shape[0] = 1;
  info.fan_in = Product(ws, 1, ws.size());
  info.macs = Product(out_shape, 1, out_shape.size()) * info.fan_in;
  info.weight_count = w.num_elements();
  info.bias_count = has_bias ? ws[0] : 0;
  FinishLayer(n, Value{out_shape, dst}, output_fused, std::move(info));
  return absl::OkStatus();
}

absl::Status Network::Impl::CompilePool(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  Dims pb, pe;
  Shape out_spatial;
  RETURN_IF_ERROR(ResolveWindow(n, x.shape, n.ceil_mode, &pb, &pe, &out_spatial));
  dnnl::algorithm alg = dnnl::algorithm::pooling_max;
  if (n.op == OpKind::kAveragePool) {
    alg = n.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                              : dnnl::algorithm::pooling_avg_exclude_padding;
    if (n.count_include_pad && n.ceil_mode) {
      for (size_t i = 0; i < pe.size(); ++i) {
        const int64_t given = n.auto_pad == "NOTSET" ? n.pads_end[i] : pe[i];
        if (pe[i] != given) {
          return absl::UnimplementedError(absl::StrCat(
              "node '", n.name, "' (AveragePool): ceil_mode=1 with count_include_pad=1 whose last "
              "window passes the padding is not supported"));
        }
      }
    }
  }
  Shape out_shape = {x.shape[0], x.shape[1]};
  out_shape.insert(out_shape.end(), out_spatial.begin(), out_spatial.end());
  Dims dilations;
  for (int64_t d : n.dilations) dilations.push_back(d - 1);
  dnnl::pooling_v2_forward::desc desc(
      dnnl::prop_kind::forward_inference, alg, x.mem.get_desc(), AnyDesc(DnnlDims(out_shape)),
      Dims(n.strides.begin(), n.strides.end()), Dims(n.kernel.begin(), n.kernel.end()), dilations,
      pb, pe);
  AddSrcDstStep<dnnl::pooling_v2_forward>(
      {desc, engine_}, x.mem, out_shape, n,
      n.op == OpKind::kMaxPool ? x.grid : std::nullopt);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileGlobalAveragePool(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (x.shape.size() < 3) return NodeError(n, "input needs at least one spatial dimension");
  Node window = n;
  const size_t spatial = x.shape.size() - 2;
  window.kernel.assign(x.shape.begin() + 2, x.shape.end());
  window.strides.assign(spatial, 1);
  window.dilations.assign(spatial, 1);
  window.pads_begin.assign(spatial, 0);
  window.pads_end.assign(spatial, 0);
  window.auto_pad = "NOTSET";
  window.op = OpKind::kAveragePool;
  window.count_include_pad = false;
  window.ceil_mode = false;
  return CompilePool(window);
}

absl::Status Network::Impl::CompileEltwise(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  auto [alpha, beta] = EltwiseParams(n.op, n.alpha, n.beta);
  dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, PostOpAlgorithm(n.op),
                                   x.mem.get_desc(), alpha, beta);
  const bool keeps_grid = n.op == OpKind::kRelu;  // max(x, 0): 0 is on every grid
  AddSrcDstStep<dnnl::eltwise_forward>({desc, engine_}, x.mem, x.shape, n,
                                       keeps_grid ? x.grid : std::nullopt);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileBinary(const Node& n) {
  ASSIGN_OR_RETURN(Value a, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(Value b, Get(n.inputs[1], n));
  const size_t rank = std::max(a.shape.size(), b.shape.size());
  Shape out(rank, 1);
  auto aligned = [rank](const Shape& s) {
    Shape r(rank - s.size(), 1);
    r.insert(r.end(), s.begin(), s.end());
    return r;
  };
  const Shape as = aligned(a.shape), bs = aligned(b.shape);
  for (size_t i = 0; i < rank; ++i) {
    if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1) {
      return NodeError(n, absl::StrCat("shapes ", ShapeToString(a.shape), " and ",
                                   ShapeToString(b.shape), " do not broadcast"));
    }
    out[i] = std::max(as[i], bs[i]);
  }
  if (as.size() != a.shape.size()) a = View(Plain(n.inputs[0], a), as);
  if (bs.size() != b.shape.size()) b = View(Plain(n.inputs[1], b), bs);
  const dnnl::algorithm alg =
      n.op == OpKind::kAdd ? dnnl::algorithm::binary_add : dnnl::algorithm::binary_mul;
  if (a.shape != out) std::swap(a, b);  // Add and Mul commute
  if (a.shape != out) {
    // Both operands broadcast: materialize the first one at the output shape (0 + a).
    Tensor zeros = Tensor::Float(out);
    memory zero_mem = ConstantMemory(DnnlDims(out), zeros.floats().data());
    dnnl::binary::desc expand_desc(dnnl::algorithm::binary_add, zero_mem.get_desc(),
                                   a.mem.get_desc(), zero_mem.get_desc());
    dnnl::binary::primitive_desc expand_pd(expand_desc, engine_);
    memory expanded(expand_pd.dst_desc(), engine_);
    AddStep(dnnl::binary(expand_pd),
            {{DNNL_ARG_SRC_0, zero_mem}, {DNNL_ARG_SRC_1, a.mem}, {DNNL_ARG_DST, expanded}}, &n);
    a = Value{out, expanded};
  }
  // Same-shape operands in different layouts: bring the second to the first's layout so the
  // optimized kernel applies.
  if (b.shape == a.shape && b.mem.get_desc() != a.mem.get_desc()) {
    memory reordered(a.mem.get_desc(), engine_);
    AddStep(dnnl::reorder(b.mem, reordered), {{DNNL_ARG_FROM, b.mem}, {DNNL_ARG_TO, reordered}}, &n);
    b.mem = reordered;
  }
  dnnl::binary::desc desc(alg, a.mem.get_desc(), b.mem.get_desc(), a.mem.get_desc());
  dnnl::binary::primitive_desc pd(desc, engine_);
  memory dst(pd.dst_desc(), engine_);
  AddStep(dnnl::binary(pd), {{DNNL_ARG_SRC_0, a.mem}, {DNNL_ARG_SRC_1, b.mem}, {DNNL_ARG_DST, dst}},
          &n);
  values_[n.outputs[0]] = Value{out, dst};
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileConcat(const Node& n) {
  std::vector<Value> parts;
  for (const std::string& in : n.inputs) {
    ASSIGN_OR_RETURN(Value v, Get(in, n));
    parts.push_back(v);
  }
  const int64_t rank = static_cast<int64_t>(parts[0].shape.size());
  if (rank == 0) return NodeError(n, "cannot concatenate scalars");
  ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(n.axis, rank, n));
  Shape out = parts[0].shape;
  out[axis] = 0;
  std::vector<memory::desc> descs;
  std::unordered_map<int, memory> args;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Shape& s = parts[i].shape;
    for (int64_t d = 0; d < rank; ++d) {
      if (static_cast<int64_t>(s.size()) != rank || (d != axis && s[d] != parts[0].shape[d])) {
        return NodeError(n, absl::StrCat("input ", i, " of shape ", ShapeToString(s),
                                     " does not match ", ShapeToString(parts[0].shape),
                                     " outside axis ", axis));
      }
    }
    out[axis] += s[axis];
    descs.push_back(parts[i].mem.get_desc());
    args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] = parts[i].mem;
  }
  dnnl::concat::primitive_desc pd(static_cast<int>(axis), descs, engine_);
  memory dst(pd.dst_desc(), engine_);
  args[DNNL_ARG_DST] = dst;
  AddStep(dnnl::concat(pd), std::move(args), &n);
  std::optional<quant::Quantizer> grid = parts[0].grid;
  for (const Value& part : parts) {
    if (!grid || !part.grid || !quant::SameGrid(*grid, *part.grid)) grid.reset();
  }
  values_[n.outputs[0]] = Value{out, dst, grid};
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileBatchNorm(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (x.shape.size() < 2) return NodeError(n, "input needs a channel dimension");
  const int64_t c = x.shape[1];
  std::vector<memory> params;
  for (int i = 1; i < 5; ++i) {
    const Tensor& t = graph_.constants.at(n.inputs[i]);
    if (t.num_elements() != c || t.dtype() != DataType::kFloat) {
      return NodeError(n, absl::StrCat("input '", n.inputs[i], "' needs ", c, " float values"));
    }
    params.push_back(ConstantMemory({c}, t.floats().data()));
  }
  const Shape original_shape = x.shape;
  memory::desc src_desc = x.mem.get_desc();
  if (x.shape.size() == 2) {  // oneDNN wants a spatial dimension: view [N,C] as [N,C,1]
    x = View(Plain(n.inputs[0], x), {x.shape[0], c, 1});
    src_desc = x.mem.get_desc();
  }
  dnnl::batch_normalization_forward::desc desc(
      dnnl::prop_kind::forward_inference, src_desc, n.epsilon,
      dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
          dnnl::normalization_flags::use_shift);
  dnnl::batch_normalization_forward::primitive_desc pd(desc, engine_);
  memory dst(pd.dst_desc(), engine_);
  AddStep(dnnl::batch_normalization_forward(pd),
          {{DNNL_ARG_SRC, x.mem},
           {DNNL_ARG_SCALE, params[0]},
           {DNNL_ARG_SHIFT, params[1]},
           {DNNL_ARG_MEAN, params[2]},
           {DNNL_ARG_VARIANCE, params[3]},
           {DNNL_ARG_DST, dst}},
          &n);
  Value out{x.shape, dst};
  if (original_shape.size() == 2) out = View(out, original_shape);
  values_[n.outputs[0]] = out;
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileLrn(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (x.shape.size() < 3) return NodeError(n, "input needs rank >= 3 (N, C, spatial...)");
  dnnl::lrn_forward::desc desc(dnnl::prop_kind::forward_inference,
                               dnnl::algorithm::lrn_across_channels, x.mem.get_desc(), n.size,
                               n.alpha, n.beta, n.bias);
  AddSrcDstStep<dnnl::lrn_forward>({desc, engine_}, x.mem, x.shape, n);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileSoftmax(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) return NodeError(n, "input must have rank >= 1");
  ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(n.axis, rank, n));
  Value in = Plain(n.inputs[0], x);
  if (n.softmax_coerce_2d) {
    in = View(in, {Product(x.shape, 0, axis), Product(x.shape, axis, rank)});
    axis = 1;
  }
  dnnl::softmax_forward::desc desc(dnnl::prop_kind::forward_inference, in.mem.get_desc(),
                                   static_cast<int>(axis));
  dnnl::softmax_forward::primitive_desc pd(desc, engine_);
  Value out{in.shape, memory(pd.dst_desc(), engine_)};
  AddStep(dnnl::softmax_forward(pd), {{DNNL_ARG_SRC, in.mem}, {DNNL_ARG_DST, out.mem}}, &n);
  values_[n.outputs[0]] = View(out, x.shape);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileGemm(const Node& n) {
  ASSIGN_OR_RETURN(Value a, LayerInput(n, n.inputs[0]));
  if (a.shape.size() != 2) return NodeError(n, absl::StrCat("A must be 2-D, got ", ShapeToString(a.shape)));
  a = Plain(n.inputs[0], a);
  const int64_t m = n.trans_a ? a.shape[1] : a.shape[0];
  const int64_t k = n.trans_a ? a.shape[0] : a.shape[1];
  const Tensor& b_given = graph_.constants.at(n.inputs[1]);
  if (b_given.shape().size() != 2) return NodeError(n, "B must be 2-D");
  const Tensor b = n.trans_b ? b_given : Transposed2D(b_given);
  const int64_t bk = b.shape()[1];
  const int64_t nn = b.shape()[0];
  if (bk != k) {
    return NodeError(n, absl::StrCat("A ", ShapeToString(a.shape), " and B ", ShapeToString(b.shape()),
                                 " disagree on K (transA=", n.trans_a, ", transB=", n.trans_b, ")"));
  }
  // Constant operands are prepared once: B (held as [N, K], output channels first, so per-channel
  // weight quantization sees rows) quantized, transposed to [K, N] and scaled by alpha; C
  // broadcast to [1, N] or [M, N] and scaled by beta.
  Tensor b_nk = b;
  QuantizeWeights(n, &b_nk, nn);
  std::vector<float> b_kn(k * nn);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < nn; ++j) b_kn[i * nn + j] = n.alpha * b_nk.floats()[j * k + i];
  }
  const memory::desc src_desc(Dims{m, k}, memory::data_type::f32,
                              n.trans_a ? Dims{1, m} : Dims{k, 1});
  memory::desc bias_desc;
  std::vector<float> bias;
  if (n.inputs.size() > 2 && !n.inputs[2].empty() && n.beta != 0.0f) {
    const Tensor& c = graph_.constants.at(n.inputs[2]);
    Shape cs = c.shape();
    if (cs.size() > 2) return NodeError(n, "C must have rank <= 2");
    while (cs.size() < 2) cs.insert(cs.begin(), 1);
    if ((cs[0] != 1 && cs[0] != m) || (cs[1] != 1 && cs[1] != nn)) {
      return NodeError(n, absl::StrCat("C ", ShapeToString(c.shape()), " does not broadcast to [", m,
                                   ",", nn, "]"));
    }
    const int64_t rows = cs[0] == 1 ? 1 : m;
    bias.resize(rows * nn);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < nn; ++j) {
        bias[i * nn + j] = n.beta * c.floats()[(cs[0] == 1 ? 0 : i) * cs[1] + (cs[1] == 1 ? 0 : j)];
      }
    }
    bias_desc = PlainDesc({rows, nn});
  }
  dnnl::matmul::desc desc(src_desc, AnyDesc({k, nn}), bias_desc, PlainDesc({m, nn}));
  bool output_fused = false;
  dnnl::matmul::primitive_desc pd(desc, LayerAttr(n, &output_fused), engine_);
  memory src = a.mem;
  if (n.trans_a) src = memory(src_desc, engine_, a.mem.get_data_handle());
  memory weights = ReorderNow(ConstantMemory({k, nn}, b_kn.data()), pd.weights_desc());
  memory dst(pd.dst_desc(), engine_);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  if (!bias.empty()) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc.dims(), bias.data());
  AddStep(dnnl::matmul(pd), std::move(args), &n);
  LayerInfo info;
  info.layer_class = LayerClass::kFc;
  info.weight_shape = b_given.shape();
  info.input_shape = n.trans_a ? Shape{k, 1} : Shape{1, k};
  info.output_shape = {1, nn};
  info.fan_in = k;
  info.macs = k * nn;
  info.weight_count = k * nn;
  info.bias_count = bias.empty() ? 0 : nn;
  FinishLayer(n, Value{{m, nn}, dst}, output_fused, std::move(info));
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileMatMul(const Node& n) {
  ASSIGN_OR_RETURN(Value a, LayerInput(n, n.inputs[0]));
  ASSIGN_OR_RETURN(Value b, Get(n.inputs[1], n));
  if (a.shape.empty() || b.shape.empty()) return NodeError(n, "operands must have rank >= 1");
  Shape as = a.shape, bs = b.shape;
  const bool a_vector = as.size() == 1, b_vector = bs.size() == 1;
  if (a_vector) as.insert(as.begin(), 1);
  if (b_vector) bs.push_back(1);
  const size_t rank = std::max(as.size(), bs.size());
  while (as.size() < rank) as.insert(as.begin(), 1);
  while (bs.size() < rank) bs.insert(bs.begin(), 1);
  if (as[rank - 1] != bs[rank - 2]) {
    return NodeError(n, absl::StrCat("shapes ", ShapeToString(a.shape), " and ", ShapeToString(b.shape),
                                 " disagree on K"));
  }
  Shape out(rank);
  for (size_t i = 0; i + 2 < rank; ++i) {
    if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1) {
      return NodeError(n, absl::StrCat("batch dimensions of ", ShapeToString(a.shape), " and ",
                                   ShapeToString(b.shape), " do not broadcast"));
    }
    out[i] = std::max(as[i], bs[i]);
  }
  out[rank - 2] = as[rank - 2];
  out[rank - 1] = bs[rank - 1];
  a = View(Plain(n.inputs[0], a), as);
  const bool b_constant = graph_.IsConstant(n.inputs[1]);
  const quant::LayerQuantPlan* plan = PlanFor(n);
  const bool quantize_weights = plan != nullptr && plan->weights.kind != quant::FormatKind::kFp32;
  memory b_mem;
  if (b_constant) {
    // Weights: per-channel quantization wants output channels (B's columns) as rows.
    Tensor bt = graph_.constants.at(n.inputs[1]);
    if (quantize_weights) {
      if (plan->weights.per_channel && bt.shape().size() != 2) {
        return NodeError(n, "per-channel weights need a 2-D constant B");
      }
      const bool columns = bt.shape().size() == 2;
      Tensor rows = columns ? Transposed2D(bt) : bt;
      QuantizeWeights(n, &rows, columns ? rows.shape()[0] : 1);
      bt = columns ? Transposed2D(rows) : rows;
    }
    b_mem = ConstantMemory(DnnlDims(bs), bt.floats().data());
  } else {
    if (quantize_weights) return NodeError(n, "weight quantization needs a constant B operand");
    b = View(Plain(n.inputs[1], b), bs);
    b_mem = b.mem;
  }
  dnnl::matmul::desc desc(a.mem.get_desc(), b_constant ? AnyDesc(DnnlDims(bs)) : b_mem.get_desc(),
                          PlainDesc(DnnlDims(out)));
  bool output_fused = false;
  dnnl::matmul::primitive_desc pd(desc, LayerAttr(n, &output_fused), engine_);
  memory weights = b_constant ? ReorderNow(b_mem, pd.weights_desc()) : b_mem;
  Value result{out, memory(pd.dst_desc(), engine_)};
  AddStep(dnnl::matmul(pd),
          {{DNNL_ARG_SRC, a.mem}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, result.mem}}, &n);
  Shape logical = out;
  if (b_vector) logical.erase(logical.end() - 1);
  if (a_vector) logical.erase(logical.end() - (b_vector ? 1 : 2));
  LayerInfo info;
  info.layer_class = LayerClass::kFc;
  info.weight_shape = b.shape;
  info.input_shape = a.shape;
  info.output_shape = logical;
  if (!info.input_shape.empty() && !a_vector) info.input_shape[0] = 1;
  if (!info.output_shape.empty() && !a_vector) info.output_shape[0] = 1;
  const int64_t k = as[rank - 1];
  info.fan_in = k;
  info.macs = NumElements(out) / (a_vector ? 1 : std::max<int64_t>(out[0], 1)) * k;
  info.weight_count = NumElements(bs);
  FinishLayer(n, View(result, logical), output_fused, std::move(info));
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileReshapeLike(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (n.op == OpKind::kIdentity) {
    values_[n.outputs[0]] = x;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Shape out, ViewOutputShape(n, x.shape));
  values_[n.outputs[0]] = View(Plain(n.inputs[0], x), out);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileNode(const Node& n) {
  switch (n.op) {
    case OpKind::kConv: return CompileConv(n);
    case OpKind::kGemm: return CompileGemm(n);
    case OpKind::kMatMul: return CompileMatMul(n);
    case OpKind::kRelu:
    case OpKind::kLeakyRelu:
    case OpKind::kClip:
    case OpKind::kSigmoid: return CompileEltwise(n);
    case OpKind::kMaxPool:
    case OpKind::kAveragePool: return CompilePool(n);
    case OpKind::kGlobalAveragePool: return CompileGlobalAveragePool(n);
    case OpKind::kConcat: return CompileConcat(n);
    case OpKind::kAdd:
    case OpKind::kMul: return CompileBinary(n);
    case OpKind::kBatchNorm: return CompileBatchNorm(n);
    case OpKind::kLrn: return CompileLrn(n);
    case OpKind::kSoftmax: return CompileSoftmax(n);
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kIdentity: return CompileReshapeLike(n);
  }
  return NodeError(n, "unknown operator kind");
}

absl::Status Network::Impl::Compile() {
  if (options_.fold_batch_norm) FoldBatchNorm(&graph_);
  if (options_.fuse_activations) FuseActivations(&graph_);
  if (options_.threads > 0) omp_set_num_threads(options_.threads);

  for (const ValueInfo& declared : graph_.inputs) {
    ValueInfo info = declared;
    auto it = options_.input_shapes.find(info.name);
    if (it != options_.input_shapes.end()) {
      info.shape = it->second;
    } else if (!info.shape.empty()) {
      info.shape[0] = options_.batch;
    }
    for (size_t i = 0; i < info.shape.size(); ++i) {
      if (info.shape[i] < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            graph_.source, ": input '", info.name, "' has unknown dimension ", i, " in ",
            ShapeToString(declared.shape), "; give its full shape"));
      }
    }
    memory mem(PlainDesc(DnnlDims(info.shape)), engine_);
    input_mems_.push_back(mem);
    values_[info.name] = Value{info.shape, mem};
    inputs_.push_back(std::move(info));
  }
  for (const Node& n : graph_.nodes) {
    try {
      RETURN_IF_ERROR(CompileNode(n));
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("node '", n.name, "' (", n.onnx_op,
                                              "): oneDNN rejected it: ", e.what()));
    }
  }
  for (const std::string& name : graph_.outputs) {
    auto it = values_.find(name);
    if (it == values_.end()) {
      Node edge;
      edge.name = name;
      edge.onnx_op = "graph output";
      ASSIGN_OR_RETURN(Value v, Get(name, edge));  // a constant output
      it = values_.find(name);
    }
    Value plain = Plain(name, it->second);
    output_mems_.push_back(plain.mem);
    outputs_.push_back(ValueInfo{name, plain.shape});
  }
  return absl::OkStatus();
}

absl::Status Network::Impl::ExecuteSteps() {
  for (Step& step : steps_) {
    try {
      if (step.host) {
        stream_.wait();  // host steps read what the primitives before them wrote
        step.host();
      } else {
        step.primitive.execute(stream_, step.args);
      }
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat(
          "node '", step.node.empty() ? "output reorder" : step.node, "' failed: ", e.what()));
    }
  }
  stream_.wait();
  return absl::OkStatus();
}

absl::Status Network::Impl::RunSingle(const float* input, float* output) {
  if (input_mems_.size() != 1 || output_mems_.empty()) {
    return absl::FailedPreconditionError("RunSingle needs a network with exactly one input");
  }
  if (options_.threads > 0) omp_set_num_threads(options_.threads);
  std::memcpy(input_mems_[0].get_data_handle(), input, input_mems_[0].get_desc().get_size());
  RETURN_IF_ERROR(ExecuteSteps());
  std::memcpy(output, output_mems_[0].get_data_handle(), output_mems_[0].get_desc().get_size());
  return absl::OkStatus();
}

absl::Status Network::Impl::Run(const std::map<std::string, const Tensor*>& inputs,
                                std::map<std::string, Tensor>* outputs) {
  if (options_.threads > 0) omp_set_num_threads(options_.threads);
  for (size_t i = 0; i < inputs_.size(); ++i) {
    auto it = inputs.find(inputs_[i].name);
    if (it == inputs.end() || it->second == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("missing input '", inputs_[i].name, "'"));
    }
    const Tensor& t = *it->second;
    if (t.dtype() != DataType::kFloat || t.shape() != inputs_[i].shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", inputs_[i].name, "' has shape ", ShapeToString(t.shape()),
          "; the network was compiled for float32 ", ShapeToString(inputs_[i].shape)));
    }
    std::memcpy(input_mems_[i].get_data_handle(), t.floats().data(), t.floats().size() * 4);
  }
  RETURN_IF_ERROR(ExecuteSteps());
  outputs->clear();
  for (size_t i = 0; i < outputs_.size(); ++i) {
    Tensor t = Tensor::Float(outputs_[i].shape);
    std::memcpy(t.floats().data(), output_mems_[i].get_data_handle(), t.floats().size() * 4);
    (*outputs)[outputs_[i].name] = std::move(t);
  }
  return absl::OkStatus();
}

Network::Network(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Network::~Network() = default;

absl::StatusOr<std::unique_ptr<Network>> Network::Create(const Graph& graph,
                                                         const NetworkOptions& options) {
  if (options.batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must be >= 1, got ", options.batch));
  }
  auto impl = std::make_unique<Impl>(graph, options);
  try {
    RETURN_IF_ERROR(impl->Compile());
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(graph.source, ": oneDNN error: ", e.what()));
  }
  return std::unique_ptr<Network>(new Network(std::move(impl)));
}

const std::vector<ValueInfo>& Network::inputs() const { return impl_->inputs_; }
const std::vector<ValueInfo>& Network::outputs() const { return impl_->outputs_; }
const Graph& Network::graph() const { return impl_->graph_; }
const std::vector<LayerInfo>& Network::layers() const { return impl_->layers_; }
const std::map<std::string, quant::Quantizer>& Network::weight_quantizers() const {
  return impl_->weight_quantizers_;
}

absl::Status Network::Run(const std::map<std::string, const Tensor*>& inputs,
                          std::map<std::string, Tensor>* outputs) {
  return impl_->Run(inputs, outputs);
}

absl::Status Network::RunSingle(const float* input, float* output) {
  return impl_->RunSingle(input, output);
}

}  // namespace bitsweep::engine
