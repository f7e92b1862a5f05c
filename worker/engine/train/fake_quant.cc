// Fake-quantization hooks in the training network: the forward pass quantizes copies of a layer's
// input and weights (HookCopy; the fp32 shadow values are what the optimizer updates) and, in
// place, the layer's output (OutputHookOp) where the emulation quantizes it: after the
// BatchNormalization it folds into the layer and the activations it fuses. The backward pass
// treats every quantizer as the identity (straight-through estimator), so these steps have no
// backward.
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/graph_passes.h"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

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

namespace train_internal {

void HookCopy(Impl& net, const std::function<void(const std::string&, float*, int64_t)>& hook,
              const std::string& layer, const memory& src, const memory& copy) {
  net.Sync();
  const size_t bytes = src.get_desc().get_size();
  std::memcpy(copy.get_data_handle(), src.get_data_handle(), bytes);
  hook(layer, Data(copy), static_cast<int64_t>(bytes / sizeof(float)));
}

}  // namespace train_internal

void Impl::FindOutputHookPoints() {
  if (!options_.quant.outputs) return;
  // The emulation's placement: fold BatchNormalization into the Conv before it, fuse the
  // activations; a layer's output is then the value its (folded, fused) node writes.
  Graph placement = graph_.SharedCopy();
  FoldBatchNorm(&placement);
  FuseActivations(&placement);
  for (const Node& n : placement.nodes) {
    if (IsQuantizableLayer(n.op)) output_hook_points_[n.outputs[0]] = n.name;
  }
}

void Impl::AddOutputHooks(const Node& n) {
  for (const std::string& value : n.outputs) {
    auto point = output_hook_points_.find(value);
    auto id = ids_.find(value);
    if (point == output_hook_points_.end() || id == ids_.end()) continue;
    AddOutputHook(point->second, id->second);
  }
}

void Impl::AddOutputHook(const std::string& layer, int target) {
  auto hook = std::make_unique<OutputHookOp>(layer, "output quantizer");
  hook->target = target;
  ops_.push_back(std::move(hook));
}

}  // namespace bitsweep::engine
