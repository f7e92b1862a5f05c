#include "worker/engine/int8/int8_network.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "quant/format.h"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/graph_passes.h"
#include "worker/engine/inference_compiler.h"

namespace bitsweep::engine::int8 {
namespace {

using dnnl::memory;
using Dims = memory::dims;
using ElementType = memory::data_type;
using quant::FormatKind;
using quant::Quantizer;

// Symmetric 8-bit codes: [-127, 127] (the emulation's int:8:sym range, not s8's -128).
constexpr double kCodeMax = 127.0;

enum class LayerMode { kFloat, kInt8 };

ElementType TypeOf(const memory::desc& d) { return static_cast<ElementType>(d.data.data_type); }

// The same layout (dims, strides or blocking) with another element type.
memory::desc WithType(const memory::desc& d, ElementType type) {
  memory::desc out = d;
  out.data.data_type = static_cast<dnnl_data_type_t>(type);
  return out;
}

memory::desc PlainOf(const Dims& dims, ElementType type) {
  return WithType(PlainDesc(dims), type);
}

memory::desc AnyOf(const Dims& dims, ElementType type) {
  return memory::desc(dims, type, memory::format_tag::any);
}

size_t ElementSize(ElementType type) {
  return type == ElementType::u8 || type == ElementType::s8 ? 1 : 4;
}

int64_t ElementCount(const memory& m) {
  return static_cast<int64_t>(m.get_desc().get_size() / ElementSize(TypeOf(m.get_desc())));
}

// ---------------------------------------------------------------------------------------------
// Host quantization with the emulation's math (format.cc, IntKernel with nearest-even rounding):
// y = fl(x * fl(1 / s)) (PyTorch's fake quantization rule), clamped to [-127, 127], rounded half
// to even. An int8 source stands for
// the float fl(code * scale), which is what the emulation holds.

template <typename In>
inline float SourceValue(const In* src, int64_t i, double src_scale) {
  if constexpr (std::is_same_v<In, float>) {
    return src[i];
  } else {
    return static_cast<float>(static_cast<double>(src[i]) * src_scale);
  }
}

inline int Code(float x, double scale) {
  const float inv = quant::IntInverse(scale);
  double y = static_cast<double>(x * inv);
  if (!(y == y)) return 0;  // NaN has no code
  y = y < -kCodeMax ? -kCodeMax : y;
  y = y > kCodeMax ? kCodeMax : y;
  return static_cast<int>(std::nearbyint(y));  // default rounding mode: half to even
}

// Non-negative source, any layout (per-tensor scale): element i -> u8 code i.
template <typename In>
void QuantizeElementwise(const In* src, double src_scale, uint8_t* dst, int64_t count,
                         double scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    dst[i] = static_cast<uint8_t>(std::max(0, Code(SourceValue(src, i, src_scale), scale)));
  }
}

// Plain [outer, channels, inner] source of either sign -> plain u8 [outer, 2 * channels, inner],
// each of the `groups` channel groups doubled in place: channel j of group g (of `per_group`)
// has max(code, 0) at 2 * per_group * g + j and max(-code, 0) at 2 * per_group * g + per_group
// + j, so a grouped convolution over the doubled channels sees each group's halves in its own
// group (see the header: why). One group: c at c and channels + c.
template <typename In>
void QuantizeSplit(const In* src, double src_scale, uint8_t* dst, int64_t outer, int64_t channels,
                   int64_t inner, int64_t groups, double scale) {
  const int64_t per_group = channels / groups;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < outer * channels; ++row) {
    const int64_t o = row / channels, c = row % channels;
    const int64_t g = c / per_group, j = c % per_group;
    const int64_t from = row * inner;
    uint8_t* pos = dst + (o * 2 * channels + 2 * per_group * g + j) * inner;
    uint8_t* neg = pos + per_group * inner;
    for (int64_t i = 0; i < inner; ++i) {
      const int code = Code(SourceValue(src, from + i, src_scale), scale);
      pos[i] = static_cast<uint8_t>(std::max(code, 0));
      neg[i] = static_cast<uint8_t>(std::max(-code, 0));
    }
  }
}

// Calls f(src) with `data` typed as `type` says (f32, u8 or s8): the host passes read any value.
template <typename F>
void WithTypedSource(ElementType type, const void* data, F f) {
  if (type == ElementType::f32) {
    f(static_cast<const float*>(data));
  } else if (type == ElementType::u8) {
    f(static_cast<const uint8_t*>(data));
  } else {
    f(static_cast<const int8_t*>(data));
  }
}

// The s8 codes of weights laid out [channels, count / channels] under `q` (int:8:sym): the
// emulation's q(w) divided by its channel's scale, which is an integer in [-127, 127].
std::vector<int8_t> WeightCodes(const Quantizer& q, const float* weights, int64_t count,
                                int64_t channels) {
  std::vector<float> quantized(weights, weights + count);
  quant::QuantizeInPlace(q, quantized.data(), count);
  const int64_t per = count / std::max<int64_t>(channels, 1);
  std::vector<int8_t> codes(count);
  for (int64_t i = 0; i < count; ++i) {
    const size_t c = q.format.per_channel ? static_cast<size_t>(i / per) : 0;
    codes[i] = static_cast<int8_t>(std::nearbyint(double{quantized[i]} / q.scale[c]));
  }
  return codes;
}

absl::Status LayerError(const std::string& layer, const std::string& role,
                        const quant::NumberFormat& format, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("int8 path: layer '", layer, "' ", role, " ",
                                                 quant::FormatToString(format), ": ", why));
}

absl::Status CheckRole(const std::string& layer, const std::string& role,
                       const quant::NumberFormat& f, bool allow_fp32) {
  if (f.kind == FormatKind::kFp32) {
    if (allow_fp32) return absl::OkStatus();
    return LayerError(layer, role, f,
                      "an int8 layer multiplies 8-bit codes, so its weights and inputs must be "
                      "int:8:sym (quantize all three roles, or none for an fp32 layer)");
  }
  if (f.kind != FormatKind::kInt) {
    return LayerError(layer, role, f,
                      "only int:8:sym runs on oneDNN's int8 primitives; this format is "
                      "emulated only (use eval without --int8)");
  }
  if (f.bits != 8) {
    return LayerError(layer, role, f,
                      "oneDNN's int8 primitives hold 8-bit codes; other widths are emulated only");
  }
  if (!f.symmetric) {
    return LayerError(
        layer, role, f,
        role == "weights"
            ? "asymmetric weights need weight zero points, which oneDNN 2.6 does not have"
            : "asymmetric activations use u8 codes up to 255, which can saturate the 16-bit "
              "pair sums of oneDNN's AVX2 int8 kernels (no VNNI), so the result would not be "
              "exact; use int:8:sym");
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerMode> ClassifyLayer(const Node& n, const quant::QuantPlan& plan) {
  auto it = plan.find(n.name);
  if (it == plan.end()) return LayerMode::kFloat;
  const quant::LayerQuantPlan& p = it->second;
  if (p.weights.kind == FormatKind::kFp32 && p.inputs.format.kind == FormatKind::kFp32 &&
      p.outputs.format.kind == FormatKind::kFp32) {
    return LayerMode::kFloat;
  }
  RETURN_IF_ERROR(CheckRole(n.name, "weights", p.weights, false));
  RETURN_IF_ERROR(CheckRole(n.name, "inputs", p.inputs.format, false));
  RETURN_IF_ERROR(CheckRole(n.name, "outputs", p.outputs.format, true));
  if (p.rounding != quant::Rounding::kNearestEven) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int8 path: layer '", n.name, "': rounding ", std::string(quant::RoundingName(p.rounding)),
        " cannot run exactly: oneDNN's int8 conversions round half to even (use nearest_even)"));
  }
  if (p.inputs.scale.size() != 1 ||
      (p.outputs.format.kind == FormatKind::kInt && p.outputs.scale.size() != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int8 path: layer '", n.name, "': the plan has no calibrated activation scale"));
  }
  if (n.op == OpKind::kGemm && n.trans_a) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int8 path: layer '", n.name, "': Gemm with transA=1 is not supported by the int8 path"));
  }
  if (n.op == OpKind::kGemm && n.alpha == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int8 path: layer '", n.name, "': Gemm with alpha=0 has no int8 form"));
  }
  return LayerMode::kInt8;
}

}  // namespace

absl::Status CheckInt8Plan(const Graph& graph, const quant::QuantPlan& plan) {
  Graph compiled = graph.SharedCopy();  // the folds below copy only what they change
  FoldBatchNorm(&compiled);
  FuseActivations(&compiled);
  int int8_layers = 0;
  for (const Node& n : compiled.nodes) {
    if (!IsQuantizableLayer(n.op)) continue;
    ASSIGN_OR_RETURN(LayerMode mode, ClassifyLayer(n, plan));
    int8_layers += mode == LayerMode::kInt8;
  }
  if (int8_layers == 0) {
    return absl::InvalidArgumentError(
        "int8 path: the config quantizes no layer to int:8:sym (weights, inputs and outputs), so "
        "there is nothing to run in int8");
  }
  return absl::OkStatus();
}

class Int8Network::Impl : public InferenceCompiler {
 public:
  Impl(Graph graph, const Int8NetworkOptions& options)
      : InferenceCompiler(std::move(graph),
                          {.batch = options.batch,
                           .input_shapes = options.input_shapes,
                           .threads = options.threads,
                           .error_prefix = "int8 path: ",
                           .unnamed_step = "reorder"}),
        options_(options) {}

  std::map<std::string, std::string> implementations_;
  void ReleaseConstants() { graph_.constants.clear(); }

 private:
  absl::Status PrepareGraph() override;
  absl::Status CompileConv(const Node& n) override;
  absl::Status CompileGemm(const Node& n) override;
  // MatMul with a constant 2-D B runs as a Gemm.
  absl::Status CompileMatMul(const Node& n) override { return CompileGemm(n); }
  absl::Status CompilePool(const Node& n) override;
  absl::Status CompileEltwise(const Node& n) override;
  absl::Status CompileConcat(const Node& n) override;

  // The value as f32 (int8 codes dequantized once by a reorder with their scale).
  Value AsFloat(const std::string& name, const Value& v) override;
  // u8 codes of `x` under the layer input quantizer `q`, in layout `want` (split: the doubled
  // channels of a signed input, doubled within each of `groups` channel groups; see the header).
  memory ToCodes(const Node& n, const std::string& name, const Value& x, const Quantizer& q,
                 bool split, int64_t groups, const memory::desc& want);
  // The output scale and post-ops of an int8 layer: acc * (s_in * s_w) -> activations ->
  // [x / s_out, clip +-127 when the output is quantized].
  dnnl::primitive_attr Int8Attr(const Node& n, const std::vector<float>& output_scales,
                                bool per_channel) const;
  void FinishLayer(const Node& n, Value out, quant::LayerInfo info, const std::string& impl);
  // The input quantizer every reader of `value` applies, looking through max pooling and views,
  // when all of them are int8 layers that agree on it; else nullopt.
  std::optional<Quantizer> ConsumerGrid(const std::string& value) const;
  // Non-negative `x` as u8 codes on `grid`, same layout (a host pass unless already there).
  Value Requantized(const Node& n, const Value& x, const Quantizer& grid);

  Int8NetworkOptions options_;
  std::map<std::string, Value> float_cache_;
};

Int8Network::Impl::Value Int8Network::Impl::AsFloat(const std::string& name, const Value& v) {
  if (!v.is_int8()) return v;
  auto it = float_cache_.find(name);
  if (it != float_cache_.end()) return it->second;
  Value out{v.shape, memory(WithType(v.mem.get_desc(), ElementType::f32), engine_), v.grid,
            v.non_negative};
  // float(code) * scale in float is the correctly rounded product, as the emulation's
  // static_cast<float>(double(code) * scale) is: the same values.
  dnnl::primitive_attr attr;
  attr.set_output_scales(0, {v.grid->scale[0]});
  dnnl::reorder::primitive_desc pd(v.mem, out.mem, attr);
  AddStep(dnnl::reorder(pd), {{DNNL_ARG_FROM, v.mem}, {DNNL_ARG_TO, out.mem}}, nullptr);
  float_cache_[name] = out;
  return out;
}

memory Int8Network::Impl::ToCodes(const Node& n, const std::string& name, const Value& x,
                                  const Quantizer& q, bool split, int64_t groups,
                                  const memory::desc& want) {
  // Non-negative, one scale: elementwise in whatever layout x has (unless already the codes).
  if (!split) return ReorderTo(Requantized(n, x, q).mem, want, &n);
  const double scale = q.scale[0];
  const double src_scale = x.is_int8() ? x.grid->scale[0] : 1.0;
  const Value plain = Plain(name, x);
  const int64_t outer = plain.shape[0], channels = plain.shape[1];
  const int64_t inner = Product(plain.shape, 2, plain.shape.size());
  Shape split_shape = plain.shape;
  split_shape[1] = 2 * channels;
  memory codes(PlainOf(DnnlDims(split_shape), ElementType::u8), engine_);
  const void* from = plain.mem.get_data_handle();
  uint8_t* to = static_cast<uint8_t*>(codes.get_data_handle());
  const ElementType type = plain.type();
  AddHostStep([=] {
    WithTypedSource(type, from, [&](const auto* src) {
      QuantizeSplit(src, src_scale, to, outer, channels, inner, groups, scale);
    });
  }, n);
  return ReorderTo(codes, want, &n);
}

dnnl::primitive_attr Int8Network::Impl::Int8Attr(const Node& n,
                                                 const std::vector<float>& output_scales,
                                                 bool per_channel) const {
  // oneDNN 2.x: dst = post_ops(output_scale * (acc_s32 + bias)), then rounded (half to even)
  // and saturated to the destination type.
  dnnl::primitive_attr attr = PostOpAttr(n.post_ops);
  attr.set_output_scales(per_channel ? (1 << 1) : 0, output_scales);
  const quant::LayerQuantPlan& plan = options_.plan->at(n.name);
  if (plan.outputs.format.kind == FormatKind::kInt) {
    dnnl::post_ops ops = attr.get_post_ops();
    AppendEltwise(&ops, dnnl::algorithm::eltwise_linear,
                  static_cast<float>(1.0 / plan.outputs.scale[0]), 0.0f);
    // clip_v2 after a fused Clip (ReLU6): see AppendEltwise.
    AppendEltwise(&ops, dnnl::algorithm::eltwise_clip, -kCodeMax, kCodeMax);
    attr.set_post_ops(ops);
  }
  return attr;
}

void Int8Network::Impl::FinishLayer(const Node& n, Value out, quant::LayerInfo info,
                                    const std::string& impl) {
  info.name = n.name;
  info.output_non_negative = PostOpsNonNegative(n.post_ops);
  layers_.push_back(std::move(info));
  implementations_[n.name] = impl;
  values_[n.outputs[0]] = std::move(out);
}

absl::Status Int8Network::Impl::CompileConv(const Node& n) {
  ASSIGN_OR_RETURN(LayerMode mode, ClassifyLayer(n, *options_.plan));
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (!graph_.IsConstant(n.inputs[1])) return NodeError(n, "weights must be constant");
  const Tensor& w = graph_.constants.at(n.inputs[1]);
  const Shape& ws = w.shape();
  if (x.shape.size() != ws.size() || x.shape.size() < 3 || x.shape[1] != ws[1] * n.group) {
    return NodeError(n, absl::StrCat("input ", ShapeToString(x.shape), " does not fit weights ",
                                     ShapeToString(ws), " with group ", n.group));
  }
  Dims pb, pe;
  ASSIGN_OR_RETURN(const Shape out_shape, WindowOutputShape(n, x.shape, ws[0], false, &pb, &pe));
  const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
  const Tensor* bias = has_bias ? &graph_.constants.at(n.inputs[2]) : nullptr;
  if (bias != nullptr && bias->num_elements() != ws[0]) {
    return NodeError(n, absl::StrCat("bias has ", bias->num_elements(), " values for ", ws[0],
                                     " output channels"));
  }
  const Dims strides(n.strides.begin(), n.strides.end());
  const Dims dilations = DnnlDilations(n.dilations);
  quant::LayerInfo info = ConvLayerInfo(ws, x.shape, out_shape, has_bias);
  const memory::desc bias_desc = has_bias ? PlainDesc({ws[0]}) : memory::desc();

  if (mode == LayerMode::kFloat) {
    x = AsFloat(n.inputs[0], x);
    const Dims w_dims = ConvWeightDims(ws, n.group);
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        AnyDesc(DnnlDims(x.shape)), AnyDesc(w_dims), bias_desc, AnyDesc(DnnlDims(out_shape)),
        strides, dilations, pb, pe);
    dnnl::convolution_forward::primitive_desc pd(desc, PostOpAttr(n.post_ops), engine_);
    const memory src = ReorderTo(x.mem, pd.src_desc(), &n);
    const memory weights =
        ReorderNow(ConstantMemory(PlainDesc(w_dims), w.floats().data()), pd.weights_desc());
    Value out{out_shape, memory(pd.dst_desc(), engine_), std::nullopt,
              PostOpsNonNegative(n.post_ops)};
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, out.mem}};
    if (has_bias) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, bias->floats().data());
    AddStep(dnnl::convolution_forward(pd), std::move(args), &n);
    FinishLayer(n, std::move(out), std::move(info), pd.impl_info_str());
    return absl::OkStatus();
  }

  // Grouped and depthwise convolutions run as oneDNN grouped int8 convolutions (weights
  // [G, OC/G, IC/G, ...]); ws[1] is the input channels of one group, and the weight codes
  // below, [OC, IC/G (doubled when split), ...], are already in that order.
  const quant::LayerQuantPlan& plan = options_.plan->at(n.name);
  const int64_t oc = ws[0], ic = ws[1];
  const int64_t kernel = Product(ws, 2, ws.size());
  const bool split = !x.non_negative;
  const int64_t ic_codes = split ? 2 * ic : ic;
  Quantizer wq = quant::MakeWeightQuantizer(plan.weights, plan.rounding, plan.seed,
                                            w.floats().data(), w.num_elements(), oc);
  const std::vector<int8_t> codes = WeightCodes(wq, w.floats().data(), w.num_elements(), oc);
  std::vector<int8_t> weight_codes(oc * ic_codes * kernel);
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t j = 0; j < ic; ++j) {
      for (int64_t k = 0; k < kernel; ++k) {
        const int8_t c = codes[(o * ic + j) * kernel + k];
        weight_codes[(o * ic_codes + j) * kernel + k] = c;
        if (split) weight_codes[(o * ic_codes + ic + j) * kernel + k] = static_cast<int8_t>(-c);
      }
    }
  }
  const double s_in = plan.inputs.scale[0];
  std::vector<float> output_scales(wq.format.per_channel ? oc : 1);
  for (size_t o = 0; o < output_scales.size(); ++o) {
    output_scales[o] = static_cast<float>(s_in * wq.scale[o]);
  }
  std::vector<float> bias_acc;  // the bias in accumulator units (oneDNN adds it before scaling)
  if (has_bias) {
    for (int64_t o = 0; o < oc; ++o) {
      const double s_w = wq.scale[wq.format.per_channel ? o : 0];
      bias_acc.push_back(static_cast<float>(bias->floats()[o] / (s_in * s_w)));
    }
  }
  const bool quantized_out = plan.outputs.format.kind == FormatKind::kInt;
  const bool non_negative = PostOpsNonNegative(n.post_ops);
  const ElementType out_type =
      !quantized_out ? ElementType::f32 : (non_negative ? ElementType::u8 : ElementType::s8);
  Shape src_shape = x.shape;
  src_shape[1] = ic_codes * n.group;
  Shape code_shape = ws;
  code_shape[1] = ic_codes;
  const Dims w_dims = ConvWeightDims(code_shape, n.group);
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      AnyOf(DnnlDims(src_shape), ElementType::u8), AnyOf(w_dims, ElementType::s8), bias_desc,
      AnyOf(DnnlDims(out_shape), out_type), strides, dilations, pb, pe);
  dnnl::convolution_forward::primitive_desc pd(
      desc, Int8Attr(n, output_scales, wq.format.per_channel), engine_);
  const dnnl_memory_extra_desc_t& extra = pd.weights_desc().data.extra;
  if ((extra.flags & dnnl_memory_extra_flag_scale_adjust) && extra.scale_adjust != 1.0f) {
    return absl::InternalError(absl::StrCat(
        "int8 path: layer '", n.name, "': oneDNN would scale the weights by ", extra.scale_adjust,
        " (", pd.impl_info_str(), "), which is not exact"));
  }
  const memory src = ToCodes(n, n.inputs[0], x, plan.inputs, split, n.group, pd.src_desc());
  const memory weights =
      ReorderNow(ConstantMemory(PlainOf(w_dims, ElementType::s8), weight_codes.data()),
                 pd.weights_desc());
  Value out{out_shape, memory(pd.dst_desc(), engine_), std::nullopt, non_negative};
  if (quantized_out) out.grid = plan.outputs;
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, out.mem}};
  if (has_bias) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, bias_acc.data());
  AddStep(dnnl::convolution_forward(pd), std::move(args), &n);
  weight_quantizers_[n.name] = std::move(wq);
  FinishLayer(n, std::move(out), std::move(info), pd.impl_info_str());
  return absl::OkStatus();
}

// Gemm, and MatMul with a constant 2-D B (read as Gemm with transB=0, alpha=1, no C).
absl::Status Int8Network::Impl::CompileGemm(const Node& n) {
  ASSIGN_OR_RETURN(LayerMode mode, ClassifyLayer(n, *options_.plan));
  ASSIGN_OR_RETURN(Value a, Get(n.inputs[0], n));
  const bool is_matmul = n.op == OpKind::kMatMul;
  if (!graph_.IsConstant(n.inputs[1])) {
    return NodeError(n, "the int8 path needs a constant B (weights)");
  }
  const Tensor& b_given = graph_.constants.at(n.inputs[1]);
  if (a.shape.size() != 2 || b_given.shape().size() != 2) {
    return NodeError(n, absl::StrCat("the int8 path runs 2-D A and B only, got ",
                                     ShapeToString(a.shape), " and ",
                                     ShapeToString(b_given.shape())));
  }
  const bool trans_a = !is_matmul && n.trans_a, trans_b = !is_matmul && n.trans_b;
  const float alpha = is_matmul ? 1.0f : n.alpha, beta = is_matmul ? 0.0f : n.beta;
  const int64_t m = trans_a ? a.shape[1] : a.shape[0];
  const int64_t k = trans_a ? a.shape[0] : a.shape[1];
  // B held as [N, K]: output channels first, as the emulation quantizes per channel.
  const Tensor b_nk = trans_b ? b_given : Transposed2D(b_given);
  const int64_t nn = b_nk.shape()[0];
  if (b_nk.shape()[1] != k) {
    return NodeError(n, absl::StrCat("A ", ShapeToString(a.shape), " and B ",
                                     ShapeToString(b_given.shape()), " disagree on K"));
  }
  // C broadcast to [1, N] or [M, N] and scaled by beta.
  int64_t bias_rows = 0;
  ASSIGN_OR_RETURN(std::vector<float> bias, GemmBias(n, graph_, m, nn, beta, &bias_rows));
  const memory::desc bias_desc = bias.empty() ? memory::desc() : PlainDesc({bias_rows, nn});
  quant::LayerInfo info = GemmLayerInfo(b_given.shape(), k, nn, trans_a, !bias.empty());

  if (mode == LayerMode::kFloat) {
    a = Plain(n.inputs[0], AsFloat(n.inputs[0], a));
    std::vector<float> b_kn(k * nn);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < nn; ++j) b_kn[i * nn + j] = alpha * b_nk.floats()[j * k + i];
    }
    const memory::desc src_desc(Dims{m, k}, ElementType::f32, trans_a ? Dims{1, m} : Dims{k, 1});
    dnnl::matmul::desc desc(src_desc, AnyDesc({k, nn}), bias_desc, PlainDesc({m, nn}));
    dnnl::matmul::primitive_desc pd(desc, PostOpAttr(n.post_ops), engine_);
    const memory src(src_desc, engine_, a.mem.get_data_handle());
    const memory weights = ReorderNow(ConstantMemory(PlainDesc({k, nn}), b_kn.data()),
                                      pd.weights_desc());
    Value out{{m, nn}, memory(pd.dst_desc(), engine_), std::nullopt,
              PostOpsNonNegative(n.post_ops)};
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, out.mem}};
    if (!bias.empty()) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, bias.data());
    AddStep(dnnl::matmul(pd), std::move(args), &n);
    FinishLayer(n, std::move(out), std::move(info), pd.impl_info_str());
    return absl::OkStatus();
  }

  const quant::LayerQuantPlan& plan = options_.plan->at(n.name);
  Quantizer wq = quant::MakeWeightQuantizer(plan.weights, plan.rounding, plan.seed,
                                            b_nk.floats().data(), b_nk.num_elements(), nn);
  const std::vector<int8_t> codes = WeightCodes(wq, b_nk.floats().data(), b_nk.num_elements(), nn);
  const bool split = !a.non_negative;
  const int64_t k_codes = split ? 2 * k : k;
  std::vector<int8_t> weight_codes(k_codes * nn);  // [K', N]
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < nn; ++j) {
      const int8_t c = codes[j * k + i];
      weight_codes[i * nn + j] = c;
      if (split) weight_codes[(k + i) * nn + j] = static_cast<int8_t>(-c);
    }
  }
  const double s_in = plan.inputs.scale[0];
  std::vector<float> output_scales(wq.format.per_channel ? nn : 1);
  for (size_t j = 0; j < output_scales.size(); ++j) {
    output_scales[j] = static_cast<float>(s_in * wq.scale[j] * alpha);
  }
  for (int64_t i = 0; i < bias_rows; ++i) {
    for (int64_t j = 0; j < nn; ++j) {
      const double s_w = wq.scale[wq.format.per_channel ? j : 0];
      bias[i * nn + j] = static_cast<float>(bias[i * nn + j] / (s_in * s_w * alpha));
    }
  }
  const bool quantized_out = plan.outputs.format.kind == FormatKind::kInt;
  const bool non_negative = PostOpsNonNegative(n.post_ops);
  const ElementType out_type =
      !quantized_out ? ElementType::f32 : (non_negative ? ElementType::u8 : ElementType::s8);
  dnnl::matmul::desc desc(PlainOf({m, k_codes}, ElementType::u8),
                          AnyOf({k_codes, nn}, ElementType::s8), bias_desc,
                          PlainOf({m, nn}, out_type));
  dnnl::matmul::primitive_desc pd(desc, Int8Attr(n, output_scales, wq.format.per_channel),
                                  engine_);
  const memory src = ToCodes(n, n.inputs[0], a, plan.inputs, split, 1, pd.src_desc());
  const memory weights =
      ReorderNow(ConstantMemory(PlainOf({k_codes, nn}, ElementType::s8), weight_codes.data()),
                 pd.weights_desc());
  Value out{{m, nn}, memory(pd.dst_desc(), engine_), std::nullopt, non_negative};
  if (quantized_out) out.grid = plan.outputs;
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, out.mem}};
  if (!bias.empty()) args[DNNL_ARG_BIAS] = ConstantMemory(bias_desc, bias.data());
  AddStep(dnnl::matmul(pd), std::move(args), &n);
  weight_quantizers_[n.name] = std::move(wq);
  FinishLayer(n, std::move(out), std::move(info), pd.impl_info_str());
  return absl::OkStatus();
}

absl::Status Int8Network::Impl::CompilePool(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  // Max pooling commutes with quantization (max of codes = code of the max): it stays in int8.
  // Averages would be rounded to codes, which the emulation does not do: they run in fp32.
  if (n.op != OpKind::kMaxPool) x = AsFloat(n.inputs[0], x);
  if (x.shape.size() < 3) return NodeError(n, "input needs at least one spatial dimension");
  Dims pb, pe;
  ASSIGN_OR_RETURN(const Shape out_shape,
                   WindowOutputShape(n, x.shape, std::nullopt, n.ceil_mode, &pb, &pe));
  ASSIGN_OR_RETURN(const dnnl::algorithm alg, PoolingAlgorithm(n, pe));
  dnnl::pooling_v2_forward::desc desc(
      dnnl::prop_kind::forward_inference, alg, x.mem.get_desc(),
      AnyOf(DnnlDims(out_shape), x.type()), Dims(n.strides.begin(), n.strides.end()),
      Dims(n.kernel.begin(), n.kernel.end()), DnnlDilations(n.dilations), pb, pe);
  Value out{out_shape, memory(), x.is_int8() ? x.grid : std::nullopt, x.non_negative};
  AddSrcDstStep<dnnl::pooling_v2_forward>({desc, engine_}, x.mem, std::move(out), n);
  return absl::OkStatus();
}

absl::Status Int8Network::Impl::CompileEltwise(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = AsFloat(n.inputs[0], x);
  const bool non_negative = PostOpsNonNegative({PostOp{n.op, n.alpha, n.beta, n.name}}) ||
                            n.op == OpKind::kHardSigmoid ||
                            (x.non_negative && n.op == OpKind::kLeakyRelu);
  values_[n.outputs[0]] = Value{x.shape, AddEltwise(n, x.mem), std::nullopt, non_negative};
  return absl::OkStatus();
}

std::optional<Quantizer> Int8Network::Impl::ConsumerGrid(const std::string& value) const {
  if (graph_.IsGraphOutput(value)) return std::nullopt;
  std::optional<Quantizer> grid;
  const std::vector<int> consumers = graph_.ConsumersOf(value);
  if (consumers.empty()) return std::nullopt;
  for (int index : consumers) {
    const Node& c = graph_.nodes[index];
    std::optional<Quantizer> wanted;
    switch (c.op) {
      case OpKind::kMaxPool:
      case OpKind::kIdentity:
      case OpKind::kFlatten:
      case OpKind::kReshape:
      case OpKind::kSqueeze:
      case OpKind::kUnsqueeze:
        if (c.inputs[0] == value) wanted = ConsumerGrid(c.outputs[0]);
        break;
      case OpKind::kConv:
      case OpKind::kGemm:
      case OpKind::kMatMul: {
        absl::StatusOr<LayerMode> mode = ClassifyLayer(c, *options_.plan);
        if (c.inputs[0] == value && mode.ok() && *mode == LayerMode::kInt8) {
          wanted = options_.plan->at(c.name).inputs;
        }
        break;
      }
      default:
        break;
    }
    if (!wanted || (grid && !quant::SameGrid(*grid, *wanted))) return std::nullopt;
    grid = wanted;
  }
  return grid;
}

Int8Network::Impl::Value Int8Network::Impl::Requantized(const Node& n, const Value& x,
                                                        const Quantizer& grid) {
  if (x.type() == ElementType::u8 && x.grid && quant::SameGrid(*x.grid, grid)) return x;
  Value out{x.shape, memory(WithType(x.mem.get_desc(), ElementType::u8), engine_), grid, true};
  const void* from = x.mem.get_data_handle();
  uint8_t* to = static_cast<uint8_t*>(out.mem.get_data_handle());
  const int64_t count = ElementCount(x.mem);
  const ElementType type = x.type();
  const double scale = grid.scale[0], src_scale = x.is_int8() ? x.grid->scale[0] : 1.0;
  AddHostStep([=] {
    WithTypedSource(type, from, [&](const auto* src) {
      QuantizeElementwise(src, src_scale, to, count, scale);
    });
  }, n);
  return out;
}

absl::Status Int8Network::Impl::CompileConcat(const Node& n) {
  std::vector<Value> parts;
  bool non_negative_parts = true;
  for (const std::string& in : n.inputs) {
    ASSIGN_OR_RETURN(Value v, Get(in, n));
    non_negative_parts &= v.non_negative;
    parts.push_back(v);
  }
  // Equally quantized int8 parts concatenate as codes. Parts on different grids (the expand
  // branches of a fire module, each with its own output scale) are requantized straight to the
  // grid their readers quantize to, when those all agree: quantization is monotone, so it
  // commutes with max pooling and views, and the readers then find their codes ready. Otherwise
  // the parts concatenate as dequantized floats.
  bool same_codes = true;
  for (const Value& p : parts) {
    same_codes &= p.is_int8() && p.type() == parts[0].type() &&
                  quant::SameGrid(*p.grid, *parts[0].grid);
  }
  if (!same_codes && non_negative_parts) {
    if (std::optional<Quantizer> grid = ConsumerGrid(n.outputs[0])) {
      for (Value& p : parts) p = Requantized(n, p, *grid);
      same_codes = true;
    }
  }
  if (!same_codes) {
    for (size_t i = 0; i < parts.size(); ++i) parts[i] = AsFloat(n.inputs[i], parts[i]);
  }
  return AddConcat(n, parts, same_codes ? parts[0].grid : std::nullopt);
}

absl::Status Int8Network::Impl::PrepareGraph() {
  // The same rewrites as the emulating Network, so both run the same (folded) layers.
  FoldBatchNorm(&graph_);
  FuseActivations(&graph_);
  return CheckInt8Plan(graph_, *options_.plan);
}

Int8Network::Int8Network(std::unique_ptr<Impl> impl) : InferenceNetwork(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Int8Network>> Int8Network::Create(
    const Graph& graph, const Int8NetworkOptions& options) {
  if (options.plan == nullptr) {
    return absl::InvalidArgumentError("int8 path: a quantization plan is required");
  }
  // The caller's weights without a copy (Graph::SharedCopy); after compiling they live in the
  // primitives' memory only.
  auto impl = std::make_unique<Impl>(graph.SharedCopy(), options);
  RETURN_IF_ERROR(impl->Compile());
  impl->ReleaseConstants();
  return std::unique_ptr<Int8Network>(new Int8Network(std::move(impl)));
}

const std::map<std::string, std::string>& Int8Network::layer_implementations() const {
  return static_cast<const Impl&>(compiled()).implementations_;
}

}  // namespace bitsweep::engine::int8
