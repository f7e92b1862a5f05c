// Conversion between engine Tensors and ONNX TensorProto, and .pb file I/O.
//
// ONNX's backend test data stores each input and output as a serialized TensorProto
// (test_data_set_0/input_0.pb); `bitsweep run` reads and writes the same format.
//
//   ASSIGN_OR_RETURN(Tensor x, ReadTensorProtoFile("input_0.pb", &name));
//   RETURN_IF_ERROR(WriteTensorProtoFile("out/y.pb", "y", y));
#ifndef BITSWEEP_WORKER_ENGINE_TENSOR_PROTO_H_
#define BITSWEEP_WORKER_ENGINE_TENSOR_PROTO_H_

#include <string>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "worker/engine/tensor.h"

namespace bitsweep::engine {

// FLOAT becomes a float tensor; INT64 and INT32 become int64 tensors. Other element types, external
// data and size mismatches are InvalidArgument errors naming the tensor.
absl::StatusOr<Tensor> TensorFromProto(const onnx::TensorProto& proto);
onnx::TensorProto TensorToProto(const Tensor& tensor, const std::string& name);

// Reads a serialized TensorProto. `name`, when non-null, receives the proto's name field.
absl::StatusOr<Tensor> ReadTensorProtoFile(const std::string& path, std::string* name = nullptr);
absl::Status WriteTensorProtoFile(const std::string& path, const std::string& name,
                                  const Tensor& tensor);

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_TENSOR_PROTO_H_
