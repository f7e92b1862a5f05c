// ReduceMean and ReduceMax for training (any axes, keepdims or not), on the host: each input
// element's output element comes from an index map built at compile time. ReduceMean's backward
// spreads dy / count over the reduced elements; ReduceMax's gives dy to the first maximum of each
// reduced group (the one the forward pass recorded).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/train/network_impl.h"

namespace bitsweep::engine {

namespace {

class ReduceOp : public Op {
 public:
  using Op::Op;
  void Forward(Impl& net, const StepOptions& step) override {
    net.Sync();
    const float* x = Data(net.V(in[0]).mem);
    float* y = Data(net.V(out).mem);
    const int64_t outputs = static_cast<int64_t>(argmax.size());
    const int64_t inputs = static_cast<int64_t>(target.size());
    if (max) {
      std::fill(y, y + outputs, -std::numeric_limits<float>::infinity());
      std::fill(argmax.begin(), argmax.end(), -1);
      for (int64_t i = 0; i < inputs; ++i) {
        const int64_t o = target[i];
        if (argmax[o] < 0 || x[i] > y[o]) {
          y[o] = x[i];
          argmax[o] = i;
        }
      }
    } else {
      std::vector<double> sum(outputs, 0.0);
      for (int64_t i = 0; i < inputs; ++i) sum[target[i]] += x[i];
      for (int64_t o = 0; o < outputs; ++o) y[o] = static_cast<float>(sum[o] * scale);
    }
  }
  void Backward(Impl& net) override {
    net.Sync();
    const float* dy = Data(net.V(out).diff);
    float* dx = Data(grads[0].mem);
    const int64_t inputs = static_cast<int64_t>(target.size());
    const int64_t* to = target.data();
    if (max) {
      std::fill(dx, dx + inputs, 0.0f);
      for (size_t o = 0; o < argmax.size(); ++o) dx[argmax[o]] = dy[o];
    } else {
      const double s = scale;
#pragma omp parallel for if (inputs > 32768)
      for (int64_t i = 0; i < inputs; ++i) dx[i] = static_cast<float>(dy[to[i]] * s);
    }
  }

  bool max = false;
  double scale = 1.0;            // 1 / elements per output (ReduceMean)
  std::vector<int64_t> target;   // per input element: its output element
  std::vector<int64_t> argmax;   // per output element (ReduceMax): the input element chosen
};

}  // namespace

absl::Status Impl::CompileReduce(const Node& n) {
  ASSIGN_OR_RETURN(int x_id, Get(n.inputs[0], n));
  const Shape in = vals_[x_id].shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  std::vector<bool> reduced(rank, n.axes.empty());
  for (int64_t a : n.axes) {
    ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(a, rank, n));
    reduced[axis] = true;
  }
  Shape out, kept(rank);  // kept: the input shape with reduced dimensions 1
  for (int64_t d = 0; d < rank; ++d) {
    kept[d] = reduced[d] ? 1 : in[d];
    if (!reduced[d] || n.keepdims) out.push_back(kept[d]);
  }
  if (NumElements(in) == 0) return NodeError(n, "the input is empty");
  auto op = std::make_unique<ReduceOp>(n);
  op->max = n.op == OpKind::kReduceMax;
  op->scale = static_cast<double>(NumElements(kept)) / static_cast<double>(NumElements(in));
  op->argmax.assign(NumElements(kept), -1);
  const std::vector<int64_t> kept_strides = Strides(kept);
  std::vector<std::vector<int64_t>> offsets(rank);
  for (int64_t d = 0; d < rank; ++d) {
    for (int64_t c = 0; c < in[d]; ++c) offsets[d].push_back(reduced[d] ? 0 : c * kept_strides[d]);
  }
  op->target = IndexMap(in, offsets);
  op->in = {x_id};
  op->out = AddVal(n.outputs[0], out);
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
