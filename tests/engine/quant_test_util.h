// Helpers shared by the quantized-network tests: seeded random tensors, format parsing that
// fails the test (not the process) on a typo, and one run of an emulated network.
#ifndef BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_
#define BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "worker/engine/graph.h"
#include "worker/engine/network.h"
#include "quant/format.h"
#include "quant/plan.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine::testing {

inline Tensor Random(Shape shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::Float(std::move(shape));
  for (float& v : t.floats()) v = u(rng);
  return t;
}

inline quant::NumberFormat Format(const std::string& text) {
  absl::StatusOr<quant::NumberFormat> f = quant::ParseFormat(text);
  EXPECT_TRUE(f.ok()) << text << ": " << f.status();
  return f.ok() ? *f : quant::NumberFormat{};
}

// Runs `graph` on `x` (its first input; the batch is x's first dimension) with the emulation
// `plan` (null: fp32) on 2 threads, and returns its first output (empty after a failure, which
// the test records). An `observer` also makes the network place every quantizer exactly where
// the plan puts it.
inline Tensor RunEmulation(const Graph& graph, const Tensor& x, const quant::QuantPlan* plan,
                           ActivationObserver observer = nullptr) {
  NetworkOptions options;
  options.batch = x.shape()[0];
  options.threads = 2;
  options.quant = plan;
  options.observer = std::move(observer);
  absl::StatusOr<std::unique_ptr<Network>> net = Network::Create(graph, options);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return {};
  std::map<std::string, Tensor> out;
  EXPECT_TRUE((*net)->Run({{graph.inputs[0].name, &x}}, &out).ok());
  return out[graph.outputs[0]];
}

}  // namespace bitsweep::engine::testing

#endif  // BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_
