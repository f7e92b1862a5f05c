// Tensor: a dense, row-major host tensor of float32 or int64 values.
//
// The engine's currency at its boundaries: graph initializers, inputs bound for `run`, outputs
// returned to callers, and dataset batches. Inside a compiled Network data lives in oneDNN memory
// (possibly in blocked layouts); Tensor is always plain row-major.
//
//   Tensor t = Tensor::Float({2, 3});
//   t.floats()[0] = 1.0f;
//   Tensor shape = Tensor::Int64({2}, {1, -1});
#ifndef BITSWEEP_WORKER_ENGINE_TENSOR_H_
#define BITSWEEP_WORKER_ENGINE_TENSOR_H_

#include <cstdint>
#include <limits>
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
  static Tensor Float(Shape shape);                             // zero-filled
  static Tensor Float(Shape shape, std::vector<float> values);  // values.size() == NumElements
  static Tensor Int64(Shape shape, std::vector<int64_t> values);

  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t num_elements() const { return NumElements(shape_); }

  // Valid only for the matching dtype.
  std::vector<float>& floats() { return floats_; }
  const std::vector<float>& floats() const { return floats_; }
  std::vector<int64_t>& int64s() { return int64s_; }
  const std::vector<int64_t>& int64s() const { return int64s_; }

  // Same values, new shape with the same element count.
  void Reshape(Shape shape) { shape_ = std::move(shape); }

 private:
  DataType dtype_ = DataType::kFloat;
  Shape shape_;
  std::vector<float> floats_;
  std::vector<int64_t> int64s_;
};

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TENSOR_H_
