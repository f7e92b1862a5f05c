// Checks that bytes are an ONNX model libonnx's checker accepts, without holding the model's
// weights in memory: the protobuf wire format is read from a stream (a file of any size up to
// protobuf's 2 GiB) and copied with every tensor's data cut to one placeholder element, and the
// checker runs on that copy. The checker never reads tensor values, only that a tensor has one
// value field of its type, so the answer is the same as for the whole model; memory is that of
// the model's structure (nodes, names, shapes), not its weights.
//
//   RETURN_IF_ERROR(CheckOnnxModelFile("/var/lib/bitsweep/upload-1234", "resnet50.onnx"));
//   RETURN_IF_ERROR(CheckOnnxModelBytes(bytes, "lenet5.onnx"));
//
// Errors are INVALID_ARGUMENT naming the model: "model 'NAME': not an ONNX model (...)" or
// "model 'NAME': the ONNX checker rejected it: ...". Strings outside tensor data (names, doc
// strings, ...) longer than 16 MiB are refused rather than read.
#ifndef BITSWEEP_SERVER_COORDINATOR_MODEL_CHECK_H_
#define BITSWEEP_SERVER_COORDINATOR_MODEL_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bitsweep::server {

absl::Status CheckOnnxModelFile(const std::string& path, absl::string_view name);
absl::Status CheckOnnxModelBytes(absl::string_view bytes, absl::string_view name);

// Dimension 1 (channels, NCHW) of the model's first runtime input (a graph input that is not an
// initializer) when its shape states it; nullopt when the model leaves it open. Reads the file a
// chunk at a time, like CheckOnnxModelFile.
absl::StatusOr<std::optional<int64_t>> ModelInputChannels(const std::string& path);
absl::StatusOr<std::optional<int64_t>> ModelInputChannelsOfBytes(absl::string_view bytes);

// The serialized ModelProto with tensor data cut (what the checker sees); exposed for tests.
absl::StatusOr<std::string> StripTensorDataForTest(absl::string_view bytes);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_MODEL_CHECK_H_
