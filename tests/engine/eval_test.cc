// End-to-end evaluation on Debian's Fashion-MNIST: a real trained model (the closed-form ridge
// baseline) and a convolutional zoo model, each scored by the engine and, independently, by the
// scalar reference with its own argmax and cross-entropy.
#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/reference/scalar_reference.h"
#include "worker/engine/dataset.h"
#include "worker/engine/evaluate.h"
#include "worker/engine/onnx_import.h"
#include "worker/engine/zoo/linear_fit.h"
#include "worker/engine/zoo/zoo.h"

namespace bitsweep::engine {
namespace {

const std::string kData = BITSWEEP_FASHION_MNIST_DIR;

struct ReferenceScore {
  int64_t correct = 0;
  double loss = 0;
};

// Argmax (first maximum wins) and mean log-softmax cross-entropy, written out independently of
// evaluate.cc.
ReferenceScore ScoreWithReference(const onnx::ModelProto& model, const Dataset& data) {
  absl::StatusOr<std::map<std::string, Tensor>> out =
      reference::RunReference(model, {{"input", data.images}});
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  const Tensor& logits = out->at("logits");
  const int64_t classes = logits.shape()[1];
  ReferenceScore score;
  for (int64_t i = 0; i < data.size(); ++i) {
    const float* row = logits.floats().data() + i * classes;
    const int64_t best = std::max_element(row, row + classes) - row;
    score.correct += best == data.labels[i];
    double max = row[best], sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(row[c] - max);
    score.loss += std::log(sum) + max - row[data.labels[i]];
  }
  score.loss /= data.size();
  return score;
}

TEST(FashionMnistEvalTest, RidgeBaselineScoresAsTheReferenceSays) {
  absl::StatusOr<Dataset> train = LoadDataset("idx:" + kData + "/train");
  ASSERT_TRUE(train.ok()) << train.status();
  absl::StatusOr<onnx::ModelProto> model = zoo::FitRidgeClassifier(*train, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model, {}, "ridge");
  ASSERT_TRUE(graph.ok()) << graph.status();
  absl::StatusOr<Dataset> test = LoadDataset("idx:" + kData + "/t10k");
  ASSERT_TRUE(test.ok()) << test.status();

  absl::StatusOr<EvalResult> r = Evaluate(*graph, *test, {.batch = 256, .threads = 2});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->samples, 10000);
  // A linear classifier on raw pixels: clearly trained (chance is 10%), clearly not a CNN.
  EXPECT_GT(r->top1, 0.78);
  EXPECT_LT(r->top1, 0.85);
  EXPECT_GE(r->top5, r->top1);

  const ReferenceScore ref = ScoreWithReference(*model, *test);
  EXPECT_NEAR(r->top1 * 10000, ref.correct, 1.0);  // one near-tie may flip between float paths
  EXPECT_NEAR(r->loss, ref.loss, 1e-4 * ref.loss);
}

TEST(FashionMnistEvalTest, ConvNetWithPartialLastBatchMatchesReference) {
  absl::StatusOr<Dataset> test =
      LoadDataset("idx:" + kData + "/t10k", {.mean = {0.2860f}, .std = {0.3530f}, .limit = 300});
  ASSERT_TRUE(test.ok()) << test.status();
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {.seed = 4});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok()) << graph.status();
  // 300 = 4 * 64 + 44: the last batch is padded.
  absl::StatusOr<EvalResult> r = Evaluate(*graph, *test, {.batch = 64, .threads = 2});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->samples, 300);
  const ReferenceScore ref = ScoreWithReference(*model, *test);
  EXPECT_NEAR(r->top1 * 300, ref.correct, 1.0);
  EXPECT_NEAR(r->loss, ref.loss, 1e-4 * ref.loss);
}

TEST(FashionMnistEvalTest, DatasetThatDoesNotFitTheModelIsAClearError) {
  absl::StatusOr<onnx::ModelProto> model =
      zoo::BuildArchitecture("lenet5", {.channels = 3, .height = 32, .width = 32});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok());
  absl::StatusOr<Dataset> test = LoadDataset("idx:" + kData + "/t10k", {.limit = 10});
  ASSERT_TRUE(test.ok());
  absl::StatusOr<EvalResult> r = Evaluate(*graph, *test, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'input'"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("[1,28,28]"), std::string::npos) << r.status();
}

TEST(FashionMnistEvalTest, TooFewModelClassesIsAClearError) {
  absl::StatusOr<onnx::ModelProto> model = zoo::BuildArchitecture("lenet5", {.num_classes = 5});
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Graph> graph = ImportOnnxModel(*model);
  ASSERT_TRUE(graph.ok());
  absl::StatusOr<Dataset> test = LoadDataset("idx:" + kData + "/t10k", {.limit = 100});
  ASSERT_TRUE(test.ok());
  absl::StatusOr<EvalResult> r = Evaluate(*graph, *test, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("only 5 classes"), std::string::npos) << r.status();
}

TEST(ScoreRowTest, HandComputedCases) {
  const float logits[3] = {1.0f, 3.0f, 2.0f};
  RowScore s = ScoreRow(logits, 3, 1, false);
  EXPECT_TRUE(s.top1);
  // -log softmax: log(e^1 + e^3 + e^2) - 3
  EXPECT_NEAR(s.loss, std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.0)) - 3.0, 1e-9);
  s = ScoreRow(logits, 3, 2, false);
  EXPECT_FALSE(s.top1);
  EXPECT_TRUE(s.top5);
  const float probabilities[2] = {0.25f, 0.75f};
  s = ScoreRow(probabilities, 2, 0, true);
  EXPECT_FALSE(s.top1);
  EXPECT_NEAR(s.loss, -std::log(0.25), 1e-7);
  const float tie[3] = {5.0f, 5.0f, 1.0f};
  EXPECT_TRUE(ScoreRow(tie, 3, 0, false).top1);   // argmax takes the first maximum
  EXPECT_FALSE(ScoreRow(tie, 3, 1, false).top1);
  const float seven[7] = {7, 6, 5, 4, 3, 2, 1};
  EXPECT_TRUE(ScoreRow(seven, 7, 4, false).top5);
  EXPECT_FALSE(ScoreRow(seven, 7, 5, false).top5);
}

}  // namespace
}  // namespace bitsweep::engine
