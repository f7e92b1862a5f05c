#include "worker/engine/zoo/linear_fit.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "worker/engine/zoo/onnx_builder.h"

namespace bitsweep::engine::zoo {
namespace {

using dnnl::memory;

// C[m x n] = A^T B for row-major A [k x m], B [k x n], with oneDNN's sgemm-class matmul.
void TransposedProduct(const float* a, const float* b, int64_t k, int64_t m, int64_t n, float* c) {
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  const memory::desc a_t({m, k}, memory::data_type::f32, memory::dims{1, m});
  const memory::desc b_d({k, n}, memory::data_type::f32, memory::dims{n, 1});
  const memory::desc c_d({m, n}, memory::data_type::f32, memory::dims{n, 1});
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_t, b_d, c_d), eng);
  memory am(a_t, eng, const_cast<float*>(a)), bm(b_d, eng, const_cast<float*>(b)), cm(c_d, eng, c);
  dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  stream.wait();
}

// Solves S X = R in place (R becomes X) for symmetric positive definite S [d x d], R [d x r].
bool CholeskySolve(std::vector<double>& s, std::vector<double>& r, int64_t d, int64_t cols) {
  for (int64_t j = 0; j < d; ++j) {
    double diag = s[j * d + j];
    for (int64_t k = 0; k < j; ++k) diag -= s[j * d + k] * s[j * d + k];
    if (diag <= 0) return false;
    s[j * d + j] = std::sqrt(diag);
    for (int64_t i = j + 1; i < d; ++i) {
      double v = s[i * d + j];
      for (int64_t k = 0; k < j; ++k) v -= s[i * d + k] * s[j * d + k];
      s[i * d + j] = v / s[j * d + j];
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t i = 0; i < d; ++i) {  // L y = r
      double v = r[i * cols + c];
      for (int64_t k = 0; k < i; ++k) v -= s[i * d + k] * r[k * cols + c];
      r[i * cols + c] = v / s[i * d + i];
    }
    for (int64_t i = d - 1; i >= 0; --i) {  // L^T x = y
      double v = r[i * cols + c];
      for (int64_t k = i + 1; k < d; ++k) v -= s[k * d + i] * r[k * cols + c];
      r[i * cols + c] = v / s[i * d + i];
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<onnx::ModelProto> FitRidgeClassifier(const Dataset& train,
                                                    const RidgeOptions& options) {
  const int64_t n = train.size();
  const int64_t features = NumElements(train.sample_shape());
  const int64_t classes = train.num_classes;
  if (n == 0 || classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", train.reference, "' needs samples of at least two classes to fit a classifier"));
  }
  if (options.lambda <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("lambda must be > 0, got ", options.lambda));
  }
  if (options.threads > 0) omp_set_num_threads(options.threads);
  const int64_t d = features + 1;  // plus a constant 1 for the bias
  std::vector<float> x(n * d), y(n * classes, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(train.ReadSamples(i, 1, &x[i * d]));
    x[i * d + features] = 1.0f;
    y[i * classes + train.labels[i]] = 1.0f;
  }
  std::vector<float> gram(d * d), xty(d * classes);
  TransposedProduct(x.data(), x.data(), n, d, d, gram.data());
  TransposedProduct(x.data(), y.data(), n, d, classes, xty.data());

  std::vector<double> s(gram.begin(), gram.end()), w(xty.begin(), xty.end());
  for (int64_t j = 0; j < features; ++j) s[j * d + j] += options.lambda;
  if (!CholeskySolve(s, w, d, classes)) {
    return absl::InternalError("ridge system is not positive definite; increase lambda");
  }

  // Gemm with transB=1 takes weights as [classes, features].
  std::vector<float> weights(classes * features), bias(classes);
  for (int64_t c = 0; c < classes; ++c) {
    for (int64_t j = 0; j < features; ++j) weights[c * features + j] = w[j * classes + c];
    bias[c] = static_cast<float>(w[features * classes + c]);
  }
  OnnxGraphBuilder b("ridge_linear");
  Shape input_shape = {kBatchDim};
  for (int64_t dim : train.sample_shape()) input_shape.push_back(dim);
  b.AddInput("input", input_shape);
  b.AddFloatInitializer("fc.weight", {classes, features}, std::move(weights));
  b.AddFloatInitializer("fc.bias", {classes}, std::move(bias));
  b.AddNode("Flatten", "flatten", {"input"}, {"flat"}, {IntAttr("axis", 1)});
  b.AddNode("Gemm", "fc", {"flat", "fc.weight", "fc.bias"}, {"logits"}, {IntAttr("transB", 1)});
  b.AddOutput("logits", Shape{kBatchDim, classes});
  return b.Build();
}

}  // namespace bitsweep::engine::zoo
