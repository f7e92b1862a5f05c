#include "worker/engine/tensor_proto.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace bitsweep::engine {
namespace {

absl::Status SizeMismatch(const onnx::TensorProto& proto, int64_t want, int64_t got) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", proto.name(), "': shape needs ", want,
                                                 " values but the proto holds ", got));
}

}  // namespace

absl::StatusOr<Tensor> TensorFromProto(const onnx::TensorProto& proto) {
  if (proto.data_location() == onnx::TensorProto::EXTERNAL) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", proto.name(), "': external data is not supported"));
  }
  Shape shape(proto.dims().begin(), proto.dims().end());
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", proto.name(), "': negative dimension ", d));
    }
  }
  // Bounded so that byte counts (n * 8) cannot overflow; the data must be there anyway.
  const std::optional<int64_t> elements = CheckedNumElements(shape, int64_t{1} << 60);
  if (!elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", proto.name(), "': dimensions ", ShapeToString(shape), " are implausibly large"));
  }
  const int64_t n = *elements;
  const std::string& raw = proto.raw_data();
  switch (proto.data_type()) {
    case onnx::TensorProto::FLOAT: {
      std::vector<float> values;
      if (!raw.empty()) {
        if (static_cast<int64_t>(raw.size()) != n * 4) return SizeMismatch(proto, n, raw.size() / 4);
        values.resize(n);
        std::memcpy(values.data(), raw.data(), raw.size());
      } else {
        if (proto.float_data_size() != n) return SizeMismatch(proto, n, proto.float_data_size());
        values.assign(proto.float_data().begin(), proto.float_data().end());
      }
      return Tensor::Float(std::move(shape), std::move(values));
    }
    case onnx::TensorProto::INT64: {
      std::vector<int64_t> values;
      if (!raw.empty()) {
        if (static_cast<int64_t>(raw.size()) != n * 8) return SizeMismatch(proto, n, raw.size() / 8);
        values.resize(n);
        std::memcpy(values.data(), raw.data(), raw.size());
      } else {
        if (proto.int64_data_size() != n) return SizeMismatch(proto, n, proto.int64_data_size());
        values.assign(proto.int64_data().begin(), proto.int64_data().end());
      }
      return Tensor::Int64(std::move(shape), std::move(values));
    }
    case onnx::TensorProto::INT32: {
      std::vector<int64_t> values;
      if (!raw.empty()) {
        if (static_cast<int64_t>(raw.size()) != n * 4) return SizeMismatch(proto, n, raw.size() / 4);
        std::vector<int32_t> v32(n);
        std::memcpy(v32.data(), raw.data(), raw.size());
        values.assign(v32.begin(), v32.end());
      } else {
        if (proto.int32_data_size() != n) return SizeMismatch(proto, n, proto.int32_data_size());
        values.assign(proto.int32_data().begin(), proto.int32_data().end());
      }
      return Tensor::Int64(std::move(shape), std::move(values));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", proto.name(), "': element type ",
          onnx::TensorProto::DataType_Name(
              static_cast<onnx::TensorProto::DataType>(proto.data_type())),
          " is not supported (float32, int64 and int32 are)"));
  }
}

onnx::TensorProto TensorToProto(const Tensor& tensor, const std::string& name) {
  onnx::TensorProto proto;
  proto.set_name(name);
  for (int64_t d : tensor.shape()) proto.add_dims(d);
  if (tensor.dtype() == DataType::kFloat) {
    proto.set_data_type(onnx::TensorProto::FLOAT);
    proto.set_raw_data(tensor.floats().data(), tensor.floats().size() * sizeof(float));
  } else {
    proto.set_data_type(onnx::TensorProto::INT64);
    proto.set_raw_data(tensor.int64s().data(), tensor.int64s().size() * sizeof(int64_t));
  }
  return proto;
}

absl::StatusOr<Tensor> ReadTensorProtoFile(const std::string& path, std::string* name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tensor file '", path, "'"));
  onnx::TensorProto proto;
  if (!proto.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not a serialized ONNX TensorProto"));
  }
  if (name != nullptr) *name = proto.name();
  absl::StatusOr<Tensor> tensor = TensorFromProto(proto);
  if (!tensor.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", tensor.status().message()));
  }
  return tensor;
}

absl::Status WriteTensorProtoFile(const std::string& path, const std::string& name,
                                  const Tensor& tensor) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  if (!TensorToProto(tensor, name).SerializeToOstream(&out) || !out.flush()) {
    return absl::InternalError(absl::StrCat("failed writing '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace bitsweep::engine
