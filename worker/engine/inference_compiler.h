// InferenceCompiler: what the two inference networks -- Network (network.h, fp32 with the
// quantization emulated) and int8::Int8Network (int8/int8_network.h, oneDNN's int8 primitives) --
// share when they compile a Graph into a list of oneDNN steps and run it. Internal to the engine:
// each network's Impl derives from it; nothing outside worker/engine includes it.
//
// The base owns the values table, the step list and its execution, constants and reorders, the
// runtime inputs and graph outputs (plain f32), and compiles the operators both networks treat
// alike (GlobalAveragePool, Add/Mul, BatchNorm, LRN, Softmax, views, Concat's primitive). A
// network compiles its layers (Conv, Gemm, MatMul), activations, pooling and Concat itself, and
// says through AsFloat how an fp32 operator reads a value: the emulation holds floats already; the
// int8 network dequantizes its codes once.
//
//   class Network::Impl : public InferenceCompiler { ... CompileConv(const Node&) override ... };
//   RETURN_IF_ERROR(impl->Compile());
//   return std::unique_ptr<Network>(new Network(std::move(impl)));  // an InferenceNetwork
#ifndef BITSWEEP_WORKER_ENGINE_INFERENCE_COMPILER_H_
#define BITSWEEP_WORKER_ENGINE_INFERENCE_COMPILER_H_

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/graph.h"
#include "quant/layer_info.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

struct InferenceCompilerOptions {
  // The first dimension of every runtime input, unless `input_shapes` names the input.
  int64_t batch = 1;
  std::map<std::string, Shape> input_shapes;
  int threads = 0;  // OpenMP threads for oneDNN; 0 keeps the process default
  // Error messages: prepended to compile and run errors ("int8 path: "), and the name given to
  // a failing step that belongs to no node (a layout reorder).
  std::string error_prefix;
  std::string unnamed_step = "reorder";
  // Quantization emulation (network.h; not owned, may be null): the layers' quantizers, which
  // the helpers below place. `move_quantizers` lets them apply a quantizer away from where the
  // plan puts it when that gives the same values (past a max pooling, or a consumer's input
  // quantizer applied in its producer's pass) and run a layer sub-batch by sub-batch; off while
  // an observer must see each layer's input and output where the plan quantizes them (and in
  // tests, to compare with the plain placement).
  const quant::QuantPlan* quant = nullptr;
  bool move_quantizers = true;
  // Buffer reuse: the values the steps compute share one arena, a buffer's place taken by later
  // values once its last step has run (lifetimes from a first, planning compile; see
  // NewMemory). Off: every value keeps a buffer of its own.
  bool reuse_buffers = false;
};

class InferenceCompiler {
 public:
  InferenceCompiler(Graph graph, InferenceCompilerOptions options);
  virtual ~InferenceCompiler();
  InferenceCompiler(const InferenceCompiler&) = delete;
  InferenceCompiler& operator=(const InferenceCompiler&) = delete;

  // Checks the batch, prepares the graph (PrepareGraph), then compiles the runtime inputs, every
  // node in order and the graph outputs. oneDNN exceptions become errors naming the model (or,
  // inside a node, the node). With reuse_buffers, the graph is compiled twice: once to learn
  // which steps touch each buffer, then into the arena planned from that.
  absl::Status Compile();
  // Bytes of activation memory the steps use: the arena with reuse_buffers, else the sum of the
  // buffers NewMemory made.
  int64_t activation_bytes() const { return activation_bytes_; }

  // Runs one batch: every runtime input as a float tensor of its compiled shape.
  absl::Status Run(const std::map<std::string, const Tensor*>& inputs,
                   std::map<std::string, Tensor>* outputs);
  // One input and one output: inputs()[0] shape in, outputs()[0] shape out.
  absl::Status RunSingle(const float* input, float* output);

  const Graph& graph() const { return graph_; }
  const std::vector<ValueInfo>& inputs() const { return inputs_; }
  const std::vector<ValueInfo>& outputs() const { return outputs_; }
  const std::vector<quant::LayerInfo>& layers() const { return layers_; }
  const std::map<std::string, quant::Quantizer>& weight_quantizers() const {
    return weight_quantizers_;
  }

 protected:
  using memory = dnnl::memory;
  using ElementType = memory::data_type;

  struct Value {
    Shape shape;  // logical ONNX shape (may be rank 0)
    memory mem;   // dims are DnnlDims(shape); f32 (int8 network: or u8/s8 codes); may be blocked
    // The quantizer whose grid the values lie on, if known. The emulation skips quantizing a
    // layer input already on its grid; the int8 network reads u8/s8 codes as code * scale.
    std::optional<quant::Quantizer> grid;
    bool non_negative = false;  // known to hold no negative value (the int8 network's u8 choice)
    // Emulation: an output quantizer not applied yet (Compile applies it before the first reader
    // that does not commute with it, or moves it past a max pooling that alone reads the value).
    std::optional<quant::Quantizer> pending;
    ElementType type() const { return static_cast<ElementType>(mem.get_desc().data.data_type); }
    bool is_int8() const { return type() != ElementType::f32; }
  };

  // The graph passes (graph_passes.h) and checks before compiling.
  virtual absl::Status PrepareGraph() = 0;
  // The network-specific compilers (see CompileByOpKind in dnnl_util.h).
  virtual absl::Status CompileConv(const Node& n) = 0;
  virtual absl::Status CompileGemm(const Node& n) = 0;
  virtual absl::Status CompileMatMul(const Node& n) = 0;
  virtual absl::Status CompileEltwise(const Node& n) = 0;
  virtual absl::Status CompilePool(const Node& n) = 0;
  virtual absl::Status CompileConcat(const Node& n) = 0;
  // The value as an fp32 operator reads it (f32, same layout); `name` keys any conversion cache.
  virtual Value AsFloat(const std::string& name, const Value& v) { return v; }

  // The operators both networks compile alike, each reading its data through AsFloat.
  absl::Status CompileGlobalAveragePool(const Node& n);
  absl::Status CompileBinary(const Node& n);
  absl::Status CompileBatchNorm(const Node& n);
  absl::Status CompileLrn(const Node& n);
  absl::Status CompileSoftmax(const Node& n);
  absl::Status CompileView(const Node& n);  // codes stay codes
  absl::Status CompilePad(const Node& n);
  absl::Status CompileReduce(const Node& n);
  absl::Status CompileTranspose(const Node& n);  // a reorder into the permuted layout
  absl::Status CompileSlice(const Node& n);      // a reorder of a sub-memory when steps are 1
  // The eltwise primitive(s) of activation node `n` on `x` (f32): one for most kinds, linear then
  // clip for HardSigmoid. Returns the output memory (x's layout).
  memory AddEltwise(const Node& n, const memory& x);
  // Concatenates `parts` (the values of n.inputs) into n.outputs[0], whose grid is `grid`.
  absl::Status AddConcat(const Node& n, const std::vector<Value>& parts,
                         std::optional<quant::Quantizer> grid);

  // Quantization emulation (options().quant). The layer's plan, or null.
  const quant::LayerQuantPlan* PlanFor(const Node& n) const;
  // Places layer n's output quantizer on `out` (n's output, about to be stored): nothing to do
  // when `fused` (the primitive's post-ops quantize), else a vectorized pass in place after the
  // primitive -- or later, on a max pooling's smaller output (out->pending), which gives the same
  // values for a monotone deterministic quantizer. Sets out->grid when applied now.
  void QuantizeLayerOutput(const Node& n, Value* out, bool fused);
  // The layer primitive of n over the whole batch (`pd`, arguments `args`: DNNL_ARG_SRC and
  // DNNL_ARG_DST hold batch-major activations; the post-ops' operands are added here), with `sub_batch(b)` making the same primitive for
  // b images. When QuantizeLayerOutput then adds a pass over the output, it runs the primitive
  // sub-batch by sub-batch instead, each followed by its pass while that part of the output is
  // in cache (only where oneDNN picks the same implementation and layouts for the sub-batch, so
  // the values are the same).
  using SubBatchPrimitive =
      std::function<std::pair<dnnl::primitive, dnnl::primitive_desc>(int64_t batch)>;
  void AddLayerStep(const Node& n, const dnnl::primitive_desc& pd, dnnl::primitive p,
                    std::unordered_map<int, memory> args, SubBatchPrimitive sub_batch);
  // Layer n's data input `name` (value x, off the input quantizer's grid) quantized by the plan's
  // input quantizer: in place when every reader of `name` is a layer quantizing it alike (one
  // pass, and the value's grid is recorded), else a private copy written by one pass and shared
  // by every layer that asks for the same quantizer of `name`.
  Value QuantizeLayerInput(const Node& n, const std::string& name, const Value& x);
  // The output post-ops that compute `q` exactly in fp32 inside the producing primitive, appended
  // to `ops` (false, `ops` unchanged, when q cannot be computed that way).
  static bool AppendQuantizerPostOps(const quant::Quantizer& q, dnnl::post_ops* ops);
  // Layer n's output quantizer `q` as post-ops (AppendQuantizerPostOps) and, when that fuses and
  // the readers' common input quantizer is another grid that fuses too, that one after it (as
  // binary post-ops whose scalar operands AddLayerStep passes), so the layer writes its readers'
  // input values directly (Conv layers); false when `q` is not fused.
  bool AppendLayerQuantizerPostOps(const Node& n, const quant::Quantizer& q, dnnl::post_ops* ops);

  // Memory for data the steps write at run time (a computed value, a temporary): with
  // reuse_buffers, a place in the arena shared with values whose lifetimes do not overlap, so
  // nothing may be written into it at compile time. Constants and compile-time reorders get
  // memory of their own (ConstantMemory, ReorderNow).
  memory NewMemory(const memory::desc& desc);
  // A computed value, or a float constant (copied into plain memory once).
  absl::StatusOr<Value> Get(const std::string& name, const Node& n);
  // The value in plain row-major layout, same element type, reordering once if needed.
  Value Plain(const std::string& name, const Value& v);
  // A plain view of `v` (same element type) with other dims of the same count; `v` must be plain.
  Value View(const Value& v, Shape shape);
  memory ConstantMemory(const memory::desc& desc, const void* data);
  // Reorders now, at compile time (constant weights into the primitive's layout).
  memory ReorderNow(const memory& src, const memory::desc& dst_desc);
  // Adds a reorder step from `src` to a new memory of `want` unless they already agree.
  memory ReorderTo(const memory& src, const memory::desc& want, const Node* n);

  // Adds a primitive reading `x` and writing `out` (its memory: pd.dst_desc()) as n.outputs[0].
  template <typename Primitive>
  void AddSrcDstStep(const typename Primitive::primitive_desc& pd, const memory& x, Value out,
                     const Node& n) {
    out.mem = NewMemory(pd.dst_desc());
    AddStep(Primitive(pd), {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, out.mem}}, &n);
    values_[n.outputs[0]] = std::move(out);
  }
  // `n` names the step in run errors; null for layout reorders.
  void AddStep(dnnl::primitive p, std::unordered_map<int, memory> args, const Node* n);
  // A host function (quantization, observation) run after the primitives before it finish.
  // `touches`: every buffer (any address inside it) the function reads or writes; buffer reuse
  // needs them, and is turned off when a host step does not say.
  void AddHostStep(std::function<void()> f, const Node& n, std::vector<const void*> touches = {});

  Graph graph_;
  const InferenceCompilerOptions compiler_options_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::string, Value> values_;
  std::vector<quant::LayerInfo> layers_;
  std::map<std::string, quant::Quantizer> weight_quantizers_;

 private:
  // A oneDNN primitive with its arguments, or a host function.
  struct Step {
    dnnl::primitive primitive;
    std::unordered_map<int, memory> args;
    std::function<void()> host;
    std::string node;  // for error messages; empty for layout reorders
    std::vector<const void*> touches;  // host steps: the buffers they use
  };
  // Buffer reuse. kOwn: NewMemory allocates; kPlan: it allocates too (never touched before the
  // plan, so it costs address space, not memory) and records each buffer; kArena: it hands out
  // the planned places in arena_, in the planning pass's order.
  enum class Allocation { kOwn, kPlan, kArena };
  struct Buffer {
    const char* base = nullptr;  // kPlan's address
    int64_t size = 0;
    int64_t offset = 0;  // in the arena
    int first = -1, last = -1;  // steps using it (inclusive)
  };
  // Lifetimes of buffers_ from the planning compile's steps, then their arena offsets; false
  // when a host step did not say what it touches (no reuse then).
  bool PlanBuffers();
  // Back to the state before CompileGraph (the prepared graph stays).
  void ResetCompiled();

  template <typename Compiler>
  friend absl::Status CompileByOpKind(Compiler& compiler, const Node& n, const char* unknown);

  absl::Status CompileGraph();
  absl::Status ExecuteSteps();
  // Emulation: applies the pending quantizer of `name` now, in place (followed by its readers'
  // common input quantizer when there is one); `n` names the step.
  void ApplyPending(const std::string& name, const Node& n);
  // Whether compiling `n` can carry the pending quantizer of its input `name` to its output.
  bool CarriesPending(const Node& n, const std::string& name) const;
  // The input quantizer that every layer downstream of `name` applies to it, when the path to
  // them commutes with quantization (only readers: layers quantizing it alike, or a single max
  // pooling / concatenation / view whose output qualifies in turn); nullopt otherwise.
  std::optional<quant::Quantizer> DownstreamInputQuantizer(const std::string& name,
                                                           bool direct_only) const;
  // The readers' common input quantizer of n's output when AppendLayerQuantizerPostOps puts it
  // in n's post-ops after the fused output quantizer `q`.
  std::optional<quant::Quantizer> FusedNextQuantizer(const Node& n,
                                                     const quant::Quantizer& q) const;
  // Whether `name` is a computed value with memory of its own (not a view of another value, a
  // constant or a graph output), so that quantizing it in place affects no other value.
  bool OwnsMemory(const std::string& name) const;
  // A host step writing q_k(...q_1(x)) over `count` floats at `to`, read from `from` (the same
  // pointer: in place), in cache-sized blocks.
  void AddQuantizeStep(std::vector<quant::Quantizer> qs, const float* from, float* to,
                       int64_t count, const Node& n);

  std::map<std::string, std::vector<int>> readers_;  // value -> reading nodes (one per input slot)
  struct LayerStep {
    std::string node;
    size_t step = 0;
    dnnl::primitive_desc pd;
    std::unordered_map<int, memory> args;
    SubBatchPrimitive sub_batch;
  };
  std::optional<LayerStep> last_layer_step_;
  // Runs `layer` (the last step) sub-batch by sub-batch, each followed by the pass of `qs` over
  // its output `dst`; false (nothing changed) where that is not possible.
  bool SplitLayerStep(const Node& n, const LayerStep& layer,
                      const std::vector<quant::Quantizer>& qs, const memory& dst);
  struct QuantizedCopy {
    std::string name;
    quant::Quantizer q;
    Value value;
  };
  std::vector<QuantizedCopy> quantized_copies_;
  // Layer name -> the operands of its binary post-ops (AppendLayerQuantizerPostOps).
  std::map<std::string, std::vector<std::pair<int, memory>>> post_op_args_;

  std::map<std::string, Value> plain_cache_;  // key: name and element type
  std::vector<Step> steps_;
  std::vector<ValueInfo> inputs_;
  std::vector<ValueInfo> outputs_;
  std::vector<memory> input_mems_;   // plain f32, one per runtime input
  std::vector<memory> output_mems_;  // plain f32, one per graph output

  Allocation allocation_ = Allocation::kOwn;
  std::vector<Buffer> buffers_;
  size_t next_buffer_ = 0;  // kArena: the next planned buffer
  bool buffers_diverged_ = false;  // kArena: a size differed from the planning pass
  std::unique_ptr<char, void (*)(void*)> arena_{nullptr, &std::free};
  int64_t activation_bytes_ = 0;
};

// [r, c] -> [c, r].
Tensor Transposed2D(const Tensor& t);

// Gemm's C (a constant), broadcast to [rows, nn] with rows 1 or m and scaled by beta; empty when
// n has no C or beta is 0. `*rows` receives the row count (0 when empty).
absl::StatusOr<std::vector<float>> GemmBias(const Node& n, const Graph& graph, int64_t m,
                                            int64_t nn, float beta, int64_t* rows);

// What the cost model knows of a Conv layer (per sample) with weights `ws` on input `x_shape`.
quant::LayerInfo ConvLayerInfo(const Shape& ws, const Shape& x_shape, const Shape& out_shape,
                        bool has_bias);
// The same for a Gemm layer [m, k] x [k, nn] with B given as `b_shape`.
quant::LayerInfo GemmLayerInfo(const Shape& b_shape, int64_t k, int64_t nn, bool trans_a, bool has_bias);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_INFERENCE_COMPILER_H_
