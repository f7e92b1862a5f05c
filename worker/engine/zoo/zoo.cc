#include "worker/engine/zoo/zoo.h"

#include <cmath>
#include <exception>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnx/checker.h"
#include "worker/engine/tensor.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine::zoo {
namespace {

// A value in the graph under construction: its name and its shape without the batch dimension
// ([C, H, W] for feature maps, [F] after Flatten/Gemm).
struct Value {
  std::string name;
  Shape shape;
};

// Builds a CNN layer by layer, tracking shapes, drawing weights from one seeded generator. The
// first shape error is kept (sticky) and reported by Finish().
class Net {
 public:
  explicit Net(const ArchOptions& options) : rng_(options.seed) {
    if (options.channels < 1 || options.height < 1 || options.width < 1 ||
        options.num_classes < 1) {
      Fail(absl::StrCat("channels, height, width and num_classes must be positive (got ",
                        options.channels, ", ", options.height, ", ", options.width, ", ",
                        options.num_classes, ")"));
    }
    builder_.AddInput("input", {kBatchDim, options.channels, options.height, options.width});
  }

  Value Input(const ArchOptions& options) const {
    return {"input", {options.channels, options.height, options.width}};
  }

  Value Conv(const Value& x, const std::string& name, int64_t out_channels, int64_t kernel,
             int64_t stride, int64_t pad, bool bias) {
    if (!RequireRank(x, 3, name)) return x;
    const int64_t in_channels = x.shape[0];
    const int64_t h = OutSize(x.shape[1], kernel, stride, pad, name);
    const int64_t w = OutSize(x.shape[2], kernel, stride, pad, name);
    const std::string weight = name + ".weight";
    builder_.AddInitializer(weight, HeNormal({out_channels, in_channels, kernel, kernel},
                                             in_channels * kernel * kernel));
    std::vector<std::string> inputs = {x.name, weight};
    if (bias) {
      builder_.AddInitializer(name + ".bias", Tensor::Float({out_channels}));
      inputs.push_back(name + ".bias");
    }
    builder_.AddNode("Conv", name, inputs, {name},
                     {IntsAttr("kernel_shape", {kernel, kernel}),
                      IntsAttr("pads", {pad, pad, pad, pad}), IntsAttr("strides", {stride, stride}),
                      IntsAttr("dilations", {1, 1}), IntAttr("group", 1)});
    return {name, {out_channels, h, w}};
  }

  Value BatchNorm(const Value& x, const std::string& name) {
    if (!RequireRank(x, 3, name)) return x;
    const int64_t c = x.shape[0];
    std::uniform_real_distribution<float> around_one(0.5f, 1.5f);
    std::uniform_real_distribution<float> around_zero(-0.1f, 0.1f);
    std::vector<float> scale(c), bias(c), mean(c), var(c);
    for (int64_t i = 0; i < c; ++i) scale[i] = around_one(rng_);
    for (int64_t i = 0; i < c; ++i) bias[i] = around_zero(rng_);
    for (int64_t i = 0; i < c; ++i) mean[i] = around_zero(rng_);
    for (int64_t i = 0; i < c; ++i) var[i] = around_one(rng_);
    builder_.AddFloatInitializer(name + ".scale", {c}, std::move(scale));
    builder_.AddFloatInitializer(name + ".bias", {c}, std::move(bias));
    builder_.AddFloatInitializer(name + ".mean", {c}, std::move(mean));
    builder_.AddFloatInitializer(name + ".var", {c}, std::move(var));
    builder_.AddNode("BatchNormalization", name,
                     {x.name, name + ".scale", name + ".bias", name + ".mean", name + ".var"},
                     {name}, {FloatAttr("epsilon", 1e-5f)});
    return {name, x.shape};
  }

  Value Relu(const Value& x, const std::string& name) {
    builder_.AddNode("Relu", name, {x.name}, {name});
    return {name, x.shape};
  }

  Value Dropout(const Value& x, const std::string& name) {
    builder_.AddNode("Dropout", name, {x.name}, {name});
    return {name, x.shape};
  }

  Value Lrn(const Value& x, const std::string& name) {
    builder_.AddNode("LRN", name, {x.name}, {name},
                     {IntAttr("size", 5), FloatAttr("alpha", 1e-4f), FloatAttr("beta", 0.75f),
                      FloatAttr("bias", 1.0f)});
    return {name, x.shape};
  }

  Value MaxPool(const Value& x, const std::string& name, int64_t kernel, int64_t stride) {
    if (!RequireRank(x, 3, name)) return x;
    const int64_t h = OutSize(x.shape[1], kernel, stride, 0, name);
    const int64_t w = OutSize(x.shape[2], kernel, stride, 0, name);
    builder_.AddNode("MaxPool", name, {x.name}, {name},
                     {IntsAttr("kernel_shape", {kernel, kernel}),
                      IntsAttr("strides", {stride, stride}), IntsAttr("pads", {0, 0, 0, 0})});
    return {name, {x.shape[0], h, w}};
  }

  Value GlobalAveragePool(const Value& x, const std::string& name) {
    if (!RequireRank(x, 3, name)) return x;
    builder_.AddNode("GlobalAveragePool", name, {x.name}, {name});
    return {name, {x.shape[0], 1, 1}};
  }

  Value Concat(const std::vector<Value>& xs, const std::string& name) {
    std::vector<std::string> inputs;
    Shape shape = xs.front().shape;
    shape[0] = 0;
    for (const Value& x : xs) {
      inputs.push_back(x.name);
      shape[0] += x.shape[0];
    }
    builder_.AddNode("Concat", name, inputs, {name}, {IntAttr("axis", 1)});
    return {name, shape};
  }

  Value Add(const Value& a, const Value& b, const std::string& name) {
    if (a.shape != b.shape) {
      Fail(absl::StrCat(name, ": operand shapes ", ShapeToString(a.shape), " and ",
                        ShapeToString(b.shape), " differ"));
    }
    builder_.AddNode("Add", name, {a.name, b.name}, {name});
    return {name, a.shape};
  }

  Value Flatten(const Value& x, const std::string& name) {
    builder_.AddNode("Flatten", name, {x.name}, {name}, {IntAttr("axis", 1)});
    return {name, {NumElements(x.shape)}};
  }

  // Fully connected: Gemm with weights [out, in] (transB=1) and a bias.
  Value Gemm(const Value& x, const std::string& name, int64_t out_features) {
    if (!RequireRank(x, 1, name)) return x;
    const int64_t in_features = x.shape[0];
    builder_.AddInitializer(name + ".weight", HeNormal({out_features, in_features}, in_features));
    builder_.AddInitializer(name + ".bias", Tensor::Float({out_features}));
    builder_.AddNode("Gemm", name, {x.name, name + ".weight", name + ".bias"}, {name},
                     {FloatAttr("alpha", 1.0f), FloatAttr("beta", 1.0f), IntAttr("transA", 0),
                      IntAttr("transB", 1)});
    return {name, {out_features}};
  }

  // Renames the last node's output to "logits", declares it as the graph output and checks the
  // model.
  absl::StatusOr<onnx::ModelProto> Finish(const Value& last, int64_t num_classes) {
    if (!status_.ok()) return status_;
    if (last.shape != Shape{num_classes}) {
      return absl::InternalError(absl::StrCat("zoo: final value has shape ",
                                              ShapeToString(last.shape), ", expected [",
                                              num_classes, "]"));
    }
    onnx::GraphProto& graph = builder_.graph();
    onnx::NodeProto* final_node = graph.mutable_node(graph.node_size() - 1);
    final_node->set_output(0, "logits");
    builder_.AddOutput("logits", Shape{kBatchDim, num_classes});
    onnx::ModelProto model = builder_.Build();
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("zoo: built model fails the ONNX checker: ", e.what()));
    }
    return model;
  }

 private:
  void Fail(const std::string& message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(message);
  }

  bool RequireRank(const Value& x, size_t rank, const std::string& name) {
    if (x.shape.size() == rank) return true;
    Fail(absl::StrCat(name, ": expected a rank-", rank, " input (without batch), got ",
                      ShapeToString(x.shape)));
    return false;
  }

  int64_t OutSize(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                  const std::string& name) {
    const int64_t out = (in + 2 * pad - kernel) / stride + 1;
    if (in + 2 * pad < kernel || out < 1) {
      Fail(absl::StrCat(name, ": spatial size ", in, " is too small for kernel ", kernel,
                        " (the input is too small for this architecture)"));
      return 1;
    }
    return out;
  }

  // He-normal: N(0, sqrt(2 / fan_in)).
  Tensor HeNormal(Shape shape, int64_t fan_in) {
    std::normal_distribution<float> dist(0.0f, std::sqrt(2.0f / static_cast<float>(fan_in)));
    Tensor t = Tensor::Float(std::move(shape));
    for (float& v : t.floats()) v = dist(rng_);
    return t;
  }

  OnnxGraphBuilder builder_;
  std::mt19937_64 rng_;
  absl::Status status_;
};

absl::StatusOr<onnx::ModelProto> LeNet5(const ArchOptions& o) {
  Net net(o);
  Value x = net.Input(o);
  x = net.Conv(x, "conv1", 6, 5, 1, 2, true);
  x = net.Relu(x, "relu1");
  x = net.MaxPool(x, "pool1", 2, 2);
  x = net.Conv(x, "conv2", 16, 5, 1, 0, true);
  x = net.Relu(x, "relu2");
  x = net.MaxPool(x, "pool2", 2, 2);
  x = net.Flatten(x, "flatten");
  x = net.Gemm(x, "fc1", 120);
  x = net.Relu(x, "relu3");
  x = net.Gemm(x, "fc2", 84);
  x = net.Relu(x, "relu4");
  x = net.Gemm(x, "fc3", o.num_classes);
  return net.Finish(x, o.num_classes);
}

Value Fire(Net& net, const Value& x, const std::string& prefix, int64_t squeeze, int64_t expand1x1,
           int64_t expand3x3) {
  Value s = net.Conv(x, prefix + "_squeeze", squeeze, 1, 1, 0, true);
  s = net.Relu(s, prefix + "_squeeze_relu");
  Value e1 = net.Conv(s, prefix + "_expand1x1", expand1x1, 1, 1, 0, true);
  e1 = net.Relu(e1, prefix + "_expand1x1_relu");
  Value e3 = net.Conv(s, prefix + "_expand3x3", expand3x3, 3, 1, 1, true);
  e3 = net.Relu(e3, prefix + "_expand3x3_relu");
  return net.Concat({e1, e3}, prefix + "_concat");
}

absl::StatusOr<onnx::ModelProto> SqueezeNetMini(const ArchOptions& o) {
  Net net(o);
  Value x = net.Input(o);
  x = net.Conv(x, "conv1", 32, 3, 1, 1, true);
  x = net.Relu(x, "relu1");
  x = net.MaxPool(x, "pool1", 2, 2);
  x = Fire(net, x, "fire2", 16, 32, 32);
  x = Fire(net, x, "fire3", 16, 32, 32);
  x = net.MaxPool(x, "pool3", 2, 2);
  x = Fire(net, x, "fire4", 24, 48, 48);
  x = net.Dropout(x, "dropout");
  x = net.Conv(x, "conv10", o.num_classes, 1, 1, 0, true);
  x = net.Relu(x, "relu10");
  x = net.GlobalAveragePool(x, "gap");
  x = net.Flatten(x, "flatten");
  return net.Finish(x, o.num_classes);
}

// conv-BN-relu-conv-BN, plus the (optionally projected) shortcut, Add, Relu.
Value BasicBlock(Net& net, const Value& x, const std::string& prefix, int64_t out_channels,
                 int64_t stride) {
  Value y = net.Conv(x, prefix + "_conv1", out_channels, 3, stride, 1, false);
  y = net.BatchNorm(y, prefix + "_bn1");
  y = net.Relu(y, prefix + "_relu1");
  y = net.Conv(y, prefix + "_conv2", out_channels, 3, 1, 1, false);
  y = net.BatchNorm(y, prefix + "_bn2");
  Value shortcut = x;
  if (stride != 1 || x.shape.empty() || x.shape[0] != out_channels) {
    shortcut = net.Conv(x, prefix + "_proj_conv", out_channels, 1, stride, 0, false);
    shortcut = net.BatchNorm(shortcut, prefix + "_proj_bn");
  }
  y = net.Add(y, shortcut, prefix + "_add");
  return net.Relu(y, prefix + "_relu2");
}

absl::StatusOr<onnx::ModelProto> ResNetMini(const ArchOptions& o) {
  Net net(o);
  Value x = net.Input(o);
  x = net.Conv(x, "conv1", 16, 3, 1, 1, false);
  x = net.BatchNorm(x, "bn1");
  x = net.Relu(x, "relu1");
  x = BasicBlock(net, x, "block1", 16, 1);
  x = BasicBlock(net, x, "block2", 32, 2);
  x = net.GlobalAveragePool(x, "gap");
  x = net.Flatten(x, "flatten");
  x = net.Gemm(x, "fc1", o.num_classes);
  return net.Finish(x, o.num_classes);
}

absl::StatusOr<onnx::ModelProto> AlexNetMini(const ArchOptions& o) {
  Net net(o);
  Value x = net.Input(o);
  x = net.Conv(x, "conv1", 32, 5, 1, 2, true);
  x = net.Relu(x, "relu1");
  x = net.Lrn(x, "lrn1");
  x = net.MaxPool(x, "pool1", 3, 2);
  x = net.Conv(x, "conv2", 64, 3, 1, 1, true);
  x = net.Relu(x, "relu2");
  x = net.Lrn(x, "lrn2");
  x = net.MaxPool(x, "pool2", 3, 2);
  x = net.Conv(x, "conv3", 64, 3, 1, 1, true);
  x = net.Relu(x, "relu3");
  x = net.Flatten(x, "flatten");
  x = net.Gemm(x, "fc1", 256);
  x = net.Relu(x, "relu4");
  x = net.Dropout(x, "dropout");
  x = net.Gemm(x, "fc2", o.num_classes);
  return net.Finish(x, o.num_classes);
}

}  // namespace

std::vector<std::string> ArchitectureNames() {
  return {"lenet5", "squeezenet-mini", "resnet-mini", "alexnet-mini"};
}

absl::StatusOr<onnx::ModelProto> BuildArchitecture(std::string_view name,
                                                   const ArchOptions& options) {
  if (name == "lenet5") return LeNet5(options);
  if (name == "squeezenet-mini") return SqueezeNetMini(options);
  if (name == "resnet-mini") return ResNetMini(options);
  if (name == "alexnet-mini") return AlexNetMini(options);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown architecture '", std::string(name),
                   "'; known architectures: ", absl::StrJoin(ArchitectureNames(), ", ")));
}

}  // namespace bitsweep::engine::zoo
