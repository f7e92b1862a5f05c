// Quantization-aware fine-tuning end to end (FinetuneTrial: calibrate, plan, fake-quant SGD with
// straight-through estimators, re-evaluate) on blocks of the CNNs people export: a MobileNetV3
// style block (depthwise Conv, squeeze-excitation with HardSigmoid and a broadcast Mul, HardSwish)
// and a ResNet basic block (residual Add), both with BatchNormalization, on Fashion-MNIST at
// fixed:8.
// Each block is first trained in fp32 (as users fine-tune trained models: BatchNormalization
// running statistics that match the data), then fine-tuned: the training loss must fall, the
// quantized top-1 must rise, and the tuned model must re-import.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "worker/engine/dataset.h"
#include "worker/engine/onnx_import.h"
#include "quant/config.h"
#include "worker/engine/train/trainer.h"
#include "worker/engine/trial.h"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine {
namespace {

const std::string kData = BITSWEEP_FASHION_MNIST_DIR;
const std::string kFixed8 =
    R"({"default": {"weights": "fixed:8", "inputs": "fixed:8", "outputs": "fixed:8"}})";

// He-initialized weights and identity BatchNormalization parameters.
class Builder {
 public:
  explicit Builder(int64_t opset) : b_("block", opset), rng_(7) {}

  void Conv(const std::string& name, const std::string& x, int64_t in, int64_t out, int64_t k,
            int64_t stride, int64_t group, const std::string& y) {
    std::normal_distribution<float> normal(0.0f, std::sqrt(2.0f / (in / group * k * k)));
    Tensor w = Tensor::Float({out, in / group, k, k});
    for (float& v : w.floats()) v = normal(rng_);
    b_.AddInitializer(name + ".w", std::move(w));
    const int64_t p = k / 2;
    b_.AddNode("Conv", name, {x, name + ".w"}, {name + ".conv"},
               {IntsAttr("kernel_shape", {k, k}), IntsAttr("pads", {p, p, p, p}),
                IntsAttr("strides", {stride, stride}), IntAttr("group", group)});
    b_.AddFloatInitializer(name + ".bn.scale", {out}, std::vector<float>(out, 1.0f));
    b_.AddFloatInitializer(name + ".bn.bias", {out}, std::vector<float>(out, 0.0f));
    b_.AddFloatInitializer(name + ".bn.mean", {out}, std::vector<float>(out, 0.0f));
    b_.AddFloatInitializer(name + ".bn.var", {out}, std::vector<float>(out, 1.0f));
    b_.AddNode("BatchNormalization", name + ".bn",
               {name + ".conv", name + ".bn.scale", name + ".bn.bias", name + ".bn.mean",
                name + ".bn.var"},
               {y});
  }
  // GlobalAveragePool, Flatten, Gemm to 10 classes.
  onnx::ModelProto Head(const std::string& x, int64_t channels) {
    b_.AddNode("GlobalAveragePool", "pool", {x}, {"pooled"});
    b_.AddNode("Flatten", "flatten", {"pooled"}, {"flat"});
    std::normal_distribution<float> normal(0.0f, std::sqrt(1.0f / channels));
    Tensor w = Tensor::Float({10, channels});
    for (float& v : w.floats()) v = normal(rng_);
    b_.AddInitializer("fc.w", std::move(w));
    b_.AddFloatInitializer("fc.b", {10}, std::vector<float>(10, 0.0f));
    b_.AddNode("Gemm", "fc", {"flat", "fc.w", "fc.b"}, {"logits"}, {IntAttr("transB", 1)});
    b_.AddOutput("logits", Shape{kBatchDim, 10});
    return b_.Build();
  }
  OnnxGraphBuilder& b() { return b_; }

 private:
  OnnxGraphBuilder b_;
  std::mt19937_64 rng_;
};

// Stem Conv s2 + BN + HardSwish; expansion 1x1 + BN + HardSwish; depthwise 3x3 s2 + BN +
// HardSwish; SE (GlobalAveragePool, Conv + Relu, Conv, HardSigmoid, Mul); projection 1x1 + BN.
onnx::ModelProto MobileNetBlock() {
  Builder m(14);
  OnnxGraphBuilder& b = m.b();
  b.AddInput("input", {kBatchDim, 1, 28, 28});
  m.Conv("stem", "input", 1, 8, 3, 2, 1, "stem.y");
  b.AddNode("HardSwish", "stem.act", {"stem.y"}, {"stem.a"});
  m.Conv("expand", "stem.a", 8, 16, 1, 1, 1, "expand.y");
  b.AddNode("HardSwish", "expand.act", {"expand.y"}, {"expand.a"});
  m.Conv("dw", "expand.a", 16, 16, 3, 2, 16, "dw.y");
  b.AddNode("HardSwish", "dw.act", {"dw.y"}, {"dw.a"});
  b.AddNode("GlobalAveragePool", "se.pool", {"dw.a"}, {"se.p"});
  m.Conv("se.reduce", "se.p", 16, 8, 1, 1, 1, "se.r");
  b.AddNode("Relu", "se.relu", {"se.r"}, {"se.ra"});
  m.Conv("se.expand", "se.ra", 8, 16, 1, 1, 1, "se.e");
  b.AddNode("HardSigmoid", "se.gate", {"se.e"}, {"se.g"},
            {FloatAttr("alpha", 1.0f / 6), FloatAttr("beta", 0.5f)});
  b.AddNode("Mul", "se.scale", {"dw.a", "se.g"}, {"se.out"});
  m.Conv("project", "se.out", 16, 16, 1, 1, 1, "project.y");
  return m.Head("project.y", 16);
}

// Stem Conv s2 + BN + Relu, then a basic block: Conv + BN + Relu, Conv + BN, residual Add, Relu.
onnx::ModelProto ResNetBlock() {
  Builder m(13);
  OnnxGraphBuilder& b = m.b();
  b.AddInput("input", {kBatchDim, 1, 28, 28});
  m.Conv("stem", "input", 1, 16, 3, 2, 1, "stem.y");
  b.AddNode("Relu", "stem.relu", {"stem.y"}, {"stem.a"});
  m.Conv("conv1", "stem.a", 16, 16, 3, 1, 1, "conv1.y");
  b.AddNode("Relu", "conv1.relu", {"conv1.y"}, {"conv1.a"});
  m.Conv("conv2", "conv1.a", 16, 16, 3, 1, 1, "conv2.y");
  b.AddNode("Add", "residual", {"conv2.y", "stem.a"}, {"sum"});
  b.AddNode("Relu", "block.relu", {"sum"}, {"block.a"});
  return m.Head("block.a", 16);
}

const Dataset& Split(const std::string& name, int64_t limit) {
  static auto* cache = new std::map<std::string, Dataset>();
  auto it = cache->find(name);
  if (it == cache->end()) {
    absl::StatusOr<Dataset> d = LoadDataset("idx:" + kData + "/" + name,
                                            {.mean = {0.2860f}, .std = {0.3530f}, .limit = limit});
    EXPECT_TRUE(d.ok()) << d.status();
    it = cache->emplace(name, d.ok() ? *std::move(d) : Dataset()).first;
  }
  return it->second;
}

// Trains `model` in fp32 (so that its BatchNormalization running statistics and weights are
// those of a trained network, as when a user fine-tunes a pretrained model), then fine-tunes it
// with the quantizers of `config_json` and requires the fine-tuning loss to fall and the quantized
// top-1 to rise.
void ExpectFinetuningLearns(const onnx::ModelProto& model, const std::string& config_json) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    FAIL() << "invalid test model: " << e.what();
  }
  const Dataset& train = Split("train", 3072);
  const Dataset& test = Split("t10k", 1000);
  TrainOptions pretrain;
  pretrain.max_steps = 192;
  pretrain.epochs = 100;
  pretrain.batch = 32;
  pretrain.threads = 1;
  absl::StatusOr<onnx::ModelProto> trained = Train(model, train, pretrain);
  ASSERT_TRUE(trained.ok()) << trained.status();

  absl::StatusOr<quant::QuantConfig> config = quant::ParseQuantConfig(config_json);
  ASSERT_TRUE(config.ok()) << config.status();
  TrialInputs in{.eval = &test, .calibration = &train, .config = &*config};
  TrainOptions options;
  options.max_steps = 192;  // 2 epochs of 96 batches
  options.batch = 32;
  options.learning_rate = 0.005;
  options.threads = 1;
  std::vector<EpochReport> reports;
  options.on_epoch = [&](const EpochReport& r) { reports.push_back(r); };
  absl::StatusOr<FinetuneResult> r =
      FinetuneTrial(*trained, in, train, options, {.batch = 250, .threads = 1});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(reports.size(), 2u);
  for (const EpochReport& e : reports) {
    std::printf("epoch %d: loss %.4f train top1 %.4f\n", e.epoch, e.mean_loss, e.train_top1);
  }
  std::printf("quantized top1 before %.4f after %.4f (%zu quantized layers)\n",
              r->before.eval.top1, r->after.eval.top1, r->after.layers.size());
  EXPECT_LT(reports.back().mean_loss, reports.front().mean_loss);
  EXPECT_GT(r->after.eval.top1, r->before.eval.top1 + 0.05);
  absl::StatusOr<Graph> tuned = ImportOnnxModel(r->tuned);
  EXPECT_TRUE(tuned.ok()) << tuned.status();
}

TEST(FinetuneTest, MobileNetBlockWithDepthwiseSeAndHardSwishLearnsAtFixed8) {
  ExpectFinetuningLearns(MobileNetBlock(), kFixed8);
}

TEST(FinetuneTest, ResNetBlockWithResidualAddLearnsAtFixed8) {
  ExpectFinetuningLearns(ResNetBlock(), kFixed8);
}

}  // namespace
}  // namespace bitsweep::engine
