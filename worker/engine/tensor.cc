#include "worker/engine/tensor.h"

#include <atomic>
#include <cassert>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bitsweep::engine {
namespace {

template <typename T>
std::shared_ptr<std::vector<T>> DeepCopy(const std::shared_ptr<std::vector<T>>& values) {
  return values ? std::make_shared<std::vector<T>>(*values) : nullptr;
}

}  // namespace

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

Tensor::Tensor(const Tensor& other)
    : dtype_(other.dtype_),
      shape_(other.shape_),
      floats_(DeepCopy(other.floats_)),
      int64s_(DeepCopy(other.int64s_)) {}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

Tensor Tensor::Share() const {
  Tensor t;
  t.dtype_ = dtype_;
  t.shape_ = shape_;
  t.floats_ = floats_;
  t.int64s_ = int64s_;
  return t;
}

template <typename T>
std::vector<T>& Tensor::Own(std::shared_ptr<std::vector<T>>& values) {
  if (!values) {
    values = std::make_shared<std::vector<T>>();
  } else if (values.use_count() > 1) {
    values = std::make_shared<std::vector<T>>(*values);
  } else {
    // The last other owner may have just let go in another thread: see its reads before writing.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *values;
}
template std::vector<float>& Tensor::Own(std::shared_ptr<std::vector<float>>& values);
template std::vector<int64_t>& Tensor::Own(std::shared_ptr<std::vector<int64_t>>& values);

const std::vector<float>& Tensor::EmptyFloats() {
  static const std::vector<float>* const kEmpty = new std::vector<float>();
  return *kEmpty;
}

const std::vector<int64_t>& Tensor::EmptyInt64s() {
  static const std::vector<int64_t>* const kEmpty = new std::vector<int64_t>();
  return *kEmpty;
}

Tensor Tensor::Float(Shape shape) {
  Tensor t;
  t.dtype_ = DataType::kFloat;
  t.floats_ = std::make_shared<std::vector<float>>(static_cast<size_t>(NumElements(shape)), 0.0f);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Float(Shape shape, std::vector<float> values) {
  assert(static_cast<int64_t>(values.size()) == NumElements(shape));
  Tensor t;
  t.dtype_ = DataType::kFloat;
  t.shape_ = std::move(shape);
  t.floats_ = std::make_shared<std::vector<float>>(std::move(values));
  return t;
}

Tensor Tensor::Int64(Shape shape, std::vector<int64_t> values) {
  assert(static_cast<int64_t>(values.size()) == NumElements(shape));
  Tensor t;
  t.dtype_ = DataType::kInt64;
  t.shape_ = std::move(shape);
  t.int64s_ = std::make_shared<std::vector<int64_t>>(std::move(values));
  return t;
}

}  // namespace bitsweep::engine
