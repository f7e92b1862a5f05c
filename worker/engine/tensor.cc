#include "worker/engine/tensor.h"

#include <cassert>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitsweep::engine {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<int64_t> CheckedNumElements(const Shape& shape, int64_t limit) {
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    empty |= d == 0;
  }
  if (empty) return 0;  // also when another dimension is huge
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > limit / d) return std::nullopt;
    n *= d;
  }
  return n;
}

// StrCat rather than "[" + ...: GCC 12 warns (-Wrestrict) on the operator+ inlining.
std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

Tensor Tensor::Float(Shape shape) {
  Tensor t;
  t.dtype_ = DataType::kFloat;
  t.floats_.assign(static_cast<size_t>(NumElements(shape)), 0.0f);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Float(Shape shape, std::vector<float> values) {
  assert(static_cast<int64_t>(values.size()) == NumElements(shape));
  Tensor t;
  t.dtype_ = DataType::kFloat;
  t.shape_ = std::move(shape);
  t.floats_ = std::move(values);
  return t;
}

Tensor Tensor::Int64(Shape shape, std::vector<int64_t> values) {
  assert(static_cast<int64_t>(values.size()) == NumElements(shape));
  Tensor t;
  t.dtype_ = DataType::kInt64;
  t.shape_ = std::move(shape);
  t.int64s_ = std::move(values);
  return t;
}

}  // namespace bitsweep::engine
