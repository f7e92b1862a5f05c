// Helpers shared by the quantized-network tests: seeded random tensors and format parsing that
// fails the test (not the process) on a typo.
#ifndef BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_
#define BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "worker/engine/quant/format.h"
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

}  // namespace bitsweep::engine::testing

#endif  // BITSWEEP_TESTS_ENGINE_QUANT_TEST_UTIL_H_
