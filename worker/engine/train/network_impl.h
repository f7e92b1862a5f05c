// The training network's internals, shared by the files that implement it: values and their
// gradient buffers (Val), the operation interface every backward piece implements (Op), the
// network being assembled (TrainingNetwork::Impl: values, parameters, operations, and a
// CompileX method per operator kind), and the helpers the per-op files share (Arranged, HookCopy).
// Only worker/engine/train/*.cc include it; users include training_network.h.
//
// Where things live: training_network.cc assembles the network (import, parameters, gradient
// routing, the forward/backward loops, write-back); each *_op.cc file holds one family of
// operations, its forward and backward pass and its CompileX method; fake_quant.cc the
// quantization hooks (straight-through in backward); softmax_loss.cc the loss.
//
// To add an operator: an Op subclass with Forward, and BuildBackward/Backward writing
// grads[i].mem for each input i whose grads[i].needed(), plus an Impl::CompileX that creates its
// output value with AddVal and appends the op to ops_; route the kind to it in CompileByOpKind
// (dnnl_util.h).
#ifndef BITSWEEP_WORKER_ENGINE_TRAIN_NETWORK_IMPL_H_
#define BITSWEEP_WORKER_ENGINE_TRAIN_NETWORK_IMPL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "onnx/onnx_pb.h"
#include "worker/engine/dnnl_util.h"
#include "worker/engine/graph.h"
#include "worker/engine/tensor.h"
#include "worker/engine/train/training_network.h"

namespace bitsweep::engine {

namespace train_internal {

using dnnl::memory;
using Dims = memory::dims;
using Args = std::unordered_map<int, memory>;

inline float* Data(const memory& m) { return static_cast<float*>(m.get_data_handle()); }

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
  using memory = dnnl::memory;
  using Dims = memory::dims;
  using Args = train_internal::Args;

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
  std::map<std::string, std::string> output_hook_points_;  // value name -> layer
  // Conv name -> the BatchNormalization folded into it (FoldQuantizedBatchNorms).
  std::map<std::string, Node> folded_batch_norms_;

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
  // Before FuseActivations (conv_op.cc): removes each BatchNormalization that the emulation folds
  // into a Conv whose weights options_.quant quantizes, moves its output to the Conv and records
  // it in folded_batch_norms_; CompileConv then trains the pair folded, with frozen statistics.
  void FoldQuantizedBatchNorms();
  absl::Status CompileConcat(const Node& n);
  absl::Status CompileBinary(const Node& n);
  // Softmax is not trainable inside a model (only as its last node, which Build drops).
  absl::Status CompileSoftmax(const Node& n);
  // Views, and Dropout (imported as Identity).
  absl::Status CompileView(const Node& n);
  // Pad, Slice and Transpose gather their output through an index map (shape_ops.cc).
  absl::Status CompilePad(const Node& n);
  absl::Status CompileSlice(const Node& n);
  absl::Status CompileTranspose(const Node& n);
  // Appends a gather from value `x_id` to a new value n.outputs[0] of shape `out`: output element
  // (c_0, ..., c_r) reads input element sum_d offsets[d][c_d], or is `fill` when any of those is
  // -1. `injective`: no two output elements read the same input element.
  absl::Status AddGather(const Node& n, int x_id, const Shape& out,
                         const std::vector<std::vector<int64_t>>& offsets, float fill,
                         bool injective);
  // ReduceMean and ReduceMax (reduce_op.cc).
  absl::Status CompileReduce(const Node& n);
  absl::Status CompileDropout(const Node& n);
  // Adds eltwise steps for a layer's fused activations; `pre` is the layer's raw output, the
  // last step writes n.outputs[0].
  void AddLayerTail(const Node& n, int pre);
  // Output quantization (fake_quant.cc): FindOutputHookPoints maps each layer's output value, as
  // the emulation places it (after a folded BatchNormalization and fused activations), to the
  // layer; AddOutputHooks, called after a node is compiled, appends the hook step for each such
  // value the node wrote; AddOutputHook applies options_.quant.outputs of `layer` in place to
  // value `target`.
  void FindOutputHookPoints();
  void AddOutputHooks(const Node& n);
  void AddOutputHook(const std::string& layer, int target);
  // Output value for a layer with fused activations: a fresh intermediate, else outputs[0].
  std::string LayerOutputName(const Node& n) const {
    return n.post_ops.empty() ? n.outputs[0] : n.name + "/pre_activation";
  }
};

namespace train_internal {

using Impl = TrainingNetwork::Impl;

// Applies a hook to a copy of `src` in `copy` (allocated by the caller). fake_quant.cc.
void HookCopy(Impl& net, const std::function<void(const std::string&, float*, int64_t)>& hook,
              const std::string& layer, const memory& src, const memory& copy);

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

// Row-major strides of `shape` (shape_ops.cc).
std::vector<int64_t> Strides(const Shape& shape);
// One entry per element of `shape`, in row-major order: the sum over dimensions d of
// offsets[d][coordinate d], or -1 when any of those offsets is -1 (shape_ops.cc).
std::vector<int64_t> IndexMap(const Shape& shape,
                              const std::vector<std::vector<int64_t>>& offsets);

}  // namespace train_internal

// The per-op files and the assembly use these names unqualified.
using train_internal::Args;
using train_internal::Arranged;
using train_internal::Data;
using train_internal::Dims;
using train_internal::HookCopy;
using train_internal::Impl;
using train_internal::IndexMap;
using train_internal::memory;
using train_internal::Strides;

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TRAIN_NETWORK_IMPL_H_
