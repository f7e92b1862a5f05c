#include "worker/engine/network.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/inference_compiler.h"

namespace bitsweep::engine {

using dnnl::memory;
using Dims = memory::dims;

class Network::Impl : public InferenceCompiler {
 public:
  Impl(Graph graph, const NetworkOptions& options)
      : InferenceCompiler(std::move(graph),
                          {.batch = options.batch,
                           .input_shapes = options.input_shapes,
                           .threads = options.threads,
                           .unnamed_step = "output reorder",
                           .quant = options.quant,
                           .move_quantizers = !options.observer,
                           .reuse_buffers = options.reuse_buffers}),
        options_(options) {}

 private:
  absl::Status PrepareGraph() override;
  absl::Status CompileConv(const Node& n) override;
  absl::Status CompileGemm(const Node& n) override;
  absl::Status CompileMatMul(const Node& n) override;
  absl::Status CompileEltwise(const Node& n) override;
  absl::Status CompilePool(const Node& n) override;
  absl::Status CompileConcat(const Node& n) override;

  // Quantization and observation around quantizable layers.
  // The layer's data input, quantized (on a copy) when the plan asks for it.
  absl::StatusOr<Value> LayerInput(const Node& n, const std::string& name);
  // `weights` quantized in place per the plan; `channels` is the size of dimension 0.
  void QuantizeWeights(const Node& n, Tensor* weights, int64_t channels);
  // Post-ops of the layer: its fused activations, then the output quantizer when it can be fused
  // (and its readers' input quantizer after it, AppendLayerQuantizerPostOps).
  dnnl::primitive_attr LayerAttr(const Node& n, bool* output_quantizer_fused);
  // Registers the layer's output value: host quantization when not fused, grid, observer, info.
  void FinishLayer(const Node& n, Value out, bool output_quantizer_fused, quant::LayerInfo info);
  void Observe(const Node& n, bool is_output, const std::string& name, const Value& v);
  // Constant `data` (laid out as `from`) reordered into new memory of layout `to`: one copy,
  // straight from the Tensor, which the network does not point into.
  memory CopyConstant(const memory::desc& from, const float* data, const memory::desc& to);

 public:
  // After compiling, the weights live in the primitives' memory only.
  void ReleaseConstants() { graph_.constants.clear(); }

 private:

  NetworkOptions options_;
};

void Network::Impl::Observe(const Node& n, bool is_output, const std::string& name,
                            const Value& v) {
  if (!options_.observer) return;
  const Value plain = Plain(name, v);
  const float* data = static_cast<const float*>(plain.mem.get_data_handle());
  const int64_t count = NumElements(plain.shape);
  AddHostStep([observer = options_.observer, layer = n.name, is_output, data, count] {
    observer(layer, is_output, data, count);
  }, n, {data});
}

absl::StatusOr<Network::Impl::Value> Network::Impl::LayerInput(const Node& n,
                                                               const std::string& name) {
  ASSIGN_OR_RETURN(Value x, Get(name, n));
  Observe(n, /*is_output=*/false, name, x);
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr || plan->inputs.format.kind == quant::FormatKind::kFp32) return x;
  if (x.grid && quant::SameGrid(*x.grid, plan->inputs)) return x;
  return QuantizeLayerInput(n, name, x);
}

memory Network::Impl::CopyConstant(const memory::desc& from, const float* data,
                                   const memory::desc& to) {
  memory src(from, engine_, const_cast<float*>(data));
  memory dst(to, engine_);
  dnnl::reorder(src, dst).execute(stream_, src, dst);
  stream_.wait();
  return dst;
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

dnnl::primitive_attr Network::Impl::LayerAttr(const Node& n, bool* output_quantizer_fused) {
  *output_quantizer_fused = false;
  dnnl::primitive_attr attr = PostOpAttr(n.post_ops);
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr) return attr;
  dnnl::post_ops ops = attr.get_post_ops();
  *output_quantizer_fused = AppendLayerQuantizerPostOps(n, plan->outputs, &ops);
  attr.set_post_ops(ops);
  return attr;
}

void Network::Impl::FinishLayer(const Node& n, Value out, bool output_quantizer_fused,
                                quant::LayerInfo info) {
  QuantizeLayerOutput(n, &out, output_quantizer_fused);
  info.name = n.name;
  info.output_non_negative = PostOpsNonNegative(n.post_ops);
  layers_.push_back(std::move(info));
  values_[n.outputs[0]] = out;
  Observe(n, /*is_output=*/true, n.outputs[0], out);
}

absl::Status Network::Impl::CompileConv(const Node& n) {
  ASSIGN_OR_RETURN(Value x, LayerInput(n, n.inputs[0]));
  Tensor w = graph_.constants.at(n.inputs[1]).Share();  // copied only if quantized
  const Shape ws = w.shape();
  if (x.shape.size() != ws.size() || x.shape[1] != ws[1] * n.group) {
    return NodeError(n, absl::StrCat("input ", ShapeToString(x.shape), " does not fit weights ",
                                     ShapeToString(ws), " with group ", n.group));
  }
  Dims pb, pe;
  ASSIGN_OR_RETURN(const Shape out_shape, WindowOutputShape(n, x.shape, ws[0], false, &pb, &pe));
  const Dims w_dims = ConvWeightDims(ws, n.group);
  const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
  const memory::desc bias_desc = has_bias ? PlainDesc({ws[0]}) : memory::desc();
  bool output_fused = false;
  const dnnl::primitive_attr attr = LayerAttr(n, &output_fused);
  auto make_pd = [&, x_shape = x.shape, out_shape](int64_t batch) {
    Dims src = DnnlDims(x_shape), dst = DnnlDims(out_shape);
    src[0] = dst[0] = batch;
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, AnyDesc(src),
        AnyDesc(w_dims), bias_desc, AnyDesc(dst), Dims(n.strides.begin(), n.strides.end()),
        DnnlDilations(n.dilations), pb, pe);
    return dnnl::convolution_forward::primitive_desc(desc, attr, engine_);
  };
  const dnnl::convolution_forward::primitive_desc pd = make_pd(out_shape[0]);
  QuantizeWeights(n, &w, ws[0]);

  const memory src = ReorderTo(x.mem, pd.src_desc(), &n);
  memory weights = CopyConstant(PlainDesc(w_dims), std::as_const(w).floats().data(),
                                pd.weights_desc());
  w = Tensor();
  memory dst = NewMemory(pd.dst_desc());
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  if (has_bias) {
    const Tensor& b = graph_.constants.at(n.inputs[2]);
    if (b.num_elements() != ws[0]) {
      return NodeError(n, absl::StrCat("bias has ", b.num_elements(), " values for ", ws[0],
                                       " output channels"));
    }
    args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, b.floats().data());
  }
  AddLayerStep(n, pd, dnnl::convolution_forward(pd), std::move(args), [make_pd](int64_t batch) {
    const dnnl::convolution_forward::primitive_desc sub = make_pd(batch);
    return std::make_pair(dnnl::primitive(dnnl::convolution_forward(sub)),
                          dnnl::primitive_desc(sub));
  });
  FinishLayer(n, Value{out_shape, dst}, output_fused,
              ConvLayerInfo(ws, x.shape, out_shape, has_bias));
  return absl::OkStatus();
}

absl::Status Network::Impl::CompilePool(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  Dims pb, pe;
  ASSIGN_OR_RETURN(const Shape out_shape,
                   WindowOutputShape(n, x.shape, std::nullopt, n.ceil_mode, &pb, &pe));
  ASSIGN_OR_RETURN(const dnnl::algorithm alg, PoolingAlgorithm(n, pe));
  dnnl::pooling_v2_forward::desc desc(
      dnnl::prop_kind::forward_inference, alg, x.mem.get_desc(), AnyDesc(DnnlDims(out_shape)),
      Dims(n.strides.begin(), n.strides.end()), Dims(n.kernel.begin(), n.kernel.end()),
      DnnlDilations(n.dilations), pb, pe);
  // Max pooling keeps its input's grid: the max of grid values is one of them.
  AddSrcDstStep<dnnl::pooling_v2_forward>(
      {desc, engine_}, x.mem,
      Value{out_shape, memory(), n.op == OpKind::kMaxPool ? x.grid : std::nullopt}, n);
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileEltwise(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  const bool keeps_grid = n.op == OpKind::kRelu;  // max(x, 0): 0 is on every grid
  values_[n.outputs[0]] =
      Value{x.shape, AddEltwise(n, x.mem), keeps_grid ? x.grid : std::nullopt};
  return absl::OkStatus();
}

absl::Status Network::Impl::CompileConcat(const Node& n) {
  std::vector<Value> parts;
  for (const std::string& in : n.inputs) {
    ASSIGN_OR_RETURN(Value v, Get(in, n));
    parts.push_back(v);
  }
  // The result is on a grid only when every part is on that same grid.
  std::optional<quant::Quantizer> grid = parts[0].grid;
  for (const Value& part : parts) {
    if (!grid || !part.grid || !quant::SameGrid(*grid, *part.grid)) grid.reset();
  }
  return AddConcat(n, parts, std::move(grid));
}

absl::Status Network::Impl::CompileGemm(const Node& n) {
  ASSIGN_OR_RETURN(Value a, LayerInput(n, n.inputs[0]));
  if (a.shape.size() != 2) {
    return NodeError(n, absl::StrCat("A must be 2-D, got ", ShapeToString(a.shape)));
  }
  a = Plain(n.inputs[0], a);
  const int64_t m = n.trans_a ? a.shape[1] : a.shape[0];
  const int64_t k = n.trans_a ? a.shape[0] : a.shape[1];
  const Tensor& b_given = graph_.constants.at(n.inputs[1]);
  if (b_given.shape().size() != 2) return NodeError(n, "B must be 2-D");
  // B as [N, K], output channels first (the rows per-channel weight quantization wants): the
  // given values themselves when transB is set (PyTorch's Linear), not a copy.
  Tensor b = n.trans_b ? b_given.Share() : Transposed2D(b_given);
  const int64_t bk = b.shape()[1];
  const int64_t nn = b.shape()[0];
  if (bk != k) {
    return NodeError(n, absl::StrCat("A ", ShapeToString(a.shape), " and B ",
                                     ShapeToString(b.shape()), " disagree on K (transA=",
                                     n.trans_a, ", transB=", n.trans_b, ")"));
  }
  // Constant operands are prepared once: B quantized and scaled by alpha (on a copy, only when
  // asked), then read by oneDNN as [K, N] (strides {1, K}) straight into the primitive's layout;
  // C broadcast to [1, N] or [M, N] and scaled by beta.
  QuantizeWeights(n, &b, nn);
  if (n.alpha != 1.0f) {
    for (float& v : b.floats()) v *= n.alpha;
  }
  const memory::desc src_desc(Dims{m, k}, memory::data_type::f32,
                              n.trans_a ? Dims{1, m} : Dims{k, 1});
  int64_t bias_rows = 0;
  ASSIGN_OR_RETURN(const std::vector<float> bias, GemmBias(n, graph_, m, nn, n.beta, &bias_rows));
  const memory::desc bias_desc = bias.empty() ? memory::desc() : PlainDesc({bias_rows, nn});
  dnnl::matmul::desc desc(src_desc, AnyDesc({k, nn}), bias_desc, PlainDesc({m, nn}));
  bool output_fused = false;
  dnnl::matmul::primitive_desc pd(desc, LayerAttr(n, &output_fused), engine_);
  memory src = a.mem;
  if (n.trans_a) src = memory(src_desc, engine_, a.mem.get_data_handle());
  memory weights = CopyConstant(memory::desc({k, nn}, memory::data_type::f32, Dims{1, k}),
                                std::as_const(b).floats().data(), pd.weights_desc());
  b = Tensor();
  memory dst = NewMemory(pd.dst_desc());
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  if (!bias.empty()) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, bias.data());
  AddStep(dnnl::matmul(pd), std::move(args), &n);
  FinishLayer(n, Value{{m, nn}, dst}, output_fused,
              GemmLayerInfo(b_given.shape(), k, nn, n.trans_a, !bias.empty()));
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
  Tensor bt;  // constant B
  if (b_constant) {
    // Weights: per-channel quantization wants output channels (B's columns) as rows.
    bt = graph_.constants.at(n.inputs[1]).Share();
    if (quantize_weights) {
      if (plan->weights.per_channel && bt.shape().size() != 2) {
        return NodeError(n, "per-channel weights need a 2-D constant B");
      }
      const bool columns = bt.shape().size() == 2;
      Tensor rows = columns ? Transposed2D(bt) : bt;
      QuantizeWeights(n, &rows, columns ? rows.shape()[0] : 1);
      bt = columns ? Transposed2D(rows) : rows;
    }
  } else {
    if (quantize_weights) return NodeError(n, "weight quantization needs a constant B operand");
    b = View(Plain(n.inputs[1], b), bs);
    b_mem = b.mem;
  }
  dnnl::matmul::desc desc(a.mem.get_desc(), b_constant ? AnyDesc(DnnlDims(bs)) : b_mem.get_desc(),
                          PlainDesc(DnnlDims(out)));
  bool output_fused = false;
  dnnl::matmul::primitive_desc pd(desc, LayerAttr(n, &output_fused), engine_);
  memory weights = b_constant ? CopyConstant(PlainDesc(DnnlDims(bs)),
                                             std::as_const(bt).floats().data(), pd.weights_desc())
                              : b_mem;
  bt = Tensor();
  Value result{out, NewMemory(pd.dst_desc())};
  AddStep(dnnl::matmul(pd),
          {{DNNL_ARG_SRC, a.mem}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, result.mem}}, &n);
  Shape logical = out;
  if (b_vector) logical.erase(logical.end() - 1);
  if (a_vector) logical.erase(logical.end() - (b_vector ? 1 : 2));
  quant::LayerInfo info;
  info.layer_class = quant::LayerClass::kFc;
  info.weight_shape = b.shape;
  info.input_shape = a.shape;
  info.output_shape = logical;
  if (!info.input_shape.empty() && !a_vector) info.input_shape[0] = 1;
  if (!info.output_shape.empty() && !a_vector) info.output_shape[0] = 1;
  const int64_t k = as[rank - 1];
  info.fan_in = k;
  info.macs = NumElements(out) / (a_vector ? 1 : std::max<int64_t>(out[0], 1)) * k;
  info.weight_count = NumElements(bs);
  info.output_channels = bs.empty() ? 1 : bs.back();
  FinishLayer(n, View(result, logical), output_fused, std::move(info));
  return absl::OkStatus();
}

absl::Status Network::Impl::PrepareGraph() {
  if (options_.fold_batch_norm) FoldBatchNorm(&graph_);
  if (options_.fuse_activations) FuseActivations(&graph_);
  return absl::OkStatus();
}

Network::Network(std::unique_ptr<Impl> impl) : InferenceNetwork(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Network>> Network::Create(const Graph& graph,
                                                         const NetworkOptions& options) {
  auto impl = std::make_unique<Impl>(graph.SharedCopy(), options);
  RETURN_IF_ERROR(impl->Compile());
  impl->ReleaseConstants();
  return std::unique_ptr<Network>(new Network(std::move(impl)));
}

}  // namespace bitsweep::engine
