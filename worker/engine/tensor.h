// Tensor: a dense, row-major host tensor of float32 or int64 values.
//
// The engine's currency at its boundaries: graph initializers, inputs bound for `run`, outputs
// returned to callers, and dataset batches. Inside a compiled Network data lives in oneDNN memory
// (possibly in blocked layouts); Tensor is always plain row-major.
//
// Copies are deep. Share() gives a copy that shares the values instead (large weights then exist
// once, e.g. between a caller's Graph and the Network compiled from it); a shared tensor copies
// its values on its first non-const access, so every Tensor still behaves as its own value. A
// pointer from a non-const floats()/int64s() stays valid until the values are shared and then
// accessed non-const again: take it after sharing, or read through a const Tensor.
//
//   Tensor t = Tensor::Float({2, 3});
//   t.floats()[0] = 1.0f;
//   Tensor view = t.Share();                      // no copy
//   Tensor shape = Tensor::Int64({2}, {1, -1});
#ifndef BITSWEEP_WORKER_ENGINE_TENSOR_H_
#define BITSWEEP_WORKER_ENGINE_TENSOR_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bitsweep::engine {

enum class DataType { kFloat, kInt64 };

using Shape = std::vector<int64_t>;

// Number of elements of `shape` (1 for a scalar, i.e. an empty shape).
int64_t NumElements(const Shape& shape);
// The same for shapes read from files: nullopt when a dimension is negative or the count exceeds
// `limit` (checked without overflowing).
std::optional<int64_t> CheckedNumElements(const Shape& shape,
                                          int64_t limit = std::numeric_limits<int64_t>::max());
// "[1,3,28,28]".
std::string ShapeToString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) = default;
  Tensor& operator=(Tensor&&) = default;
  static Tensor Float(Shape shape);                             // zero-filled
  static Tensor Float(Shape shape, std::vector<float> values);  // values.size() == NumElements
  static Tensor Int64(Shape shape, std::vector<int64_t> values);

  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t num_elements() const { return NumElements(shape_); }

  // A tensor with the same values, not copied (see above).
  Tensor Share() const;
  // True when another Tensor shares these values.
  bool shared() const { return floats_.use_count() > 1 || int64s_.use_count() > 1; }

  // Valid only for the matching dtype. The non-const accessors first copy shared values.
  std::vector<float>& floats() { return Own(floats_); }
  const std::vector<float>& floats() const { return floats_ ? *floats_ : EmptyFloats(); }
  std::vector<int64_t>& int64s() { return Own(int64s_); }
  const std::vector<int64_t>& int64s() const { return int64s_ ? *int64s_ : EmptyInt64s(); }

  // Same values, new shape with the same element count.
  void Reshape(Shape shape) { shape_ = std::move(shape); }

 private:
  template <typename T>
  static std::vector<T>& Own(std::shared_ptr<std::vector<T>>& values);
  static const std::vector<float>& EmptyFloats();
  static const std::vector<int64_t>& EmptyInt64s();

  DataType dtype_ = DataType::kFloat;
  Shape shape_;
  std::shared_ptr<std::vector<float>> floats_;
  std::shared_ptr<std::vector<int64_t>> int64s_;
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TENSOR_H_
