// Dropout for training: inverted dropout with masks from a counter-based generator (splitmix64 of
// the seed, the op and the step), so results do not depend on OpenMP scheduling; identity in
// eval mode.
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

// splitmix64: counter-based random bits for dropout masks (independent of the thread count).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

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

}  // namespace

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

}  // namespace bitsweep::engine
