#include "server/coordinator/model_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace bitsweep::server {
namespace {

using google::protobuf::io::CodedInputStream;

// The ONNX messages that can hold tensors, directly or through their children.
enum class Message { kModel, kGraph, kNode, kAttribute, kTensor, kSparseTensor, kFunction,
                     kTrainingInfo, kOther };

// The message type of field `field` of `parent` when it is one to descend into (onnx.proto3).
Message Child(Message parent, int field) {
  switch (parent) {
    case Message::kModel:  // graph, training_info, functions
      return field == 7 ? Message::kGraph
             : field == 20 ? Message::kTrainingInfo
             : field == 25 ? Message::kFunction
                           : Message::kOther;
    case Message::kGraph:  // node, initializer, sparse_initializer
      return field == 1 ? Message::kNode
             : field == 5 ? Message::kTensor
             : field == 15 ? Message::kSparseTensor
                           : Message::kOther;
    case Message::kNode:  // attribute
      return field == 5 ? Message::kAttribute : Message::kOther;
    case Message::kAttribute:  // t, g, tensors, graphs, sparse_tensor, sparse_tensors
      if (field == 5 || field == 10) return Message::kTensor;
      if (field == 6 || field == 11) return Message::kGraph;
      if (field == 22 || field == 23) return Message::kSparseTensor;
      return Message::kOther;
    case Message::kSparseTensor:  // values, indices
      return field == 1 || field == 2 ? Message::kTensor : Message::kOther;
    case Message::kFunction:  // node
      return field == 7 ? Message::kNode : Message::kOther;
    case Message::kTrainingInfo:  // initialization, algorithm
      return field == 1 || field == 2 ? Message::kGraph : Message::kOther;
    default:
      return Message::kOther;
  }
}

// TensorProto's numeric value fields: float_data, int32_data, int64_data, raw_data, double_data,
// uint64_data (string_data, 6, is kept: string tensors are small and the checker reads nothing
// of them either way).
bool IsTensorData(int field) {
  return field == 4 || field == 5 || field == 7 || field == 9 || field == 10 || field == 11;
}

// One element of a packed (or raw) value field: what the checker needs to see the field set.
std::string Placeholder(int field) {
  switch (field) {
    case 4: return std::string(4, '\0');   // float
    case 10: return std::string(8, '\0');  // double
    case 9: return std::string(1, '\0');   // raw bytes
    default: return std::string(1, '\0');  // a varint 0
  }
}

constexpr uint32_t kMaxStringBytes = 16u << 20;
constexpr int kMaxDepth = 64;

void AppendVarint(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void AppendFixed(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

const char* MessageName(Message m) {
  switch (m) {
    case Message::kModel: return "ModelProto";
    case Message::kGraph: return "GraphProto";
    case Message::kNode: return "NodeProto";
    case Message::kAttribute: return "AttributeProto";
    case Message::kTensor: return "TensorProto";
    case Message::kSparseTensor: return "SparseTensorProto";
    case Message::kFunction: return "FunctionProto";
    case Message::kTrainingInfo: return "TrainingInfoProto";
    default: return "message";
  }
}

// Copies the message `in` is positioned on (up to its limit, or the end of the stream) into
// `out`, descending into tensor-holding fields and keeping one element of each tensor value field.
absl::Status Copy(CodedInputStream* in, Message message, int depth, std::string* out) {
  if (depth > kMaxDepth) return absl::InvalidArgumentError("messages nested too deeply");
  bool kept_data[12] = {};
  for (;;) {
    const uint32_t tag = in->ReadTag();
    if (tag == 0) {
      if (!in->ConsumedEntireMessage()) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed ", MessageName(message), " at byte ", in->CurrentPosition()));
      }
      return absl::OkStatus();
    }
    const int field = static_cast<int>(tag >> 3);
    const int wire = static_cast<int>(tag & 7);
    const bool tensor_data = message == Message::kTensor && IsTensorData(field);
    auto truncated = [&] {
      return absl::InvalidArgumentError(absl::StrCat("truncated or malformed field ", field, " of ",
                                                     MessageName(message), " at byte ",
                                                     in->CurrentPosition()));
    };
    switch (wire) {
      case 0: {  // varint
        uint64_t value = 0;
        if (!in->ReadVarint64(&value)) return truncated();
        if (tensor_data && std::exchange(kept_data[field], true)) break;
        AppendVarint(out, tag);
        AppendVarint(out, value);
        break;
      }
      case 1: {  // fixed64
        uint64_t value = 0;
        if (!in->ReadLittleEndian64(&value)) return truncated();
        if (tensor_data && std::exchange(kept_data[field], true)) break;
        AppendVarint(out, tag);
        AppendFixed(out, value, 8);
        break;
      }
      case 5: {  // fixed32
        uint32_t value = 0;
        if (!in->ReadLittleEndian32(&value)) return truncated();
        if (tensor_data && std::exchange(kept_data[field], true)) break;
        AppendVarint(out, tag);
        AppendFixed(out, value, 4);
        break;
      }
      case 2: {  // length-delimited
        uint32_t length = 0;
        if (!in->ReadVarint32(&length)) return truncated();
        const Message child = Child(message, field);
        if (child != Message::kOther) {
          const CodedInputStream::Limit limit = in->PushLimit(static_cast<int>(length));
          std::string sub;
          if (absl::Status s = Copy(in, child, depth + 1, &sub); !s.ok()) return s;
          if (in->BytesUntilLimit() != 0) return truncated();
          in->PopLimit(limit);
          AppendVarint(out, tag);
          AppendVarint(out, sub.size());
          out->append(sub);
        } else if (tensor_data) {
          if (!in->Skip(static_cast<int>(length))) return truncated();
          if (std::exchange(kept_data[field], true)) break;
          const std::string kept = length == 0 ? std::string() : Placeholder(field);
          AppendVarint(out, tag);
          AppendVarint(out, kept.size());
          out->append(kept);
        } else {
          if (length > kMaxStringBytes) {
            return absl::InvalidArgumentError(absl::StrCat(
                "field ", field, " of a ", MessageName(message), " is ", length,
                " bytes, more than the ", kMaxStringBytes, " allowed outside tensor data"));
          }
          std::string bytes;
          if (!in->ReadString(&bytes, static_cast<int>(length))) return truncated();
          AppendVarint(out, tag);
          AppendVarint(out, length);
          out->append(bytes);
        }
        break;
      }
      default:
        return absl::InvalidArgumentError(absl::StrCat("wire type ", wire, " of field ", field,
                                                       " of ", MessageName(message),
                                                       " is not one ONNX uses"));
    }
  }
}

absl::StatusOr<std::string> Strip(google::protobuf::io::ZeroCopyInputStream* stream) {
  CodedInputStream in(stream);
  in.SetTotalBytesLimit(INT_MAX);
  std::string out;
  if (absl::Status s = Copy(&in, Message::kModel, 0, &out); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::string> StripFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  absl::StatusOr<std::string> stripped;
  int error = 0;
  {
    google::protobuf::io::FileInputStream stream(fd, 1 << 20);
    stripped = Strip(&stream);
    error = stream.GetErrno();
  }
  ::close(fd);
  if (error != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot read: ", std::strerror(error)));
  }
  return stripped;
}

absl::StatusOr<std::optional<int64_t>> InputChannels(const absl::StatusOr<std::string>& stripped) {
  if (!stripped.ok()) return stripped.status();
  onnx::ModelProto model;
  if (!model.ParseFromString(*stripped)) {
    return absl::InvalidArgumentError("not an ONNX model (protobuf parse failed)");
  }
  std::set<std::string> constants;
  for (const onnx::TensorProto& init : model.graph().initializer()) constants.insert(init.name());
  for (const onnx::ValueInfoProto& input : model.graph().input()) {
    if (constants.count(input.name()) != 0) continue;
    const auto& shape = input.type().tensor_type().shape();
    if (shape.dim_size() >= 2 && shape.dim(1).has_dim_value()) return shape.dim(1).dim_value();
    return std::nullopt;
  }
  return std::nullopt;
}

absl::Status CheckStripped(const absl::StatusOr<std::string>& stripped, absl::string_view name) {
  if (!stripped.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': not an ONNX model (",
                                                   stripped.status().message(), ")"));
  }
  onnx::ModelProto model;
  if (!model.ParseFromString(*stripped)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': not an ONNX model (protobuf parse failed)"));
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name, "': has no graph"));
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': the ONNX checker rejected it: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckOnnxModelFile(const std::string& path, absl::string_view name) {
  absl::StatusOr<std::string> stripped = StripFile(path);
  if (absl::IsInternal(stripped.status())) return stripped.status();  // our file, not the model
  return CheckStripped(stripped, name);
}

absl::StatusOr<std::optional<int64_t>> ModelInputChannels(const std::string& path) {
  return InputChannels(StripFile(path));
}

absl::StatusOr<std::optional<int64_t>> ModelInputChannelsOfBytes(absl::string_view bytes) {
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  return InputChannels(Strip(&stream));
}

absl::Status CheckOnnxModelBytes(absl::string_view bytes, absl::string_view name) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': larger than protobuf's 2 GiB limit"));
  }
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  return CheckStripped(Strip(&stream), name);
}

absl::StatusOr<std::string> StripTensorDataForTest(absl::string_view bytes) {
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  return Strip(&stream);
}

}  // namespace bitsweep::server
