// Training: backward passes checked against central finite differences (hand-built models that
// cover every trainable operator, and the zoo architectures), the training network's forward
// against the scalar reference, BatchNormalization running statistics, SGD on Fashion-MNIST,
// write-back into the ModelProto, determinism, fake-quantization hooks (STE), BatchNormalization
// folded into Convs with quantized weights (forward against the emulation, gradients through the
// fold against finite differences) and errors.
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "tests/engine/quant_test_util.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/network.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/tensor_proto.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/train/training_network.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

const std::string kData = BITSWEEP_FASHION_MNIST_DIR;

Tensor Random(Shape shape, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t = Tensor::Float(std::move(shape));
  for (float& v : t.floats()) v = normal(rng);
  return t;
}

std::unique_ptr<TrainingNetwork> MakeNet(const onnx::ModelProto& model, int64_t batch,
                                         const Shape& sample, bool input_gradient = false,
                                         const FakeQuantHooks& hooks = {}) {
  TrainingNetworkOptions options;
  options.batch = batch;
  options.sample_shape = sample;
  options.threads = 1;  // robust when ctest runs tests in parallel on 2 cores
  options.seed = 5;
  options.input_gradient = input_gradient;
  options.quant = hooks;
  absl::StatusOr<std::unique_ptr<TrainingNetwork>> net = TrainingNetwork::Create(model, options);
  EXPECT_TRUE(net.ok()) << net.status();
  return net.ok() ? *std::move(net) : nullptr;
}

// Loss in training mode with the current parameters, reusing the dropout masks and leaving the
// running statistics alone.
double Loss(TrainingNetwork& net, const std::vector<float>& x, const std::vector<int>& labels) {
  const absl::Status s =
      net.Forward(x.data(), {.update_running_stats = false, .new_dropout_masks = false});
  EXPECT_TRUE(s.ok()) << s;
  return SoftmaxCrossEntropy(net.logits(), labels.data(), net.batch(), net.num_classes(), nullptr,
                             nullptr);
}

struct GradCheck {
  int random_entries = 12;  // per tensor (all entries when the tensor is smaller)
  int top_entries = 0;      // also the entries with the largest |analytic gradient|
  double rtol = 1e-2;
  bool random_biases = false;  // set (zero-initialized) biases to small random values first
  FakeQuantHooks hooks;        // identity quantizers select the folded BatchNormalization path
};

// Compares analytic gradients of every parameter tensor and of the input with central differences
// of the loss: single entries (random ones and the largest) and, per tensor, the derivative along
// a random unit direction (large, so little affected by rounding). The network computes in
// float, so no single step fits everything: eps = 1e-3 balances rounding noise (about 3e-7 / eps)
// against curvature and the ReLU/max kinks a step may cross; a check passes if the difference at
// eps 1e-3, 1e-2 or 3e-4 agrees within rtol (plus 2e-4 absolute). random_biases keeps ReLUs off
// their kinks where zero biases would put them exactly on it. Returns the number of checks.
int CheckGradients(const onnx::ModelProto& model, const Shape& input_shape, uint64_t seed,
                   const GradCheck& check = {}) {
  std::mt19937_64 rng(seed);
  const int64_t batch = input_shape[0];
  const Shape sample(input_shape.begin() + 1, input_shape.end());
  std::unique_ptr<TrainingNetwork> net = MakeNet(model, batch, sample, true, check.hooks);
  if (net == nullptr) return 0;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (check.random_biases) {
    for (Parameter& p : net->parameters()) {
      if (p.role != ParameterRole::kBias) continue;
      for (float& v : p.value.floats()) v = 0.05f * normal(rng);
    }
  }
  std::vector<float> x = Random(input_shape, rng).floats();
  std::vector<int> labels(batch);
  std::uniform_int_distribution<int> label(0, static_cast<int>(net->num_classes()) - 1);
  for (int& l : labels) l = label(rng);
  absl::StatusOr<BatchLoss> base =
      net->ForwardBackward(x.data(), labels.data(), {.update_running_stats = false});
  EXPECT_TRUE(base.ok()) << base.status();
  if (!base.ok()) return 0;
  EXPECT_NEAR(base->loss, Loss(*net, x, labels), 1e-6);

  struct Target {
    std::string name;
    float* values;
    std::vector<float> grad;
  };
  std::vector<Target> targets;
  for (Parameter& p : net->parameters()) {
    targets.push_back({p.name, p.value.floats().data(), p.grad.floats()});
  }
  const float* dx = net->input_gradient();
  EXPECT_NE(dx, nullptr);
  if (dx == nullptr) return 0;
  targets.push_back({"<input>", x.data(), std::vector<float>(dx, dx + x.size())});

  int checks = 0;
  for (Target& t : targets) {
    const int64_t count = static_cast<int64_t>(t.grad.size());
    // d loss / d (values + h * direction) by central differences.
    auto numeric = [&](const std::vector<float>& direction, double h) {
      const std::vector<float> original(t.values, t.values + count);
      for (int64_t i = 0; i < count; ++i) t.values[i] = original[i] + h * direction[i];
      const double plus = Loss(*net, x, labels);
      for (int64_t i = 0; i < count; ++i) t.values[i] = original[i] - h * direction[i];
      const double minus = Loss(*net, x, labels);
      std::copy(original.begin(), original.end(), t.values);
      return (plus - minus) / (2 * h);
    };
    auto verify = [&](const std::vector<float>& direction, double analytic,
                      const std::string& what) {
      ++checks;
      auto close = [&](double num) {
        return std::fabs(num - analytic) <=
               check.rtol * std::max(std::fabs(num), std::fabs(analytic)) + 2e-4;
      };
      const double num = numeric(direction, 1e-3);
      if (close(num) || close(numeric(direction, 1e-2)) || close(numeric(direction, 3e-4))) {
        return;
      }
      ADD_FAILURE() << "d loss / d " << t.name << what << ": analytic " << analytic
                    << ", numeric " << num << " (eps 1e-3), " << numeric(direction, 1e-2)
                    << " (1e-2), " << numeric(direction, 3e-4) << " (3e-4)";
    };
    std::vector<int64_t> indices;
    if (count <= check.random_entries) {
      for (int64_t i = 0; i < count; ++i) indices.push_back(i);
    } else {
      std::uniform_int_distribution<int64_t> pick(0, count - 1);
      for (int i = 0; i < check.random_entries; ++i) indices.push_back(pick(rng));
      std::vector<int64_t> order(count);
      std::iota(order.begin(), order.end(), 0);
      const int64_t top = std::min<int64_t>(check.top_entries, count);
      std::partial_sort(order.begin(), order.begin() + top, order.end(),
                        [&](int64_t a, int64_t b) {
                          return std::fabs(t.grad[a]) > std::fabs(t.grad[b]);
                        });
      indices.insert(indices.end(), order.begin(), order.begin() + top);
    }
    for (int64_t i : indices) {
      std::vector<float> unit(count, 0.0f);
      unit[i] = 1.0f;
      verify(unit, t.grad[i], absl::StrCat("[", i, "]"));
    }
    std::vector<float> direction(count);
    double norm = 0, analytic = 0;
    for (float& d : direction) {
      d = normal(rng);
      norm += double{d} * d;
    }
    for (int64_t i = 0; i < count; ++i) {
      direction[i] = static_cast<float>(direction[i] / std::sqrt(norm));
      analytic += double{direction[i]} * t.grad[i];
    }
    verify(direction, analytic, " along a random direction");
  }
  return checks;
}

// --- Hand-built models ----------------------------------------------------------------------

// Conv (group 2, stride 2, pad 1, bias) + fused LeakyRelu, MaxPool, Conv (dilation 2,
// asymmetric pads) + fused Sigmoid, Flatten, Gemm (transB=1).
onnx::ModelProto ConvPoolModel() {
  std::mt19937_64 rng(1);
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 4, 7, 7});
  b.AddInitializer("w1", Random({6, 2, 3, 3}, rng, 0.5f));
  b.AddInitializer("b1", Random({6}, rng, 0.2f));
  b.AddNode("Conv", "conv1", {"x", "w1", "b1"}, {"c1"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1}),
             IntsAttr("strides", {2, 2}), IntAttr("group", 2)});
  b.AddNode("LeakyRelu", "lrelu1", {"c1"}, {"a1"}, {FloatAttr("alpha", 0.1f)});
  b.AddNode("MaxPool", "pool1", {"a1"}, {"p1"},
            {IntsAttr("kernel_shape", {2, 2}), IntsAttr("strides", {1, 1})});
  b.AddInitializer("w2", Random({5, 6, 2, 2}, rng, 0.5f));
  b.AddNode("Conv", "conv2", {"p1", "w2"}, {"c2"},
            {IntsAttr("kernel_shape", {2, 2}), IntsAttr("pads", {1, 0, 0, 1}),
             IntsAttr("dilations", {2, 2})});
  b.AddNode("Sigmoid", "sig2", {"c2"}, {"a2"});
  b.AddNode("Flatten", "flatten", {"a2"}, {"f"}, {IntAttr("axis", 1)});
  b.AddInitializer("fc.w", Random({3, 20}, rng, 0.5f));
  b.AddInitializer("fc.b", Random({3}, rng, 0.2f));
  b.AddNode("Gemm", "fc", {"f", "fc.w", "fc.b"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, 3});
  return b.Build();
}

// Conv + Relu, AveragePool (exclude and include padding), Conv 1x1 + Clip, GlobalAveragePool,
// Flatten, Gemm with alpha/beta and a [1, N] C.
onnx::ModelProto AvgPoolModel() {
  std::mt19937_64 rng(2);
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 3, 6, 6});
  b.AddInitializer("w1", Random({4, 3, 3, 3}, rng, 0.5f));
  b.AddNode("Conv", "conv1", {"x", "w1"}, {"c1"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("Relu", "relu1", {"c1"}, {"a1"});
  b.AddNode("AveragePool", "avg1", {"a1"}, {"p1"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("strides", {2, 2}),
             IntsAttr("pads", {1, 1, 1, 1})});
  b.AddNode("AveragePool", "avg2", {"p1"}, {"p2"},
            {IntsAttr("kernel_shape", {2, 2}), IntsAttr("pads", {1, 1, 0, 0}),
             IntAttr("count_include_pad", 1)});
  b.AddInitializer("w2", Random({8, 4, 1, 1}, rng, 0.7f));
  b.AddInitializer("b2", Random({8}, rng, 0.2f));
  b.AddNode("Conv", "conv2", {"p2", "w2", "b2"}, {"c2"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddFloatInitializer("clip_min", {}, {-0.5f});
  b.AddFloatInitializer("clip_max", {}, {0.8f});
  b.AddNode("Clip", "clip2", {"c2", "clip_min", "clip_max"}, {"a2"});
  b.AddNode("GlobalAveragePool", "gap", {"a2"}, {"g"});
  b.AddNode("Flatten", "flatten", {"g"}, {"f"});
  b.AddInitializer("fc.w", Random({8, 5}, rng, 0.8f));
  b.AddInitializer("fc.c", Random({1, 5}, rng, 0.3f));
  b.AddNode("Gemm", "fc", {"f", "fc.w", "fc.c"}, {"logits"},
            {FloatAttr("alpha", 0.7f), FloatAttr("beta", 1.3f)});
  b.AddOutput("logits", Shape{kBatchDim, 5});
  return b.Build();
}

// Two branches concatenated, BatchNormalization, Relu, LRN, a 1x1 shortcut Add, a broadcasting
// Add of a GlobalAveragePool, Mul by a constant, Add of a trainable constant, Gemm.
onnx::ModelProto BranchModel() {
  std::mt19937_64 rng(3);
  OnnxGraphBuilder b;
  b.AddInput("x", {kBatchDim, 3, 5, 5});
  b.AddInitializer("wa", Random({4, 3, 3, 3}, rng, 0.4f));
  b.AddInitializer("ba", Random({4}, rng, 0.2f));
  b.AddNode("Conv", "conv_a", {"x", "wa", "ba"}, {"ca"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1})});
  b.AddInitializer("wb", Random({2, 3, 1, 1}, rng, 0.6f));
  b.AddNode("Conv", "conv_b", {"x", "wb"}, {"cb"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("Concat", "concat", {"ca", "cb"}, {"cat"}, {IntAttr("axis", 1)});
  b.AddInitializer("bn.scale", Random({6}, rng, 0.5f));
  b.AddInitializer("bn.bias", Random({6}, rng, 0.3f));
  b.AddFloatInitializer("bn.mean", {6}, {0, 0.1f, -0.1f, 0.2f, 0, 0});
  b.AddFloatInitializer("bn.var", {6}, {1, 0.5f, 2, 1, 1.5f, 1});
  b.AddNode("BatchNormalization", "bn", {"cat", "bn.scale", "bn.bias", "bn.mean", "bn.var"},
            {"n"}, {FloatAttr("epsilon", 1e-3f)});
  b.AddNode("Relu", "relu", {"n"}, {"r"});
  b.AddNode("LRN", "lrn", {"r"}, {"l"},
            {IntAttr("size", 3), FloatAttr("alpha", 0.5f), FloatAttr("beta", 0.75f),
             FloatAttr("bias", 1.0f)});
  b.AddInitializer("wc", Random({6, 3, 1, 1}, rng, 0.6f));
  b.AddNode("Conv", "conv_c", {"x", "wc"}, {"cc"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("Add", "add1", {"l", "cc"}, {"s1"});
  b.AddNode("GlobalAveragePool", "gap", {"s1"}, {"g"});
  b.AddNode("Add", "add2", {"g", "s1"}, {"s2"});  // [N,6,1,1] + [N,6,5,5]
  b.AddInitializer("scale", Random({6, 1, 1}, rng, 1.0f));
  b.AddNode("Mul", "mul", {"s2", "scale"}, {"m"});
  b.AddInitializer("shift", Random({6, 1, 1}, rng, 0.3f));
  b.AddNode("Add", "add3", {"shift", "m"}, {"s3"});
  b.AddNode("Flatten", "flatten", {"s3"}, {"f"});
  b.AddInitializer("fc.w", Random({4, 150}, rng, 0.1f));
  b.AddNode("Gemm", "fc", {"f", "fc.w"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, 4});
  return b.Build();
}

// Fixed batch 2: Reshape, MatMul (constant B) + Sigmoid, Unsqueeze/Squeeze, BatchNormalization
// on [N, C], Dropout (ratio input 0.3), Identity, Reshape to [10, 2], Gemm transA=1 with a
// [2, 4] C, final Softmax (trained on its input).
onnx::ModelProto MatMulModel() {
  std::mt19937_64 rng(4);
  OnnxGraphBuilder b;
  b.AddInput("x", {2, 2, 3, 4});
  b.AddInt64Initializer("shape1", {2}, {0, -1});
  b.AddNode("Reshape", "reshape1", {"x", "shape1"}, {"r1"});
  b.AddInitializer("mm.w", Random({24, 10}, rng, 0.3f));
  b.AddNode("MatMul", "mm", {"r1", "mm.w"}, {"mm_out"});
  b.AddNode("Sigmoid", "sig", {"mm_out"}, {"s"});
  b.AddInt64Initializer("axes", {1}, {1});
  b.AddNode("Unsqueeze", "unsq", {"s", "axes"}, {"u"});
  b.AddNode("Squeeze", "sq", {"u", "axes"}, {"q"});
  b.AddInitializer("bn.scale", Random({10}, rng, 0.5f));
  b.AddInitializer("bn.bias", Random({10}, rng, 0.3f));
  b.AddFloatInitializer("bn.mean", {10}, std::vector<float>(10, 0.5f));
  b.AddFloatInitializer("bn.var", {10}, std::vector<float>(10, 0.1f));
  b.AddNode("BatchNormalization", "bn", {"q", "bn.scale", "bn.bias", "bn.mean", "bn.var"},
            {"n"});
  b.AddFloatInitializer("ratio", {}, {0.3f});
  b.AddNode("Dropout", "drop", {"n", "ratio"}, {"d"});
  b.AddNode("Identity", "ident", {"d"}, {"i"});
  b.AddInt64Initializer("shape2", {2}, {10, 2});
  b.AddNode("Reshape", "reshape2", {"i", "shape2"}, {"r2"});
  b.AddInitializer("fc.w", Random({10, 4}, rng, 0.8f));
  b.AddInitializer("fc.c", Random({2, 4}, rng, 0.3f));
  b.AddNode("Gemm", "fc", {"r2", "fc.w", "fc.c"}, {"z"},
            {IntAttr("transA", 1), FloatAttr("alpha", 1.5f), FloatAttr("beta", 0.5f)});
  b.AddNode("Softmax", "softmax", {"z"}, {"probs"}, {IntAttr("axis", 1)});
  b.AddOutput("probs", Shape{2, 4});
  return b.Build();
}

// A MobileNetV3-style inverted residual (opset 14): 1x1 expansion with a fused HardSwish, a
// depthwise 3x3 Conv with a fused ReLU6 (Clip), a squeeze-excitation gate (GlobalAveragePool ->
// Conv + Relu -> Conv -> HardSigmoid -> broadcast Mul), a 1x1 projection, the residual Add, a
// standalone HardSwish, ReduceMean over the spatial axes and a Gemm.
onnx::ModelProto MobileNetBlockModel() {
  std::mt19937_64 rng(5);
  OnnxGraphBuilder b("mobilenet_block", 14);
  b.AddInput("x", {kBatchDim, 3, 6, 6});
  b.AddInitializer("we", Random({8, 3, 1, 1}, rng, 0.6f));
  b.AddInitializer("be", Random({8}, rng, 0.2f));
  b.AddNode("Conv", "expand", {"x", "we", "be"}, {"e"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("HardSwish", "expand_act", {"e"}, {"eh"});
  b.AddInitializer("wd", Random({8, 1, 3, 3}, rng, 0.5f));
  // Biases near 2 keep the ReLU6 inputs off its kink at 0 (central differences across a kink
  // measure neither side's derivative).
  Tensor bd = Random({8}, rng, 0.2f);
  for (float& v : bd.floats()) v += 2.0f;
  b.AddInitializer("bd", std::move(bd));
  b.AddNode("Conv", "depthwise", {"eh", "wd", "bd"}, {"d"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1}),
             IntAttr("group", 8)});
  b.AddFloatInitializer("zero", {}, {0.0f});
  b.AddFloatInitializer("six", {}, {6.0f});
  b.AddNode("Clip", "relu6", {"d", "zero", "six"}, {"dc"});
  b.AddNode("GlobalAveragePool", "se_pool", {"dc"}, {"g"});
  b.AddInitializer("ws1", Random({4, 8, 1, 1}, rng, 0.7f));
  b.AddInitializer("bs1", Random({4}, rng, 0.2f));
  b.AddNode("Conv", "se_reduce", {"g", "ws1", "bs1"}, {"s1"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("Relu", "se_relu", {"s1"}, {"s1r"});
  b.AddInitializer("ws2", Random({8, 4, 1, 1}, rng, 0.9f));
  b.AddInitializer("bs2", Random({8}, rng, 0.5f));
  b.AddNode("Conv", "se_expand", {"s1r", "ws2", "bs2"}, {"s2"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("HardSigmoid", "se_gate", {"s2"}, {"gate"},
            {FloatAttr("alpha", 1.0f / 6), FloatAttr("beta", 0.5f)});
  b.AddNode("Mul", "se_scale", {"dc", "gate"}, {"m"});
  b.AddInitializer("wp", Random({3, 8, 1, 1}, rng, 0.5f));
  b.AddNode("Conv", "project", {"m", "wp"}, {"p"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("Add", "residual", {"p", "x"}, {"r"});
  b.AddNode("HardSwish", "out_act", {"r"}, {"rh"});
  b.AddNode("ReduceMean", "mean", {"rh"}, {"pooled"},
            {IntsAttr("axes", {2, 3}), IntAttr("keepdims", 0)});
  b.AddInitializer("fc.w", Random({4, 3}, rng, 0.8f));
  b.AddInitializer("fc.b", Random({4}, rng, 0.2f));
  b.AddNode("Gemm", "fc", {"pooled", "fc.w", "fc.b"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, 4});
  return b.Build();
}

// A ShuffleNet-style unit and the data-movement and arithmetic operators around it: Conv + Tanh,
// Split, a grouped Conv with SiLU (Sigmoid x Mul, unfused), Concat, the channel shuffle (Reshape
// -> Transpose -> Reshape), reflect, edge and constant Pads, a strided Slice, ReduceMax and
// ReduceMean with keepdims, Sub and Div with broadcast operands on either side, Flatten, Gemm.
onnx::ModelProto ShuffleModel() {
  std::mt19937_64 rng(6);
  OnnxGraphBuilder b("shuffle", 13);
  b.AddInput("x", {kBatchDim, 4, 5, 5});
  b.AddInitializer("w1", Random({8, 4, 1, 1}, rng, 0.6f));
  b.AddInitializer("b1", Random({8}, rng, 0.2f));
  b.AddNode("Conv", "conv1", {"x", "w1", "b1"}, {"c1"}, {IntsAttr("kernel_shape", {1, 1})});
  b.AddNode("Tanh", "tanh1", {"c1"}, {"t"});
  b.AddInt64Initializer("split", {2}, {4, 4});
  b.AddNode("Split", "split", {"t", "split"}, {"s1", "s2"}, {IntAttr("axis", 1)});
  b.AddInitializer("wg", Random({4, 2, 3, 3}, rng, 0.5f));
  b.AddInitializer("bg", Random({4}, rng, 0.2f));
  b.AddNode("Conv", "grouped", {"s2", "wg", "bg"}, {"gc"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1}),
             IntAttr("group", 2)});
  b.AddNode("Sigmoid", "silu_sigmoid", {"gc"}, {"sg"});
  b.AddNode("Mul", "silu_mul", {"gc", "sg"}, {"silu"});
  b.AddNode("Concat", "concat", {"s1", "silu"}, {"cat"}, {IntAttr("axis", 1)});
  b.AddInt64Initializer("shape5", {5}, {0, 2, 4, 5, 5});
  b.AddNode("Reshape", "shuffle_split", {"cat", "shape5"}, {"r5"});
  b.AddNode("Transpose", "shuffle", {"r5"}, {"tr"}, {IntsAttr("perm", {0, 2, 1, 3, 4})});
  b.AddInt64Initializer("shape4", {4}, {0, 8, 5, 5});
  b.AddNode("Reshape", "shuffle_merge", {"tr", "shape4"}, {"sh"});
  b.AddInt64Initializer("pads1", {8}, {0, 0, 1, 0, 0, 0, 0, 1});
  b.AddNode("Pad", "pad_reflect", {"sh", "pads1"}, {"p1"}, {StringAttr("mode", "reflect")});
  b.AddInt64Initializer("pads2", {8}, {0, 0, 0, 1, 0, 0, 1, 0});
  b.AddNode("Pad", "pad_edge", {"p1", "pads2"}, {"p2"}, {StringAttr("mode", "edge")});
  b.AddInt64Initializer("pads3", {8}, {0, 0, 1, 1, 0, 0, 0, 0});
  b.AddFloatInitializer("pad_value", {}, {0.5f});
  b.AddNode("Pad", "pad_constant", {"p2", "pads3", "pad_value"}, {"p3"});
  b.AddInt64Initializer("starts", {3}, {1, 0, 1});
  b.AddInt64Initializer("ends", {3}, {8, 7, 8});
  b.AddInt64Initializer("axes", {3}, {1, 2, 3});
  b.AddInt64Initializer("steps", {3}, {2, 2, 1});
  b.AddNode("Slice", "slice", {"p3", "starts", "ends", "axes", "steps"}, {"sl"});  // [N,4,4,7]
  b.AddNode("ReduceMax", "row_max", {"sl"}, {"mx"}, {IntsAttr("axes", {3})});
  b.AddNode("Sub", "sub_max", {"sl", "mx"}, {"sb"});
  b.AddNode("ReduceMean", "mean", {"sl"}, {"mn"}, {IntsAttr("axes", {2, 3})});
  b.AddNode("Sigmoid", "mean_sigmoid", {"mn"}, {"smn"});
  b.AddFloatInitializer("minus_half", {}, {-0.5f});  // Sub: a fixed constant, not a parameter
  b.AddNode("Sub", "den1", {"smn", "minus_half"}, {"d1"});
  b.AddNode("Div", "div_broadcast_b", {"sb", "d1"}, {"dv"});
  b.AddNode("Sigmoid", "dv_sigmoid", {"dv"}, {"sdv"});
  b.AddNode("Sub", "den2", {"sdv", "minus_half"}, {"d2"});
  b.AddInitializer("k", Random({1, 4, 1, 1}, rng, 1.0f));
  b.AddNode("Div", "div_broadcast_a", {"k", "d2"}, {"q"});
  b.AddInitializer("k2", Random({4, 1, 1}, rng, 1.0f));
  b.AddNode("Sub", "sub_broadcast_a", {"k2", "q"}, {"u"});
  b.AddNode("Flatten", "flatten", {"u"}, {"f"});
  b.AddInitializer("fc.w", Random({3, 112}, rng, 0.2f));
  b.AddNode("Gemm", "fc", {"f", "fc.w"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, 3});
  return b.Build();
}

void ExpectValid(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    FAIL() << "invalid test model: " << e.what();
  }
}

TEST(TrainGradientTest, ConvGroupsStridesDilationMaxPoolGemm) {
  const onnx::ModelProto model = ConvPoolModel();
  ExpectValid(model);
  EXPECT_GT(CheckGradients(model, {3, 4, 7, 7}, 11), 50);
}

TEST(TrainGradientTest, AveragePoolGlobalAveragePoolClipGemmAlphaBeta) {
  const onnx::ModelProto model = AvgPoolModel();
  ExpectValid(model);
  EXPECT_GT(CheckGradients(model, {3, 3, 6, 6}, 12), 50);
}

TEST(TrainGradientTest, ConcatBatchNormLrnAddBroadcastMul) {
  const onnx::ModelProto model = BranchModel();
  ExpectValid(model);
  std::unique_ptr<TrainingNetwork> net = MakeNet(model, 3, {3, 5, 5});
  ASSERT_NE(net, nullptr);
  std::vector<std::string> names;
  for (const Parameter& p : net->parameters()) names.push_back(p.name);
  // Add's constant operand is trained; Mul's is not; BN mean/var are running statistics.
  EXPECT_EQ(names, (std::vector<std::string>{"wa", "ba", "wb", "bn.scale", "bn.bias", "wc",
                                             "shift", "fc.w"}));
  ASSERT_EQ(net->running_stats().size(), 2u);
  EXPECT_TRUE(net->FindParameter("wa")->weight_decay);
  EXPECT_FALSE(net->FindParameter("ba")->weight_decay);
  EXPECT_FALSE(net->FindParameter("bn.scale")->weight_decay);
  EXPECT_GT(CheckGradients(model, {3, 3, 5, 5}, 13), 60);
}

TEST(TrainGradientTest, MatMulReshapeBatchNorm2dDropoutGemmTransA) {
  const onnx::ModelProto model = MatMulModel();
  ExpectValid(model);
  std::unique_ptr<TrainingNetwork> net = MakeNet(model, 2, {2, 3, 4});
  ASSERT_NE(net, nullptr);
  EXPECT_EQ(net->logits_name(), "z");
  EXPECT_EQ(net->num_classes(), 4);
  EXPECT_GT(CheckGradients(model, {2, 2, 3, 4}, 14), 40);
}

TEST(TrainGradientTest, MobileNetBlockDepthwiseSeHardSwishHardSigmoidResidualReduceMean) {
  const onnx::ModelProto model = MobileNetBlockModel();
  ExpectValid(model);
  EXPECT_GT(CheckGradients(model, {3, 3, 6, 6}, 15, {.top_entries = 2}), 60);
}

TEST(TrainGradientTest, ShuffleSplitSiluTransposePadSliceReduceSubDiv) {
  const onnx::ModelProto model = ShuffleModel();
  ExpectValid(model);
  EXPECT_GT(CheckGradients(model, {2, 4, 5, 5}, 16, {.top_entries = 2, .random_biases = true}),
            30);
}

class ZooGradientTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooGradientTest, MatchesFiniteDifferences) {
  zoo::ArchOptions arch;
  arch.height = arch.width = GetParam() == "lenet5" || GetParam() == "alexnet-mini" ? 12 : 8;
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(GetParam(), arch);
  ASSERT_TRUE(model.ok()) << model.status();
  // Big ReLU networks have kinks everywhere and BatchNorm on 3 samples curves strongly: a few
  // random entries, the largest gradients and random directions, within 5%.
  EXPECT_GT(CheckGradients(*model, {3, 1, arch.height, arch.width}, 21,
                           {.random_entries = 2, .top_entries = 2, .rtol = 5e-2,
                            .random_biases = true}),
            40);
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooGradientTest,
                         ::testing::Values("lenet5", "squeezenet-mini", "resnet-mini",
                                           "alexnet-mini"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// --- Forward against the scalar reference ---------------------------------------------------

double MaxRelativeError(const float* got, const Tensor& expected) {
  double worst = 0;
  for (int64_t i = 0; i < expected.num_elements(); ++i) {
    worst = std::max(worst, std::fabs(double{got[i]} - expected.floats()[i]) /
                                (1e-3 + std::fabs(double{expected.floats()[i]})));
  }
  return worst;
}

TEST(TrainForwardTest, EvalModeMatchesScalarReferenceForEveryArchitecture) {
  std::mt19937_64 rng(8);
  const Tensor input = Random({3, 1, 28, 28}, rng);
  for (const std::string& arch : zoo::ArchitectureNames()) {
    SCOPED_TRACE(arch);
    absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture(arch, {});
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<std::map<std::string, Tensor>> expected =
        reference::RunReference(*model, {{"input", input}});
    ASSERT_TRUE(expected.ok()) << expected.status();
    std::unique_ptr<TrainingNetwork> net = MakeNet(*model, 3, {1, 28, 28});
    ASSERT_NE(net, nullptr);
    ASSERT_TRUE(net->Forward(input.floats().data(), {.training = false}).ok());
    EXPECT_LT(MaxRelativeError(net->logits(), expected->at("logits")), 5e-4);
    if (arch == "lenet5") {  // no dropout, no BatchNorm: training mode computes the same
      ASSERT_TRUE(net->Forward(input.floats().data()).ok());
      EXPECT_LT(MaxRelativeError(net->logits(), expected->at("logits")), 5e-4);
    }
  }
}

TEST(TrainForwardTest, HandBuiltModelsMatchScalarReference) {
  std::mt19937_64 rng(9);
  struct Case {
    onnx::ModelProto model;
    Shape shape;
  };
  for (const Case& c : {Case{ConvPoolModel(), {2, 4, 7, 7}}, Case{AvgPoolModel(), {2, 3, 6, 6}},
                        Case{BranchModel(), {2, 3, 5, 5}}}) {
    const Tensor input = Random(c.shape, rng);
    absl::StatusOr<std::map<std::string, Tensor>> expected =
        reference::RunReference(c.model, {{"x", input}});
    ASSERT_TRUE(expected.ok()) << expected.status();
    std::unique_ptr<TrainingNetwork> net =
        MakeNet(c.model, c.shape[0], Shape(c.shape.begin() + 1, c.shape.end()));
    ASSERT_NE(net, nullptr);
    ASSERT_TRUE(net->Forward(input.floats().data(), {.training = false}).ok());
    EXPECT_LT(MaxRelativeError(net->logits(), expected->at("logits")), 5e-4);
  }
}

// The training network's eval-mode forward on the models with operators the scalar reference does
// not run, against the inference network (whose operators pass ONNX's backend node tests).
TEST(TrainForwardTest, NewOperatorModelsMatchTheInferenceNetwork) {
  std::mt19937_64 rng(10);
  struct Case {
    onnx::ModelProto model;
    Shape shape;
  };
  for (const Case& c :
       {Case{MobileNetBlockModel(), {3, 3, 6, 6}}, Case{ShuffleModel(), {3, 4, 5, 5}}}) {
    SCOPED_TRACE(c.model.graph().name());
    const Tensor input = Random(c.shape, rng);
    absl::StatusOr<Graph> graph = ImportOnnxModel(c.model);
    ASSERT_TRUE(graph.ok()) << graph.status();
    absl::StatusOr<std::unique_ptr<Network>> inference =
        Network::Create(*graph, {.batch = c.shape[0], .threads = 1});
    ASSERT_TRUE(inference.ok()) << inference.status();
    std::map<std::string, Tensor> expected;
    ASSERT_TRUE((*inference)->Run({{"x", &input}}, &expected).ok());
    std::unique_ptr<TrainingNetwork> net =
        MakeNet(c.model, c.shape[0], Shape(c.shape.begin() + 1, c.shape.end()));
    ASSERT_NE(net, nullptr);
    ASSERT_TRUE(net->Forward(input.floats().data(), {.training = false}).ok());
    EXPECT_LT(MaxRelativeError(net->logits(), expected.at("logits")), 5e-4);
  }
}

TEST(TrainForwardTest, BatchNormUpdatesRunningStatisticsLikePyTorch) {
  const onnx::ModelProto model = BranchModel();
  std::unique_ptr<TrainingNetwork> net = MakeNet(model, 4, {3, 5, 5});
  ASSERT_NE(net, nullptr);
  const std::vector<float> mean0 = net->running_stats()[0].value.floats();
  const std::vector<float> var0 = net->running_stats()[1].value.floats();
  std::mt19937_64 rng(3);
  const std::vector<float> x = Random({4, 3, 5, 5}, rng).floats();
  // The batch statistics of the BN input (the concatenation of conv_a and conv_b), computed
  // independently from the reference's intermediate values.
  onnx::ModelProto probe = model;
  probe.mutable_graph()->add_output()->set_name("cat");
  absl::StatusOr<std::map<std::string, Tensor>> ref =
      reference::RunReference(probe, {{"x", Tensor::Float({4, 3, 5, 5}, x)}});
  ASSERT_TRUE(ref.ok()) << ref.status();
  const Tensor& cat = ref->at("cat");
  const std::vector<int> labels = {0, 1, 2, 3};
  ASSERT_TRUE(net->ForwardBackward(x.data(), labels.data()).ok());
  const std::vector<float>& mean1 = net->running_stats()[0].value.floats();
  const std::vector<float>& var1 = net->running_stats()[1].value.floats();
  const int64_t per = 4 * 25;
  for (int c = 0; c < 6; ++c) {
    double sum = 0, sq = 0;
    for (int n = 0; n < 4; ++n) {
      for (int i = 0; i < 25; ++i) sum += cat.floats()[(n * 6 + c) * 25 + i];
    }
    const double mean = sum / per;
    for (int n = 0; n < 4; ++n) {
      for (int i = 0; i < 25; ++i) {
        const double d = cat.floats()[(n * 6 + c) * 25 + i] - mean;
        sq += d * d;
      }
    }
    EXPECT_NEAR(mean1[c], 0.9 * mean0[c] + 0.1 * mean, 1e-4) << c;
    EXPECT_NEAR(var1[c], 0.9 * var0[c] + 0.1 * sq / (per - 1), 1e-4) << c;
  }
  // update_running_stats = false leaves them alone.
  const std::vector<float> before = net->running_stats()[0].value.floats();
  ASSERT_TRUE(net->ForwardBackward(x.data(), labels.data(), {.update_running_stats = false}).ok());
  EXPECT_EQ(net->running_stats()[0].value.floats(), before);
}

// --- Training on Fashion-MNIST ---------------------------------------------------------------

const Dataset& TrainSplit() {
  static const Dataset* data = [] {
    absl::StatusOr<Dataset> d = LoadDataset("idx:" + kData + "/train",
                                            {.mean = {0.2860f}, .std = {0.3530f}, .limit = 5000});
    EXPECT_TRUE(d.ok()) << d.status();
    return new Dataset(d.ok() ? *std::move(d) : Dataset());
  }();
  return *data;
}

const Dataset& TestSplit() {
  static const Dataset* data = [] {
    absl::StatusOr<Dataset> d =
        LoadDataset("idx:" + kData + "/t10k", {.mean = {0.2860f}, .std = {0.3530f}, .limit = 1000});
    EXPECT_TRUE(d.ok()) << d.status();
    return new Dataset(d.ok() ? *std::move(d) : Dataset());
  }();
  return *data;
}

TEST(TrainTest, LeNet5LearnsFashionMnistAndWritesBackAValidModel) {
  absl::StatusOr<onnx::ModelProto> init = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(init.ok()) << init.status();
  TrainOptions options;
  options.epochs = 2;
  options.batch = 64;
  options.learning_rate = 0.01;
  options.threads = 1;
  options.validation = &TestSplit();
  std::vector<EpochReport> reports;
  options.on_epoch = [&](const EpochReport& r) { reports.push_back(r); };
  absl::StatusOr<onnx::ModelProto> trained = Train(*init, TrainSplit(), options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].epoch, 1);
  EXPECT_EQ(reports[1].steps, 2 * (5000 / 64));  // the last partial batch is dropped
  EXPECT_LT(reports[1].mean_loss, reports[0].mean_loss);
  EXPECT_LT(reports[1].mean_loss, 0.8);
  EXPECT_GT(reports[1].train_top1, 0.7);
  EXPECT_GT(reports[1].images_per_second, 0);
  EXPECT_GT(reports[1].validation_top1, 0.7);
  for (const EpochReport& r : reports) {
    std::printf("epoch %d: loss %.4f train top1 %.4f test top1 %.4f (%.0f images/s)\n", r.epoch,
                r.mean_loss, r.train_top1, r.validation_top1, r.images_per_second);
  }

  try {
    onnx::checker::check_model(*trained);
  } catch (const std::exception& e) {
    FAIL() << "trained model fails the checker: " << e.what();
  }
  absl::StatusOr<Graph> graph = ImportOnnxModel(*trained);
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<EvalResult> eval = Evaluate(*graph, TestSplit(), {.batch = 250, .threads = 1});
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_NEAR(eval->top1, reports[1].validation_top1, 0.0015);
  EXPECT_NEAR(eval->loss, reports[1].validation_loss, 1e-3);
  // Untrained: about chance.
  absl::StatusOr<Graph> init_graph = ImportOnnxModel(*init);
  ASSERT_TRUE(init_graph.ok());
  absl::StatusOr<EvalResult> before = Evaluate(*init_graph, TestSplit(), {.threads = 1});
  ASSERT_TRUE(before.ok());
  EXPECT_LT(before->top1, 0.4);
}

// Float initializer values by name.
std::map<std::string, std::vector<float>> Initializers(const onnx::ModelProto& model) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& init : model.graph().initializer()) {
    absl::StatusOr<Tensor> t = TensorFromProto(init);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok() && t->dtype() == DataType::kFloat) out[init.name()] = t->floats();
  }
  return out;
}

TEST(TrainTest, SameSeedGivesIdenticalWeightsAndBatchNormStatistics) {
  absl::StatusOr<onnx::ModelProto> init = zoo::BuildArchitecture("resnet-mini", {});
  ASSERT_TRUE(init.ok()) << init.status();
  Dataset small = TrainSplit();
  small.images.floats().resize(512 * 784);
  small.images.Reshape({512, 1, 28, 28});
  small.labels.resize(512);
  TrainOptions options;
  options.batch = 32;
  options.max_steps = 6;
  options.epochs = 5;
  options.threads = 1;
  options.seed = 3;
  int reports = 0;
  options.on_epoch = [&](const EpochReport& r) {
    ++reports;
    EXPECT_EQ(r.steps, 6);
  };
  absl::StatusOr<onnx::ModelProto> a = Train(*init, small, options);
  absl::StatusOr<onnx::ModelProto> b = Train(*init, small, options);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(reports, 2);  // max_steps stops inside the first epoch
  const auto wa = Initializers(*a), wb = Initializers(*b), w0 = Initializers(*init);
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa.at("conv1.weight"), w0.at("conv1.weight"));
  EXPECT_NE(wa.at("bn1.mean"), w0.at("bn1.mean"));  // running statistics were updated
  options.seed = 4;
  absl::StatusOr<onnx::ModelProto> c = Train(*init, small, options);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(Initializers(*c).at("conv1.weight"), wa.at("conv1.weight"));
}

// --- Fake-quantization hooks -----------------------------------------------------------------

TEST(TrainQuantTest, HooksSeeEveryLayerOncePerForwardWithItsSize) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  std::map<std::string, std::vector<int64_t>> seen;
  FakeQuantHooks hooks;
  hooks.weights = [&](const std::string& l, float*, int64_t n) { seen["w:" + l].push_back(n); };
  hooks.inputs = [&](const std::string& l, float*, int64_t n) { seen["i:" + l].push_back(n); };
  hooks.outputs = [&](const std::string& l, float* data, int64_t n) {
    seen["o:" + l].push_back(n);
    if (l == "conv1") {  // after the fused Relu: no negative values
      EXPECT_GE(*std::min_element(data, data + n), 0.0f);
    }
  };
  std::unique_ptr<TrainingNetwork> net = MakeNet(*model, 4, {1, 28, 28}, false, hooks);
  ASSERT_NE(net, nullptr);
  std::mt19937_64 rng(1);
  const std::vector<float> x = Random({4, 1, 28, 28}, rng).floats();
  const std::vector<int> labels = {1, 2, 3, 4};
  ASSERT_TRUE(net->Forward(x.data()).ok());
  ASSERT_TRUE(net->ForwardBackward(x.data(), labels.data()).ok());
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"w:conv1", {150, 150}},          {"i:conv1", {4 * 784, 4 * 784}},
      {"o:conv1", {4 * 6 * 784, 4 * 6 * 784}},
      {"w:conv2", {2400, 2400}},        {"i:conv2", {4 * 6 * 196, 4 * 6 * 196}},
      {"o:conv2", {4 * 16 * 100, 4 * 16 * 100}},
      {"w:fc1", {48000, 48000}},        {"i:fc1", {1600, 1600}},
      {"o:fc1", {480, 480}},
      {"w:fc2", {10080, 10080}},        {"i:fc2", {480, 480}},
      {"o:fc2", {336, 336}},
      {"w:fc3", {840, 840}},            {"i:fc3", {336, 336}},
      {"o:fc3", {40, 40}}};
  EXPECT_EQ(seen, expected);
}

TEST(TrainQuantTest, CoarseWeightGridChangesForwardAndStillTrainsThroughSte) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {});
  ASSERT_TRUE(model.ok());
  const float step = 1.0f / 16;
  FakeQuantHooks hooks;
  hooks.weights = [step](const std::string&, float* data, int64_t n) {
    for (int64_t i = 0; i < n; ++i) data[i] = std::nearbyint(data[i] / step) * step;
  };
  std::unique_ptr<TrainingNetwork> fp = MakeNet(*model, 8, {1, 28, 28});
  std::unique_ptr<TrainingNetwork> q = MakeNet(*model, 8, {1, 28, 28}, false, hooks);
  ASSERT_NE(fp, nullptr);
  ASSERT_NE(q, nullptr);
  const std::vector<float> x(TrainSplit().images.floats().begin(),
                             TrainSplit().images.floats().begin() + 8 * 784);
  ASSERT_TRUE(fp->Forward(x.data()).ok());
  ASSERT_TRUE(q->Forward(x.data()).ok());
  double diff = 0;
  for (int i = 0; i < 80; ++i) {
    diff = std::max(diff, double{std::fabs(fp->logits()[i] - q->logits()[i])});
  }
  EXPECT_GT(diff, 1e-2);

  Dataset small = TrainSplit();
  small.images.floats().resize(2000 * 784);
  small.images.Reshape({2000, 1, 28, 28});
  small.labels.resize(2000);
  TrainOptions options;
  options.epochs = 2;
  options.batch = 32;
  options.learning_rate = 0.02;
  options.threads = 1;
  options.quant = hooks;
  std::vector<EpochReport> reports;
  options.on_epoch = [&](const EpochReport& r) { reports.push_back(r); };
  absl::StatusOr<onnx::ModelProto> trained = Train(*model, small, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_LT(reports[1].mean_loss, reports[0].mean_loss);
  EXPECT_LT(reports[1].mean_loss, 1.2);
  // The shadow weights are fp32: they left the grid.
  int off_grid = 0;
  for (float w : Initializers(*trained).at("fc1.weight")) {
    off_grid += std::fabs(w / step - std::nearbyint(w / step)) > 1e-3;
  }
  EXPECT_GT(off_grid, 1000);
}

// --- BatchNormalization folded into Convs with quantized weights -----------------------------

// Conv (bias) -> BN -> Relu, Conv (no bias, stride 2) -> BN, a Conv whose output is read by a BN
// and by the Add after it (not folded), GlobalAveragePool, Gemm. The BN scales spread over a
// factor of 20 and the variances over 50, so folded and unfolded weights have very different
// ranges.
onnx::ModelProto ConvBnModel() {
  std::mt19937_64 rng(31);
  OnnxGraphBuilder b("conv_bn", 13);
  b.AddInput("x", {kBatchDim, 3, 6, 6});
  auto bn = [&](const std::string& name, const std::string& x, int64_t c, const std::string& y) {
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<float> scale(c), var(c);
    for (int64_t i = 0; i < c; ++i) {
      scale[i] = (i % 2 ? -1.0f : 1.0f) * 0.15f * std::pow(20.0f, uniform(rng));
      var[i] = 0.02f * std::pow(50.0f, uniform(rng));
    }
    b.AddFloatInitializer(name + ".scale", {c}, scale);
    b.AddInitializer(name + ".bias", Random({c}, rng, 0.3f));
    b.AddInitializer(name + ".mean", Random({c}, rng, 0.2f));
    b.AddFloatInitializer(name + ".var", {c}, var);
    b.AddNode("BatchNormalization", name,
              {x, name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {y},
              {FloatAttr("epsilon", 1e-3f)});
  };
  b.AddInitializer("w1", Random({4, 3, 3, 3}, rng, 0.3f));
  b.AddInitializer("b1", Random({4}, rng, 0.2f));
  b.AddNode("Conv", "conv1", {"x", "w1", "b1"}, {"c1"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1})});
  bn("bn1", "c1", 4, "n1");
  b.AddNode("Relu", "relu1", {"n1"}, {"a1"});
  b.AddInitializer("w2", Random({6, 4, 3, 3}, rng, 0.3f));
  b.AddNode("Conv", "conv2", {"a1", "w2"}, {"c2"},
            {IntsAttr("kernel_shape", {3, 3}), IntsAttr("pads", {1, 1, 1, 1}),
             IntsAttr("strides", {2, 2})});
  bn("bn2", "c2", 6, "n2");
  b.AddInitializer("w3", Random({6, 6, 1, 1}, rng, 0.4f));
  b.AddNode("Conv", "conv3", {"n2", "w3"}, {"c3"}, {IntsAttr("kernel_shape", {1, 1})});
  bn("bn3", "c3", 6, "n3");
  b.AddNode("Add", "residual", {"c3", "n3"}, {"s"});
  b.AddNode("GlobalAveragePool", "gap", {"s"}, {"g"});
  b.AddNode("Flatten", "flatten", {"g"}, {"f"});
  b.AddInitializer("fc.w", Random({5, 6}, rng, 0.5f));
  b.AddInitializer("fc.b", Random({5}, rng, 0.2f));
  b.AddNode("Gemm", "fc", {"f", "fc.w", "fc.b"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, 5});
  return b.Build();
}

// Largest |a - b| over the largest |b|.
double RelativeMaxDifference(const float* a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < b.num_elements(); ++i) {
    diff = std::max(diff, std::fabs(double{a[i]} - b.floats()[i]));
    scale = std::max(scale, std::fabs(double{b.floats()[i]}));
  }
  return diff / scale;
}

std::map<std::string, std::vector<float>> RunningStats(const TrainingNetwork& net) {
  std::map<std::string, std::vector<float>> stats;
  for (const RunningStat& s : net.running_stats()) stats[s.name] = s.value.floats();
  return stats;
}

TEST(TrainFoldTest, FixedPointWeightsTrainOnTheFoldedWeightsTheEmulationQuantizes) {
  const onnx::ModelProto model = ConvBnModel();
  ExpectValid(model);
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  quant::QuantPlan plan;
  for (const char* layer : {"conv1", "conv2", "conv3", "fc"}) {
    plan[layer].weights = testing::Format("fixed:4");
  }
  std::mt19937_64 rng(32);
  const Tensor input = Random({4, 3, 6, 6}, rng);
  const Tensor emulated = testing::RunEmulation(*graph, input, &plan);
  // The 4-bit weights matter: the emulation moves the logits far from fp32.
  const Tensor fp32 = testing::RunEmulation(*graph, input, nullptr);
  EXPECT_GT(RelativeMaxDifference(emulated.floats().data(), fp32), 0.05);

  const FakeQuantHooks hooks = HooksFromPlan(plan, *graph);
  std::unique_ptr<TrainingNetwork> net = MakeNet(model, 4, {3, 6, 6}, false, hooks);
  ASSERT_NE(net, nullptr);
  ASSERT_TRUE(net->Forward(input.floats().data(), {.training = false}).ok());
  EXPECT_LT(RelativeMaxDifference(net->logits(), emulated), 1e-5);
  // Frozen BatchNormalization: training leaves the statistics alone; bn3 (its input is read by
  // the Add as well) is not folded and uses batch statistics, updating its own.
  const std::map<std::string, std::vector<float>> stats0 = RunningStats(*net);
  const std::vector<int> labels = {0, 1, 2, 3};
  ASSERT_TRUE(net->ForwardBackward(input.floats().data(), labels.data()).ok());
  const std::map<std::string, std::vector<float>> stats1 = RunningStats(*net);
  EXPECT_EQ(stats1.at("bn1.mean"), stats0.at("bn1.mean"));
  EXPECT_EQ(stats1.at("bn1.var"), stats0.at("bn1.var"));
  EXPECT_EQ(stats1.at("bn2.var"), stats0.at("bn2.var"));
  EXPECT_NE(stats1.at("bn3.mean"), stats0.at("bn3.mean"));
  // Gamma and beta stay parameters, next to their Conv's.
  std::vector<std::string> names;
  for (const Parameter& p : net->parameters()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"w1", "b1", "bn1.scale", "bn1.bias", "w2",
                                             "bn2.scale", "bn2.bias", "w3", "bn3.scale",
                                             "bn3.bias", "fc.w", "fc.b"}));
}

TEST(TrainFoldTest, OnlyConvsWithQuantizedWeightsFoldTheirBatchNorm) {
  const onnx::ModelProto model = ConvBnModel();
  absl::StatusOr<Graph> graph = ImportOnnxModel(model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  quant::QuantPlan plan;
  plan["conv2"].weights = testing::Format("fixed:4");
  // Activations only: conv1 stays unfolded.
  plan["conv1"].inputs.format = testing::Format("fixed:8");
  plan["conv1"].inputs.fractional_bits = 5;
  std::mt19937_64 rng(33);
  const Tensor input = Random({4, 3, 6, 6}, rng);
  std::unique_ptr<TrainingNetwork> net =
      MakeNet(model, 4, {3, 6, 6}, false, HooksFromPlan(plan, *graph));
  ASSERT_NE(net, nullptr);
  ASSERT_TRUE(net->Forward(input.floats().data(), {.training = false}).ok());
  const Tensor emulated = testing::RunEmulation(*graph, input, &plan);
  EXPECT_LT(RelativeMaxDifference(net->logits(), emulated), 1e-5);
  const std::map<std::string, std::vector<float>> stats0 = RunningStats(*net);
  const std::vector<int> labels = {4, 3, 2, 1};
  ASSERT_TRUE(net->ForwardBackward(input.floats().data(), labels.data()).ok());
  const std::map<std::string, std::vector<float>> stats1 = RunningStats(*net);
  EXPECT_NE(stats1.at("bn1.mean"), stats0.at("bn1.mean"));  // batch statistics, as before
  EXPECT_EQ(stats1.at("bn2.mean"), stats0.at("bn2.mean"));  // folded, frozen
  EXPECT_NE(stats1.at("bn3.mean"), stats0.at("bn3.mean"));  // not foldable
}

// With identity weight quantizers (what the straight-through estimator differentiates) the folded
// path is the Conv -> BatchNormalization(running statistics) function: central differences of the
// loss check d/dW, d/dB, d/dgamma, d/dbeta and d/dinput through the fold.
TEST(TrainFoldTest, FoldedGradientsMatchFiniteDifferences) {
  const onnx::ModelProto model = ConvBnModel();
  FakeQuantHooks identity;
  identity.weights = [](const std::string&, float*, int64_t) {};
  identity.quantizes_weights = [](const std::string& layer) { return layer != "conv3"; };
  EXPECT_GT(CheckGradients(model, {3, 3, 6, 6}, 34, {.top_entries = 2, .hooks = identity}), 80);
  // The reference for the fold: the unfolded network in eval mode computes the same function.
  std::mt19937_64 rng(35);
  const Tensor input = Random({3, 3, 6, 6}, rng);
  std::unique_ptr<TrainingNetwork> folded = MakeNet(model, 3, {3, 6, 6}, false, identity);
  std::unique_ptr<TrainingNetwork> plain = MakeNet(model, 3, {3, 6, 6});
  ASSERT_TRUE(folded != nullptr && plain != nullptr);
  ASSERT_TRUE(folded->Forward(input.floats().data(), {.training = false}).ok());
  ASSERT_TRUE(plain->Forward(input.floats().data(), {.training = false}).ok());
  const Tensor expected = Tensor::Float({3, 5}, std::vector<float>(plain->logits(),
                                                                   plain->logits() + 15));
  EXPECT_LT(RelativeMaxDifference(folded->logits(), expected), 1e-5);
  // The fold was taken: a training step leaves bn1's and bn2's statistics alone.
  const std::map<std::string, std::vector<float>> stats0 = RunningStats(*folded);
  const std::vector<int> labels = {0, 2, 4};
  ASSERT_TRUE(folded->ForwardBackward(input.floats().data(), labels.data()).ok());
  const std::map<std::string, std::vector<float>> stats1 = RunningStats(*folded);
  EXPECT_EQ(stats1.at("bn1.mean"), stats0.at("bn1.mean"));
  EXPECT_EQ(stats1.at("bn2.mean"), stats0.at("bn2.mean"));
  EXPECT_NE(stats1.at("bn3.mean"), stats0.at("bn3.mean"));
}

TEST(TrainFoldTest, ResNetMiniFoldedGradientsMatchFiniteDifferences) {
  zoo::ArchOptions arch;
  arch.height = arch.width = 8;
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("resnet-mini", arch);
  ASSERT_TRUE(model.ok()) << model.status();
  FakeQuantHooks identity;
  identity.weights = [](const std::string&, float*, int64_t) {};
  EXPECT_GT(CheckGradients(*model, {3, 1, 8, 8}, 36,
                           {.random_entries = 2, .top_entries = 2, .rtol = 5e-2,
                            .random_biases = true, .hooks = identity}),
            40);
  // Every BatchNormalization of resnet-mini follows a Conv: all were folded, none updates.
  std::unique_ptr<TrainingNetwork> net = MakeNet(*model, 3, {1, 8, 8}, false, identity);
  ASSERT_NE(net, nullptr);
  const std::map<std::string, std::vector<float>> stats0 = RunningStats(*net);
  EXPECT_GE(stats0.size(), 10u);
  std::mt19937_64 rng(37);
  const std::vector<float> x = Random({3, 1, 8, 8}, rng).floats();
  const std::vector<int> labels = {1, 5, 9};
  ASSERT_TRUE(net->ForwardBackward(x.data(), labels.data()).ok());
  EXPECT_EQ(RunningStats(*net), stats0);
}

// --- Errors ----------------------------------------------------------------------------------

TEST(TrainErrorTest, UntrainableOperatorIsNamed) {
  std::mt19937_64 rng(1);
  {
    OnnxGraphBuilder b;
    b.AddInput("x", {kBatchDim, 6});
    b.AddNode("Softmax", "middle_softmax", {"x"}, {"s"}, {IntAttr("axis", 1)});
    b.AddInitializer("w", Random({6, 3}, rng));
    b.AddNode("Gemm", "fc", {"s", "w"}, {"logits"});
    b.AddOutput("logits", Shape{kBatchDim, 3});
    absl::StatusOr<std::unique_ptr<TrainingNetwork>> net =
        TrainingNetwork::Create(b.Build(), {.batch = 2});
    ASSERT_FALSE(net.ok());
    EXPECT_NE(net.status().message().find("middle_softmax"), std::string::npos) << net.status();
    EXPECT_NE(net.status().message().find("Softmax"), std::string::npos) << net.status();
  }
  {
    OnnxGraphBuilder b;
    b.AddInput("x", {2, 4});
    b.AddInitializer("w", Random({3, 2}, rng));
    b.AddNode("MatMul", "left_matmul", {"w", "x"}, {"y"});  // constant A, runtime B
    b.AddNode("Flatten", "flatten", {"y"}, {"logits"});
    b.AddOutput("logits", Shape{3, 4});
    Dataset data;
    data.images = Tensor::Float({2, 4});
    data.labels = {0, 1};
    data.num_classes = 2;
    absl::StatusOr<onnx::ModelProto> trained = Train(b.Build(), data, {});
    ASSERT_FALSE(trained.ok());
    EXPECT_NE(trained.status().message().find("left_matmul"), std::string::npos)
        << trained.status();
    EXPECT_NE(trained.status().message().find("MatMul"), std::string::npos) << trained.status();
  }
}

TEST(TrainErrorTest, LabelsBeyondTheLogitsAreRejected) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {.num_classes = 3});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<onnx::ModelProto> trained = Train(*model, TestSplit(), {});
  ASSERT_FALSE(trained.ok());
  EXPECT_NE(trained.status().message().find("classes"), std::string::npos) << trained.status();
}

}  // namespace
}  // namespace bitsweep::engine
