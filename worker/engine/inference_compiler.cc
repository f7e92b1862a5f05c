#include "worker/engine/inference_compiler.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/constant_folding.h"

namespace bitsweep::engine {

using dnnl::memory;

InferenceCompiler::InferenceCompiler(Graph graph, InferenceCompilerOptions options)
    : graph_(std::move(graph)), compiler_options_(std::move(options)),
      engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

InferenceCompiler::~InferenceCompiler() = default;

absl::StatusOr<InferenceCompiler::Value> InferenceCompiler::Get(const std::string& name,
                                                                const Node& n) {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  // const: the constants may share their values with the caller's graph (Graph::SharedCopy).
  auto c = std::as_const(graph_.constants).find(name);
  if (c == graph_.constants.end()) {
    return NodeError(n, absl::StrCat("input '", name, "' is undefined"));
  }
  if (c->second.dtype() != DataType::kFloat) {
    return NodeError(n, absl::StrCat("input '", name, "' is int64; float32 data is required"));
  }
  Value v{c->second.shape(),
          ConstantMemory(PlainDesc(DnnlDims(c->second.shape())), c->second.floats().data())};
  values_[name] = v;
  return v;
}

memory InferenceCompiler::ConstantMemory(const memory::desc& desc, const void* data) {
  memory m(desc, engine_);
  std::memcpy(m.get_data_handle(), data, desc.get_size());
  return m;
}

memory InferenceCompiler::NewMemory(const memory::desc& desc) {
  const int64_t size = static_cast<int64_t>(desc.get_size());
  if (allocation_ == Allocation::kArena) {
    if (next_buffer_ < buffers_.size() && buffers_[next_buffer_].size == size) {
      return memory(desc, engine_, arena_.get() + buffers_[next_buffer_++].offset);
    }
    buffers_diverged_ = true;  // Compile reports it; own memory keeps this pass correct
  }
  memory m(desc, engine_);
  if (allocation_ == Allocation::kPlan) {
    Buffer b;
    b.base = static_cast<const char*>(m.get_data_handle());
    b.size = size;
    // A buffer no step touches still gets a place, for the step it was made at.
    b.first = b.last = static_cast<int>(steps_.size());
    buffers_.push_back(b);
  }
  if (allocation_ != Allocation::kArena) activation_bytes_ += size;
  return m;
}

namespace {

constexpr int64_t kBufferAlignment = 64;  // bytes: oneDNN's preferred alignment

}  // namespace

bool InferenceCompiler::PlanBuffers() {
  // Buffers by address, to find the one a pointer (perhaps into its middle) belongs to.
  std::map<const char*, size_t> by_base;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    if (buffers_[i].size > 0) by_base[buffers_[i].base] = i;
  }
  std::vector<bool> used(buffers_.size(), false);
  auto touch = [&](const void* p, int step) {
    const char* c = static_cast<const char*>(p);
    auto it = by_base.upper_bound(c);
    if (it == by_base.begin()) return;
    --it;
    Buffer& b = buffers_[it->second];
    if (c >= b.base + b.size) return;  // a constant, or memory a network allocated itself
    if (!used[it->second]) b.first = b.last = step;
    used[it->second] = true;
    b.first = std::min(b.first, step);
    b.last = std::max(b.last, step);
  };
  for (size_t s = 0; s < steps_.size(); ++s) {
    const Step& step = steps_[s];
    if (step.host && step.touches.empty()) return false;
    for (const void* p : step.touches) touch(p, static_cast<int>(s));
    for (const auto& [arg, mem] : step.args) touch(mem.get_data_handle(), static_cast<int>(s));
  }
  // Runtime inputs are written before the first step, graph outputs read after the last.
  for (const memory& m : input_mems_) touch(m.get_data_handle(), 0);
  for (const memory& m : output_mems_) touch(m.get_data_handle(), static_cast<int>(steps_.size()));
  // Largest first, each at the lowest offset clear of every placed buffer alive at the same time.
  std::vector<size_t> order(buffers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers_[a].size > buffers_[b].size; });
  std::vector<size_t> placed;
  int64_t arena = 0;
  for (size_t i : order) {
    Buffer& b = buffers_[i];
    std::vector<std::pair<int64_t, int64_t>> taken;  // [offset, end) of overlapping lifetimes
    for (size_t j : placed) {
      const Buffer& o = buffers_[j];
      if (o.first <= b.last && b.first <= o.last) taken.emplace_back(o.offset, o.offset + o.size);
    }
    std::sort(taken.begin(), taken.end());
    int64_t offset = 0;
    for (const auto& [begin, end] : taken) {
      if (offset + b.size <= begin) break;
      offset = std::max(offset, (end + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment);
    }
    b.offset = offset;
    arena = std::max(arena, offset + b.size);
    placed.push_back(i);
  }
  activation_bytes_ = arena;
  return true;
}

void InferenceCompiler::ResetCompiled() {
  values_.clear();
  layers_.clear();
  weight_quantizers_.clear();
  readers_.clear();
  last_layer_step_.reset();
  quantized_copies_.clear();
  post_op_args_.clear();
  plain_cache_.clear();
  steps_.clear();
  inputs_.clear();
  outputs_.clear();
  input_mems_.clear();
  output_mems_.clear();
}

memory InferenceCompiler::ReorderNow(const memory& src, const memory::desc& dst_desc) {
  if (src.get_desc() == dst_desc) return src;
  memory dst(dst_desc, engine_);
  dnnl::reorder(src, dst).execute(stream_, const_cast<memory&>(src), dst);
  stream_.wait();
  return dst;
}

memory InferenceCompiler::ReorderTo(const memory& src, const memory::desc& want, const Node* n) {
  if (src.get_desc() == want) return src;
  memory dst = NewMemory(want);
  AddStep(dnnl::reorder(src, dst), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}}, n);
  return dst;
}

InferenceCompiler::Value InferenceCompiler::Plain(const std::string& name, const Value& v) {
  const memory::desc plain = PlainDesc(DnnlDims(v.shape));
  memory::desc want = plain;
  want.data.data_type = static_cast<dnnl_data_type_t>(v.type());
  if (v.mem.get_desc() == want) return v;
  // Codes and their dequantized floats are different values of one name.
  const std::string key = absl::StrCat(name, "|", static_cast<int>(v.type()));
  auto it = plain_cache_.find(key);
  if (it != plain_cache_.end()) return it->second;
  Value out = v;
  out.mem = ReorderTo(v.mem, want, nullptr);
  plain_cache_[key] = out;
  return out;
}

InferenceCompiler::Value InferenceCompiler::View(const Value& v, Shape shape) {
  Value out = v;
  out.shape = std::move(shape);
  memory::desc desc = PlainDesc(DnnlDims(out.shape));
  desc.data.data_type = static_cast<dnnl_data_type_t>(v.type());
  out.mem = memory(desc, engine_, v.mem.get_data_handle());
  return out;
}

void InferenceCompiler::AddStep(dnnl::primitive p, std::unordered_map<int, memory> args,
                                const Node* n) {
  steps_.push_back(Step{std::move(p), std::move(args), nullptr, n ? n->name : std::string()});
}

void InferenceCompiler::AddHostStep(std::function<void()> f, const Node& n,
                                    std::vector<const void*> touches) {
  steps_.push_back(Step{dnnl::primitive(), {}, std::move(f), n.name, std::move(touches)});
}

// ---------------------------------------------------------------------------------------------
// Quantization emulation.

namespace {

// Quantizers whose q(max(a, b)) = max(q(a), q(b)) and q(0) = 0 for every a, b, with a result
// that does not depend on the element's position: they commute with max pooling, concatenation
// and views. Stochastic rounding draws per element index, which those operators move.
bool Commutes(const quant::Quantizer& q) {
  return q.rounding != quant::Rounding::kStochastic && q.format.kind != quant::FormatKind::kPow2;
}

bool IsLayer(const Node& n) {
  return n.op == OpKind::kConv || n.op == OpKind::kGemm || n.op == OpKind::kMatMul;
}

bool IsView(OpKind op) {
  return op == OpKind::kFlatten || op == OpKind::kReshape || op == OpKind::kSqueeze ||
         op == OpKind::kUnsqueeze || op == OpKind::kIdentity;
}

constexpr int64_t kQuantizeBlock = 4096;  // floats: 16 KiB, cache-resident between the passes

}  // namespace

const quant::LayerQuantPlan* InferenceCompiler::PlanFor(const Node& n) const {
  if (compiler_options_.quant == nullptr) return nullptr;
  auto it = compiler_options_.quant->find(n.name);
  return it == compiler_options_.quant->end() ? nullptr : &it->second;
}

namespace {

// q(x) = clip(round(fl(x * m)), lo, hi) * r, exactly as format.cc computes it in float, for the
// quantizers a post-op chain can compute: fixed point (m = 2^FL, r = 2^-FL, both products exact)
// and int per tensor (PyTorch's rule: m = fl(1/s), the zero point a shift of the bounds, r = s;
// within the float kernel's range, |bound| <= 2^22, where the bounds and n * s are exact floats),
// both with nearest-even rounding (eltwise_round).
struct QuantizerChain {
  float m, lo, hi, r;
};

std::optional<QuantizerChain> ChainOf(const quant::Quantizer& q) {
  if (q.rounding != quant::Rounding::kNearestEven) return std::nullopt;
  switch (q.format.kind) {
    case quant::FormatKind::kFixed:
    case quant::FormatKind::kUfixed: {
      const int b = q.format.bits;
      const bool is_signed = q.format.kind == quant::FormatKind::kFixed;
      return QuantizerChain{
          std::ldexp(1.0f, q.fractional_bits),
          is_signed ? -std::ldexp(1.0f, b - 1) : 0.0f,
          is_signed ? std::ldexp(1.0f, b - 1) - 1.0f : std::ldexp(1.0f, b) - 1.0f,
          std::ldexp(1.0f, -q.fractional_bits)};
    }
    case quant::FormatKind::kInt: {
      if (q.format.per_channel || q.scale.size() != 1 || q.zero_point.size() != 1) {
        return std::nullopt;
      }
      const quant::IntGrid g = quant::IntGridOf(q, 0);
      if (g.lo < -0x1p22 || g.hi > 0x1p22) return std::nullopt;
      return QuantizerChain{g.inverse, static_cast<float>(g.lo), static_cast<float>(g.hi),
                            g.scale};
    }
    default:
      return std::nullopt;
  }
}

}  // namespace

bool InferenceCompiler::AppendQuantizerPostOps(const quant::Quantizer& q, dnnl::post_ops* ops) {
  const std::optional<QuantizerChain> c = ChainOf(q);
  if (!c) return false;
  // linear(m) -> round (half to even) -> clip(lo, hi) -> pow(r, 1). A second eltwise_linear in
  // the chain would reuse the first one's alpha in oneDNN 2.6.3 (AppendEltwise), hence pow.
  AppendEltwise(ops, dnnl::algorithm::eltwise_linear, c->m, 0.0f);
  AppendEltwise(ops, dnnl::algorithm::eltwise_round, 0.0f, 0.0f);
  AppendEltwise(ops, dnnl::algorithm::eltwise_clip, c->lo, c->hi);  // clip_v2 after a fused Clip
  AppendEltwise(ops, dnnl::algorithm::eltwise_pow, c->r, 1.0f);
  return true;
}

std::optional<quant::Quantizer> InferenceCompiler::FusedNextQuantizer(
    const Node& n, const quant::Quantizer& q) const {
  // Conv: its destination rank (the binary operands' rank) is the weights', and its step is an
  // AddLayerStep, which passes the operands.
  if (n.op != OpKind::kConv) return std::nullopt;
  std::optional<quant::Quantizer> next =
      DownstreamInputQuantizer(n.outputs[0], /*direct_only=*/false);
  if (!next || quant::SameGrid(q, *next) || !ChainOf(*next)) return std::nullopt;
  return next;
}

bool InferenceCompiler::AppendLayerQuantizerPostOps(const Node& n, const quant::Quantizer& q,
                                                    dnnl::post_ops* ops) {
  if (!AppendQuantizerPostOps(q, ops)) return false;
  const std::optional<quant::Quantizer> next = FusedNextQuantizer(n, q);
  if (!next) return true;
  // The second chain as binary post-ops with scalar operands (mul, round, max, min, mul):
  // oneDNN 2.6.3 runs every eltwise post-op of one algorithm with the first one's parameters,
  // which the output quantizer's chain has taken (eltwise_round has none).
  const QuantizerChain c = *ChainOf(*next);
  const int ndims = static_cast<int>(graph_.constants.at(n.inputs[1]).shape().size());
  const memory::desc scalar(memory::dims(ndims, 1), memory::data_type::f32,
                            memory::dims(ndims, 1));
  std::vector<std::pair<int, memory>>& args = post_op_args_[n.name];
  args.clear();
  auto binary = [&](dnnl::algorithm alg, float value) {
    args.emplace_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(ops->len()) | DNNL_ARG_SRC_1,
                      ConstantMemory(scalar, &value));
    ops->append_binary(alg, scalar);
  };
  binary(dnnl::algorithm::binary_mul, c.m);
  AppendEltwise(ops, dnnl::algorithm::eltwise_round, 0.0f, 0.0f);
  binary(dnnl::algorithm::binary_max, c.lo);
  binary(dnnl::algorithm::binary_min, c.hi);
  binary(dnnl::algorithm::binary_mul, c.r);
  return true;
}

void InferenceCompiler::AddQuantizeStep(std::vector<quant::Quantizer> qs, const float* from,
                                        float* to, int64_t count, const Node& n) {
  AddHostStep([qs = std::move(qs), from, to, count] {
    const int64_t blocks = (count + kQuantizeBlock - 1) / kQuantizeBlock;
    // Each block is copied and passed through every quantizer while it is in cache; `offset`
    // keeps stochastic rounding's draw tied to the element's index in the whole tensor.
#pragma omp parallel for schedule(static) if (blocks > 4)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kQuantizeBlock;
      const int64_t size = std::min(kQuantizeBlock, count - begin);
      if (from != to) std::memcpy(to + begin, from + begin, size * sizeof(float));
      for (const quant::Quantizer& q : qs) quant::QuantizeInPlace(q, to + begin, size, begin);
    }
  }, n, {from, to});
}

bool InferenceCompiler::OwnsMemory(const std::string& name) const {
  if (graph_.IsConstant(name) || graph_.IsGraphOutput(name)) return false;
  const int producer = graph_.ProducerOf(name);
  if (producer < 0) return true;  // a runtime input: copied in by every Run
  const OpKind op = graph_.nodes[producer].op;
  // Views share their input's memory (a reduction over nothing is one too).
  return !IsView(op) && op != OpKind::kReduceMean && op != OpKind::kReduceMax &&
         op != OpKind::kTranspose;
}

std::optional<quant::Quantizer> InferenceCompiler::DownstreamInputQuantizer(
    const std::string& name, bool direct_only) const {
  if (!compiler_options_.move_quantizers || graph_.IsGraphOutput(name)) return std::nullopt;
  auto it = readers_.find(name);
  if (it == readers_.end() || it->second.empty()) return std::nullopt;
  std::optional<quant::Quantizer> common;
  bool all_layers = true;
  for (int r : it->second) {
    const Node& reader = graph_.nodes[r];
    const quant::LayerQuantPlan* plan = PlanFor(reader);
    if (!IsLayer(reader) || reader.inputs[0] != name || plan == nullptr ||
        plan->inputs.format.kind == quant::FormatKind::kFp32 ||
        (common && !quant::SameGrid(*common, plan->inputs))) {
      all_layers = false;
      break;
    }
    if (!common) common = plan->inputs;
  }
  if (all_layers) return common;
  if (direct_only || it->second.size() != 1) return std::nullopt;
  const Node& only = graph_.nodes[it->second[0]];
  const bool commutes = only.op == OpKind::kMaxPool || only.op == OpKind::kConcat ||
                        only.op == OpKind::kReduceMax || IsView(only.op);
  if (!commutes || only.outputs.size() != 1) return std::nullopt;
  std::optional<quant::Quantizer> q = DownstreamInputQuantizer(only.outputs[0], direct_only);
  if (q && !Commutes(*q)) return std::nullopt;
  return q;
}

void InferenceCompiler::QuantizeLayerOutput(const Node& n, Value* out, bool fused) {
  // The layer step AddLayerStep recorded (its sub-batch maker refers to the caller's locals).
  std::optional<LayerStep> layer_step = std::move(last_layer_step_);
  last_layer_step_.reset();
  const quant::LayerQuantPlan* plan = PlanFor(n);
  if (plan == nullptr || plan->outputs.format.kind == quant::FormatKind::kFp32) return;
  const quant::Quantizer& q = plan->outputs;
  auto it = readers_.find(n.outputs[0]);
  const bool one_pool =
      it != readers_.end() && it->second.size() == 1 &&
      (graph_.nodes[it->second[0]].op == OpKind::kMaxPool ||
       graph_.nodes[it->second[0]].op == OpKind::kReduceMax);
  if (!fused && compiler_options_.move_quantizers && Commutes(q) && one_pool &&
      !graph_.IsGraphOutput(n.outputs[0])) {
    out->pending = q;  // quantized on the pooling's output instead (ApplyPending)
    return;
  }
  out->grid = q;
  if (fused) {
    if (std::optional<quant::Quantizer> next = FusedNextQuantizer(n, q)) {
      out->grid = *next;  // in the post-ops too (AppendLayerQuantizerPostOps)
      return;
    }
  }
  std::vector<quant::Quantizer> qs;
  if (!fused) qs.push_back(q);
  // The readers' input quantizer, applied here once instead of on a copy for each of them.
  std::optional<quant::Quantizer> next =
      DownstreamInputQuantizer(n.outputs[0], /*direct_only=*/false);
  if (next && !quant::SameGrid(q, *next)) {
    qs.push_back(*next);
    out->grid = *next;
  }
  if (qs.empty()) return;
  if (layer_step && compiler_options_.move_quantizers &&
      SplitLayerStep(n, *layer_step, qs, out->mem)) {
    return;
  }
  float* data = static_cast<float*>(out->mem.get_data_handle());
  const int64_t count = static_cast<int64_t>(out->mem.get_desc().get_size() / sizeof(float));
  AddQuantizeStep(std::move(qs), data, data, count, n);
}

void InferenceCompiler::AddLayerStep(const Node& n, const dnnl::primitive_desc& pd,
                                     dnnl::primitive p, std::unordered_map<int, memory> args,
                                     SubBatchPrimitive sub_batch) {
  auto post_op_args = post_op_args_.find(n.name);
  if (post_op_args != post_op_args_.end()) {
    for (const auto& [arg, mem] : post_op_args->second) args[arg] = mem;
  }
  AddStep(std::move(p), args, &n);
  last_layer_step_ = LayerStep{n.name, steps_.size() - 1, pd, std::move(args), std::move(sub_batch)};
}

namespace {

// `d` for `batch` images instead of its own dims[0] (same layout), when dims[0] is its outermost
// dimension (each image's data contiguous, at image * stride); nullopt otherwise.
std::optional<memory::desc> SubBatchDesc(const memory::desc& d, int64_t batch) {
  const dnnl_memory_desc_t& c = d.data;
  if (c.format_kind != dnnl_blocked || c.ndims < 1 || c.dims[0] != c.padded_dims[0]) {
    return std::nullopt;
  }
  for (int i = 0; i < c.format_desc.blocking.inner_nblks; ++i) {
    if (c.format_desc.blocking.inner_idxs[i] == 0) return std::nullopt;
  }
  const int64_t per_image = static_cast<int64_t>(d.get_size()) / c.dims[0];
  if (c.format_desc.blocking.strides[0] * static_cast<int64_t>(sizeof(float)) != per_image ||
      c.data_type != dnnl_f32 || c.offset0 != 0) {
    return std::nullopt;
  }
  memory::desc sub = d;
  sub.data.dims[0] = batch;
  sub.data.padded_dims[0] = batch;
  return sub;
}

// Output per sub-batch: 2 MiB per core of this 2-core machine. Measured on squeezenet-mini and
// resnet-mini under minifloat:4:3 (docs/BENCHMARKS.md): 4 MiB ran 4 % faster than 1 MiB there
// (squeezenet-mini; resnet-mini alike), 256 KiB 5 % slower.
constexpr int64_t kSubBatchBytes = int64_t{4} << 20;

}  // namespace

bool InferenceCompiler::SplitLayerStep(const Node& n, const LayerStep& layer,
                                       const std::vector<quant::Quantizer>& qs,
                                       const memory& dst) {
  if (layer.node != n.name || layer.step + 1 != steps_.size() || !layer.sub_batch) return false;
  for (const quant::Quantizer& q : qs) {
    if (q.rounding == quant::Rounding::kStochastic) return false;  // draws by element index
  }
  auto src_it = layer.args.find(DNNL_ARG_SRC);
  auto dst_it = layer.args.find(DNNL_ARG_DST);
  if (src_it == layer.args.end() || dst_it == layer.args.end() ||
      dst_it->second.get_data_handle() != dst.get_data_handle()) {
    return false;
  }
  const memory::desc src_desc = src_it->second.get_desc(), dst_desc = dst.get_desc();
  const int64_t batch = dst_desc.data.dims[0];
  const int64_t per_image = static_cast<int64_t>(dst_desc.get_size()) / std::max<int64_t>(batch, 1);
  int64_t sub = batch;
  while (sub % 2 == 0 && sub * per_image > kSubBatchBytes) sub /= 2;
  if (sub == batch || src_desc.data.dims[0] != batch) return false;
  const std::optional<memory::desc> sub_src = SubBatchDesc(src_desc, sub);
  const std::optional<memory::desc> sub_dst = SubBatchDesc(dst_desc, sub);
  if (!sub_src || !sub_dst) return false;
  auto [primitive, pd] = layer.sub_batch(sub);
  // The same implementation, layouts and weights: the same values, image by image.
  if (pd.impl_info_str() != layer.pd.impl_info_str() || pd.src_desc() != *sub_src ||
      pd.dst_desc() != *sub_dst || pd.weights_desc() != layer.pd.weights_desc()) {
    return false;
  }
  const int64_t src_step = static_cast<int64_t>(src_desc.get_size()) / batch * sub;
  const int64_t dst_step = per_image * sub;
  char* src_base = static_cast<char*>(src_it->second.get_data_handle());
  char* dst_base = static_cast<char*>(dst.get_data_handle());
  std::unordered_map<int, memory> args = layer.args;
  steps_.pop_back();
  for (int64_t part = 0; part < batch / sub; ++part) {
    args[DNNL_ARG_SRC] = memory(*sub_src, engine_, src_base + part * src_step);
    memory out(*sub_dst, engine_, dst_base + part * dst_step);
    args[DNNL_ARG_DST] = out;
    AddStep(primitive, args, &n);
    float* data = reinterpret_cast<float*>(dst_base + part * dst_step);
    AddQuantizeStep(qs, data, data, dst_step / static_cast<int64_t>(sizeof(float)), n);
  }
  return true;
}

void InferenceCompiler::ApplyPending(const std::string& name, const Node& n) {
  Value& v = values_.at(name);
  std::vector<quant::Quantizer> qs = {*v.pending};
  v.grid = *v.pending;
  v.pending.reset();
  std::optional<quant::Quantizer> next = DownstreamInputQuantizer(name, /*direct_only=*/false);
  if (next && !quant::SameGrid(qs[0], *next)) {
    qs.push_back(*next);
    v.grid = *next;
  }
  float* data = static_cast<float*>(v.mem.get_data_handle());
  const int64_t count = static_cast<int64_t>(v.mem.get_desc().get_size() / sizeof(float));
  AddQuantizeStep(std::move(qs), data, data, count, n);
}

bool InferenceCompiler::CarriesPending(const Node& n, const std::string& name) const {
  if (n.op != OpKind::kMaxPool && n.op != OpKind::kReduceMax) return false;
  if (n.inputs.size() != 1 || n.outputs.size() != 1 || graph_.IsGraphOutput(name)) return false;
  auto it = readers_.find(name);
  return it != readers_.end() && it->second.size() == 1;
}

InferenceCompiler::Value InferenceCompiler::QuantizeLayerInput(const Node& n,
                                                               const std::string& name,
                                                               const Value& x) {
  const quant::Quantizer& q = PlanFor(n)->inputs;
  const float* from = static_cast<const float*>(x.mem.get_data_handle());
  const int64_t count = static_cast<int64_t>(x.mem.get_desc().get_size() / sizeof(float));
  std::optional<quant::Quantizer> all = DownstreamInputQuantizer(name, /*direct_only=*/true);
  if (all && OwnsMemory(name)) {
    // Every reader quantizes `name` alike: once, in place, before the first of them.
    Value& v = values_.at(name);
    v.grid = q;
    AddQuantizeStep({q}, from, const_cast<float*>(from), count, n);
    return v;
  }
  for (const QuantizedCopy& c : quantized_copies_) {
    if (c.name == name && quant::SameGrid(c.q, q) && c.q.rounding == q.rounding &&
        c.q.seed == q.seed) {
      return c.value;
    }
  }
  // A private copy: other readers of `name` keep their own values (Ristretto quantized a shared
  // blob in place for every consumer).
  Value copy{x.shape, NewMemory(x.mem.get_desc()), q};
  AddQuantizeStep({q}, from, static_cast<float*>(copy.mem.get_data_handle()), count, n);
  quantized_copies_.push_back({name, q, copy});
  return copy;
}

absl::Status InferenceCompiler::CompileGlobalAveragePool(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(const Node window, GlobalPoolWindow(n, x.shape));
  return CompilePool(window);
}

absl::Status InferenceCompiler::CompileBinary(const Node& n) {
  ASSIGN_OR_RETURN(Value a, Get(n.inputs[0], n));
  ASSIGN_OR_RETURN(Value b, Get(n.inputs[1], n));
  a = AsFloat(n.inputs[0], a);
  b = AsFloat(n.inputs[1], b);
  Shape as, bs;
  ASSIGN_OR_RETURN(const Shape out, BroadcastShapes(n, a.shape, b.shape, &as, &bs));
  if (as.size() != a.shape.size()) a = View(Plain(n.inputs[0], a), as);
  if (bs.size() != b.shape.size()) b = View(Plain(n.inputs[1], b), bs);
  dnnl::algorithm alg = dnnl::algorithm::binary_add;
  if (n.op == OpKind::kMul) alg = dnnl::algorithm::binary_mul;
  if (n.op == OpKind::kSub) alg = dnnl::algorithm::binary_sub;
  if (n.op == OpKind::kDiv) alg = dnnl::algorithm::binary_div;
  const bool commutes = n.op == OpKind::kAdd || n.op == OpKind::kMul;
  if (a.shape != out && commutes) std::swap(a, b);
  if (a.shape != out) {
    // Both operands broadcast: materialize the first one at the output shape (0 + a).
    Tensor zeros = Tensor::Float(out);
    memory zero_mem = ConstantMemory(PlainDesc(DnnlDims(out)), zeros.floats().data());
    dnnl::binary::desc expand_desc(dnnl::algorithm::binary_add, zero_mem.get_desc(),
                                   a.mem.get_desc(), zero_mem.get_desc());
    dnnl::binary::primitive_desc expand_pd(expand_desc, engine_);
    memory expanded = NewMemory(expand_pd.dst_desc());
    AddStep(dnnl::binary(expand_pd),
            {{DNNL_ARG_SRC_0, zero_mem}, {DNNL_ARG_SRC_1, a.mem}, {DNNL_ARG_DST, expanded}}, &n);
    a = Value{out, expanded};
  }
  // Same-shape operands in different layouts: bring the second to the first's layout so the
  // optimized kernel applies.
  if (b.shape == a.shape) b.mem = ReorderTo(b.mem, a.mem.get_desc(), &n);
  dnnl::binary::desc desc(alg, a.mem.get_desc(), b.mem.get_desc(), a.mem.get_desc());
  dnnl::binary::primitive_desc pd(desc, engine_);
  memory dst = NewMemory(pd.dst_desc());
  AddStep(dnnl::binary(pd), {{DNNL_ARG_SRC_0, a.mem}, {DNNL_ARG_SRC_1, b.mem}, {DNNL_ARG_DST, dst}},
          &n);
  values_[n.outputs[0]] = Value{out, dst};
  return absl::OkStatus();
}

absl::Status InferenceCompiler::AddConcat(const Node& n, const std::vector<Value>& parts,
                                          std::optional<quant::Quantizer> grid) {
  std::vector<Shape> shapes;
  for (const Value& p : parts) shapes.push_back(p.shape);
  int64_t axis = 0;
  ASSIGN_OR_RETURN(const Shape out, ConcatOutputShape(n, shapes, &axis));
  std::vector<memory::desc> descs;
  std::unordered_map<int, memory> args;
  bool non_negative = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    descs.push_back(parts[i].mem.get_desc());
    args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] = parts[i].mem;
    non_negative &= parts[i].non_negative;
  }
  dnnl::concat::primitive_desc pd(static_cast<int>(axis), descs, engine_);
  memory dst = NewMemory(pd.dst_desc());
  args[DNNL_ARG_DST] = dst;
  AddStep(dnnl::concat(pd), std::move(args), &n);
  values_[n.outputs[0]] = Value{out, dst, std::move(grid), non_negative};
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileBatchNorm(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = AsFloat(n.inputs[0], x);
  if (x.shape.size() < 2) return NodeError(n, "input needs a channel dimension");
  const int64_t c = x.shape[1];
  std::vector<memory> params;
  for (int i = 1; i < 5; ++i) {
    const Tensor& t = graph_.constants.at(n.inputs[i]);
    if (t.num_elements() != c || t.dtype() != DataType::kFloat) {
      return NodeError(n, absl::StrCat("input '", n.inputs[i], "' needs ", c, " float values"));
    }
    params.push_back(ConstantMemory(PlainDesc({c}), t.floats().data()));
  }
  const Shape original_shape = x.shape;
  // oneDNN wants a spatial dimension: view [N, C] as [N, C, 1].
  if (x.shape.size() == 2) x = View(Plain(n.inputs[0], x), {x.shape[0], c, 1});
  dnnl::batch_normalization_forward::desc desc(
      dnnl::prop_kind::forward_inference, x.mem.get_desc(), n.epsilon,
      dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
          dnnl::normalization_flags::use_shift);
  dnnl::batch_normalization_forward::primitive_desc pd(desc, engine_);
  memory dst = NewMemory(pd.dst_desc());
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

absl::Status InferenceCompiler::CompileLrn(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = AsFloat(n.inputs[0], x);
  if (x.shape.size() < 3) return NodeError(n, "input needs rank >= 3 (N, C, spatial...)");
  dnnl::lrn_forward::desc desc(dnnl::prop_kind::forward_inference,
                               dnnl::algorithm::lrn_across_channels, x.mem.get_desc(), n.size,
                               n.alpha, n.beta, n.bias);
  AddSrcDstStep<dnnl::lrn_forward>({desc, engine_}, x.mem,
                                   Value{x.shape, memory(), std::nullopt, x.non_negative}, n);
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileSoftmax(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = AsFloat(n.inputs[0], x);
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
  Value out{in.shape, NewMemory(pd.dst_desc()), std::nullopt, true};
  AddStep(dnnl::softmax_forward(pd), {{DNNL_ARG_SRC, in.mem}, {DNNL_ARG_DST, out.mem}}, &n);
  values_[n.outputs[0]] = View(out, x.shape);
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileView(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  if (n.op == OpKind::kIdentity) {
    values_[n.outputs[0]] = x;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Shape out, ViewOutputShape(n, x.shape));
  values_[n.outputs[0]] = View(Plain(n.inputs[0], x), out);
  return absl::OkStatus();
}

InferenceCompiler::memory InferenceCompiler::AddEltwise(const Node& n, const memory& x) {
  auto add = [&](dnnl::algorithm alg, float alpha, float beta, const memory& src) {
    dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src.get_desc(),
                                     alpha, beta);
    dnnl::eltwise_forward::primitive_desc pd(desc, engine_);
    memory dst = NewMemory(pd.dst_desc());
    AddStep(dnnl::eltwise_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, &n);
    return dst;
  };
  if (n.op == OpKind::kHardSigmoid) {
    const memory linear = add(dnnl::algorithm::eltwise_linear, n.alpha, n.beta, x);
    return add(dnnl::algorithm::eltwise_clip, 0.0f, 1.0f, linear);
  }
  auto [alpha, beta] = EltwiseParams(n.op, n.alpha, n.beta);
  return add(PostOpAlgorithm(n.op), alpha, beta, x);
}

absl::Status InferenceCompiler::CompilePad(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = Plain(n.inputs[0], AsFloat(n.inputs[0], x));
  const size_t rank = x.shape.size();
  if (n.pads.size() != 2 * rank) {
    return NodeError(n, absl::StrCat(n.pads.size(), " pads for an input of rank ", rank));
  }
  Shape out = x.shape;
  for (size_t d = 0; d < rank; ++d) {
    out[d] += n.pads[d] + n.pads[rank + d];
    if (out[d] < 0) return NodeError(n, "negative pads remove more than the input holds");
    const bool reflect = n.pad_mode == "reflect";
    if ((n.pads[d] > 0 || n.pads[rank + d] > 0) && n.pad_mode != "constant" &&
        (x.shape[d] == 0 || (reflect && (n.pads[d] >= x.shape[d] || n.pads[rank + d] >= x.shape[d])))) {
      return NodeError(n, absl::StrCat(n.pad_mode, " padding of ", n.pads[d], "/", n.pads[rank + d],
                                       " does not fit dimension ", d, " of size ", x.shape[d]));
    }
  }
  Value result{out, NewMemory(PlainDesc(DnnlDims(out)))};
  const float* src = static_cast<const float*>(x.mem.get_data_handle());
  float* dst = static_cast<float*>(result.mem.get_data_handle());
  AddHostStep([src, dst, in = x.shape, out, pads = n.pads, mode = n.pad_mode, value = n.alpha] {
    const size_t r = in.size();
    std::vector<int64_t> in_strides(r, 1);
    for (int d = static_cast<int>(r) - 2; d >= 0; --d) in_strides[d] = in_strides[d + 1] * in[d + 1];
    const int64_t count = NumElements(out);
    for (int64_t i = 0; i < count; ++i) {
      int64_t rest = i, offset = 0;
      bool outside = false;
      for (int d = static_cast<int>(r) - 1; d >= 0; --d) {
        int64_t c = rest % out[d] - pads[d];
        rest /= out[d];
        if (c < 0 || c >= in[d]) {
          if (mode == "constant") {
            outside = true;
          } else if (mode == "edge") {
            c = c < 0 ? 0 : in[d] - 1;
          } else {  // reflect, without repeating the edge
            c = c < 0 ? -c : 2 * (in[d] - 1) - c;
          }
        }
        offset += c * in_strides[d];
      }
      dst[i] = outside ? value : src[offset];
    }
  }, n, {src, dst});
  values_[n.outputs[0]] = result;
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileReduce(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  x = AsFloat(n.inputs[0], x);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  Shape reduced = x.shape;
  std::vector<bool> is_reduced(rank, n.axes.empty());
  for (int64_t a : n.axes) {
    ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(a, rank, n));
    is_reduced[axis] = true;
  }
  Shape out;
  for (int64_t d = 0; d < rank; ++d) {
    if (is_reduced[d]) reduced[d] = 1;
    if (!is_reduced[d] || n.keepdims) out.push_back(reduced[d]);
  }
  if (reduced == x.shape) {  // nothing to reduce: a view
    values_[n.outputs[0]] = View(Plain(n.inputs[0], x), out);
    return absl::OkStatus();
  }
  const dnnl::algorithm alg = n.op == OpKind::kReduceMean ? dnnl::algorithm::reduction_mean
                                                          : dnnl::algorithm::reduction_max;
  dnnl::reduction::desc desc(alg, x.mem.get_desc(), PlainDesc(DnnlDims(reduced)), 0.0f, 0.0f);
  dnnl::reduction::primitive_desc pd(desc, engine_);
  Value result{reduced, NewMemory(pd.dst_desc())};
  // The max of grid values is one of them; a mean is not.
  if (n.op == OpKind::kReduceMax) result.grid = x.grid;
  result.non_negative = x.non_negative;
  AddStep(dnnl::reduction(pd), {{DNNL_ARG_SRC, x.mem}, {DNNL_ARG_DST, result.mem}}, &n);
  values_[n.outputs[0]] = View(result, out);
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileTranspose(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  const int rank = static_cast<int>(x.shape.size());
  std::vector<int64_t> perm = n.axes;
  if (perm.empty()) {
    for (int i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  std::vector<int> permutation(perm.begin(), perm.end());
  std::vector<int> sorted = permutation;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < static_cast<int>(sorted.size()); ++i) {
    if (static_cast<int>(sorted.size()) != rank || sorted[i] != i) {
      return NodeError(n, absl::StrCat("perm ", ShapeToString(perm),
                                       " is not a permutation of rank ", rank));
    }
  }
  Shape out(rank);
  for (int i = 0; i < rank; ++i) out[i] = x.shape[perm[i]];
  // The output in its plain layout, seen with the input's axis order: a reorder from the plain
  // input into it moves every element to its transposed place.
  Value result = x;
  result.shape = out;
  memory::desc out_desc = PlainDesc(DnnlDims(out));
  out_desc.data.data_type = static_cast<dnnl_data_type_t>(x.type());
  result.mem = NewMemory(out_desc);
  if (rank <= 1) {
    values_[n.outputs[0]] = View(Plain(n.inputs[0], x), out);
    return absl::OkStatus();
  }
  const memory::desc as_input = out_desc.permute_axes(permutation);
  const memory src = Plain(n.inputs[0], x).mem;
  memory dst_view(as_input, engine_, result.mem.get_data_handle());
  AddStep(dnnl::reorder(src, dst_view), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst_view}}, &n);
  values_[n.outputs[0]] = result;
  return absl::OkStatus();
}

absl::Status InferenceCompiler::CompileSlice(const Node& n) {
  ASSIGN_OR_RETURN(Value x, Get(n.inputs[0], n));
  absl::StatusOr<std::vector<SliceRange>> ranges =
      ResolveSlice(x.shape, n.starts, n.ends, n.axes, n.steps);
  if (!ranges.ok()) return NodeError(n, std::string(ranges.status().message()));
  Shape out;
  bool unit_steps = true;
  for (const SliceRange& r : *ranges) {
    out.push_back(r.count);
    unit_steps &= r.step == 1;
  }
  Value result = x;  // a slice of grid values stays on the grid
  result.shape = out;
  memory::desc out_desc = PlainDesc(DnnlDims(out));
  out_desc.data.data_type = static_cast<dnnl_data_type_t>(x.type());
  result.mem = NewMemory(out_desc);
  if (NumElements(out) == 0) return NodeError(n, "the slice is empty");
  if (unit_steps) {
    // A window of the input (in any layout oneDNN can describe it) reordered into plain memory.
    memory::dims offsets;
    for (const SliceRange& r : *ranges) offsets.push_back(r.start);
    // Plain first: a window of a blocked layout must align with its blocks.
    const memory src = Plain(n.inputs[0], x).mem;
    memory::desc window = src.get_desc().submemory_desc(DnnlDims(out), offsets);
    memory src_window(window, engine_, src.get_data_handle());
    AddStep(dnnl::reorder(src_window, result.mem),
            {{DNNL_ARG_FROM, src_window}, {DNNL_ARG_TO, result.mem}}, &n);
  } else {
    if (x.is_int8()) return NodeError(n, "strided slices of int8 codes are not supported");
    const Value plain = Plain(n.inputs[0], x);
    const float* src = static_cast<const float*>(plain.mem.get_data_handle());
    float* dst = static_cast<float*>(result.mem.get_data_handle());
    AddHostStep([src, dst, shape = x.shape, r = *ranges] { CopySlice(src, shape, r, dst); }, n,
                {src, dst});
  }
  values_[n.outputs[0]] = result;
  return absl::OkStatus();
}

absl::Status InferenceCompiler::Compile() {
  if (compiler_options_.batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch must be >= 1, got ", compiler_options_.batch));
  }
  try {
    RETURN_IF_ERROR(PrepareGraph());
    if (!compiler_options_.reuse_buffers) return CompileGraph();
    allocation_ = Allocation::kPlan;
    RETURN_IF_ERROR(CompileGraph());
    const bool planned = PlanBuffers();
    ResetCompiled();  // frees the planning pass's buffers, never touched
    allocation_ = Allocation::kOwn;
    if (!planned) {
      activation_bytes_ = 0;
      return CompileGraph();
    }
    arena_.reset(static_cast<char*>(
        std::aligned_alloc(4096, std::max<int64_t>((activation_bytes_ + 4095) / 4096 * 4096, 4096))));
    if (arena_ == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          graph_.source, ": ", compiler_options_.error_prefix, "cannot allocate ",
          activation_bytes_ >> 20, " MiB of activation memory; try a smaller batch"));
    }
    allocation_ = Allocation::kArena;
    RETURN_IF_ERROR(CompileGraph());
    if (buffers_diverged_ || next_buffer_ != buffers_.size()) {
      return absl::InternalError(absl::StrCat(
          graph_.source, ": ", compiler_options_.error_prefix,
          "the second compile asked for other buffers than the first (buffer reuse)"));
    }
    return absl::OkStatus();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(graph_.source, ": ", compiler_options_.error_prefix,
                                            "oneDNN error: ", e.what()));
  }
}

absl::Status InferenceCompiler::CompileGraph() {
  const int threads = compiler_options_.threads;
  if (threads > 0) omp_set_num_threads(threads);
  for (const ValueInfo& declared : graph_.inputs) {
    ValueInfo info = declared;
    auto it = compiler_options_.input_shapes.find(info.name);
    if (it != compiler_options_.input_shapes.end()) {
      info.shape = it->second;
    } else if (!info.shape.empty()) {
      info.shape[0] = compiler_options_.batch;
    }
    for (size_t i = 0; i < info.shape.size(); ++i) {
      if (info.shape[i] < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            graph_.source, ": input '", info.name, "' has unknown dimension ", i, " in ",
            ShapeToString(declared.shape), "; give its full shape"));
      }
    }
    memory mem = NewMemory(PlainDesc(DnnlDims(info.shape)));
    input_mems_.push_back(mem);
    values_[info.name] = Value{info.shape, mem};
    inputs_.push_back(std::move(info));
  }
  for (int i = 0; i < static_cast<int>(graph_.nodes.size()); ++i) {
    for (const std::string& in : graph_.nodes[i].inputs) readers_[in].push_back(i);
  }
  for (const Node& n : graph_.nodes) {
    try {
      // A pending output quantizer moves past a max pooling that alone reads the value, and is
      // applied before any other reader.
      std::optional<quant::Quantizer> carried;
      for (const std::string& in : n.inputs) {
        auto it = values_.find(in);
        if (it == values_.end() || !it->second.pending) continue;
        if (CarriesPending(n, in)) {
          carried = it->second.pending;
          it->second.pending.reset();
        } else {
          ApplyPending(in, n);
        }
      }
      RETURN_IF_ERROR(CompileByOpKind(*this, n));
      if (carried) values_.at(n.outputs[0]).pending = carried;
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat(compiler_options_.error_prefix, "node '", n.name,
                                              "' (", n.onnx_op,
                                              "): oneDNN rejected it: ", e.what()));
    }
  }
  for (const std::string& name : graph_.outputs) {
    Node edge;
    edge.name = name;
    edge.onnx_op = "graph output";
    auto pending = values_.find(name);
    if (pending != values_.end() && pending->second.pending) ApplyPending(name, edge);
    ASSIGN_OR_RETURN(Value v, Get(name, edge));  // a computed value, or a constant output
    const Value plain = Plain(name, AsFloat(name, v));
    output_mems_.push_back(plain.mem);
    outputs_.push_back(ValueInfo{name, plain.shape});
  }
  return absl::OkStatus();
}

absl::Status InferenceCompiler::ExecuteSteps() {
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
          compiler_options_.error_prefix, "node '",
          step.node.empty() ? compiler_options_.unnamed_step : step.node, "' failed: ", e.what()));
    }
  }
  stream_.wait();
  return absl::OkStatus();
}

absl::Status InferenceCompiler::Run(const std::map<std::string, const Tensor*>& inputs,
                                    std::map<std::string, Tensor>* outputs) {
  if (compiler_options_.threads > 0) omp_set_num_threads(compiler_options_.threads);
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

absl::Status InferenceCompiler::RunSingle(const float* input, float* output) {
  if (input_mems_.size() != 1 || output_mems_.empty()) {
    return absl::FailedPreconditionError("RunSingle needs a network with exactly one input");
  }
  if (compiler_options_.threads > 0) omp_set_num_threads(compiler_options_.threads);
  std::memcpy(input_mems_[0].get_data_handle(), input, input_mems_[0].get_desc().get_size());
  RETURN_IF_ERROR(ExecuteSteps());
  std::memcpy(output, output_mems_[0].get_data_handle(), output_mems_[0].get_desc().get_size());
  return absl::OkStatus();
}

Tensor Transposed2D(const Tensor& t) {
  const int64_t rows = t.shape()[0], cols = t.shape()[1];
  Tensor out = Tensor::Float({cols, rows});
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out.floats()[j * rows + i] = t.floats()[i * cols + j];
  }
  return out;
}

absl::StatusOr<std::vector<float>> GemmBias(const Node& n, const Graph& graph, int64_t m,
                                            int64_t nn, float beta, int64_t* rows) {
  *rows = 0;
  std::vector<float> bias;
  if (n.inputs.size() <= 2 || n.inputs[2].empty() || beta == 0.0f) return bias;
  const Tensor& c = graph.constants.at(n.inputs[2]);
  ASSIGN_OR_RETURN(const Shape cs, GemmCShape(n, c.shape(), m, nn));
  *rows = cs[0] == 1 ? 1 : m;
  bias.resize(*rows * nn);
  for (int64_t i = 0; i < *rows; ++i) {
    for (int64_t j = 0; j < nn; ++j) {
      bias[i * nn + j] = beta * c.floats()[(cs[0] == 1 ? 0 : i) * cs[1] + (cs[1] == 1 ? 0 : j)];
    }
  }
  return bias;
}

quant::LayerInfo ConvLayerInfo(const Shape& ws, const Shape& x_shape, const Shape& out_shape,
                        bool has_bias) {
  quant::LayerInfo info;
  info.layer_class = quant::LayerClass::kConv;
  info.weight_shape = ws;
  info.input_shape = x_shape;
  info.input_shape[0] = 1;
  info.output_shape = out_shape;
  info.output_shape[0] = 1;
  info.fan_in = Product(ws, 1, ws.size());
  info.macs = Product(out_shape, 1, out_shape.size()) * info.fan_in;
  info.weight_count = NumElements(ws);
  info.bias_count = has_bias ? ws[0] : 0;
  info.output_channels = ws[0];
  return info;
}

quant::LayerInfo GemmLayerInfo(const Shape& b_shape, int64_t k, int64_t nn, bool trans_a,
                        bool has_bias) {
  quant::LayerInfo info;
  info.layer_class = quant::LayerClass::kFc;
  info.weight_shape = b_shape;
  info.input_shape = trans_a ? Shape{k, 1} : Shape{1, k};
  info.output_shape = {1, nn};
  info.fan_in = k;
  info.macs = k * nn;
  info.weight_count = k * nn;
  info.bias_count = has_bias ? nn : 0;
  info.output_channels = nn;
  return info;
}

}  // namespace bitsweep::engine
