#include "client/explorer_client.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"

namespace bitsweep::cli {

absl::StatusOr<std::unique_ptr<ExplorerClient>> ExplorerClient::Connect(
    const std::string& address, const ConnectOptions& options) {
  if (address.empty()) return absl::InvalidArgumentError("--server ADDR is required");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    absl::StatusOr<std::string> roots = ReadFileToString(options.tls_ca_file);
    if (!roots.ok()) return roots.status();
    ssl.pem_root_certs = *roots;
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, credentials, args);
  return std::unique_ptr<ExplorerClient>(new ExplorerClient(address, options, channel));
}

ExplorerClient::ExplorerClient(std::string address, ConnectOptions options,
                               std::shared_ptr<grpc::Channel> channel)
    : address_(std::move(address)),
      options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Explorer::NewStub(channel_)) {}

void ExplorerClient::Prepare(grpc::ClientContext* context) const {
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
}

absl::Status ExplorerClient::Check(const grpc::Status& status) const {
  absl::Status s = FromGrpcStatus(status);
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return absl::UnavailableError(
        absl::StrCat("coordinator at ", address_, " is unreachable: ", status.error_message()));
  }
  return s;
}

absl::StatusOr<std::string> ExplorerClient::UploadModelFile(const std::string& path) {
  // Read and sent a chunk at a time: a model of any size costs the client one chunk of memory.
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  grpc::ClientContext context;
  Prepare(&context);
  v1::UploadModelResponse response;
  auto writer = stub_->UploadModel(&context, &response);
  constexpr size_t kChunk = 1 << 20;
  std::string buffer(kChunk, '\0');
  bool first = true;
  while (first || in) {
    in.read(buffer.data(), static_cast<std::streamsize>(kChunk));
    if (in.bad()) {
      context.TryCancel();
      return absl::DataLossError(absl::StrCat(path, ": cannot read"));
    }
    const size_t got = static_cast<size_t>(in.gcount());
    if (got == 0 && !first) break;
    v1::UploadModelRequest request;
    if (first) request.set_name(path.substr(path.find_last_of('/') + 1));
    first = false;
    request.set_chunk(buffer.data(), got);
    if (!writer->Write(request)) break;  // the server ended the call: Finish says why
  }
  writer->WritesDone();
  absl::Status status = Check(writer->Finish());
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  return response.model_hash();
}

#define BITSWEEP_UNARY_CALL(method, request, Response) \
  grpc::ClientContext context;                          \
  Prepare(&context);                                    \
  Response response;                                    \
  absl::Status status = Check(stub_->method(&context, request, &response)); \
  if (!status.ok()) return status;                      \
  return response;

absl::StatusOr<v1::Sweep> ExplorerClient::Submit(const v1::SweepSpec& spec) {
  v1::SubmitSweepRequest request;
  *request.mutable_spec() = spec;
  BITSWEEP_UNARY_CALL(SubmitSweep, request, v1::Sweep)
}

absl::StatusOr<v1::Sweep> ExplorerClient::GetSweep(int64_t id) {
  v1::GetSweepRequest request;
  request.set_sweep_id(id);
  BITSWEEP_UNARY_CALL(GetSweep, request, v1::Sweep)
}

absl::StatusOr<v1::ListSweepsResponse> ExplorerClient::ListSweeps(
    const v1::ListSweepsRequest& request) {
  BITSWEEP_UNARY_CALL(ListSweeps, request, v1::ListSweepsResponse)
}

absl::StatusOr<v1::Sweep> ExplorerClient::Cancel(int64_t id) {
  v1::CancelSweepRequest request;
  request.set_sweep_id(id);
  BITSWEEP_UNARY_CALL(CancelSweep, request, v1::Sweep)
}

absl::StatusOr<v1::Sweep> ExplorerClient::Resume(int64_t id) {
  v1::ResumeSweepRequest request;
  request.set_sweep_id(id);
  BITSWEEP_UNARY_CALL(ResumeSweep, request, v1::Sweep)
}

absl::StatusOr<v1::InvalidateTrialResponse> ExplorerClient::InvalidateTrial(int64_t trial_id) {
  v1::InvalidateTrialRequest request;
  request.set_trial_id(trial_id);
  BITSWEEP_UNARY_CALL(InvalidateTrial, request, v1::InvalidateTrialResponse)
}

absl::StatusOr<v1::ListTrialsResponse> ExplorerClient::ListTrials(
    const v1::ListTrialsRequest& request) {
  BITSWEEP_UNARY_CALL(ListTrials, request, v1::ListTrialsResponse)
}

absl::StatusOr<v1::Frontier> ExplorerClient::GetFrontier(const v1::GetFrontierRequest& request) {
  BITSWEEP_UNARY_CALL(GetFrontier, request, v1::Frontier)
}

absl::StatusOr<v1::ExportConfigResponse> ExplorerClient::Export(
    const v1::ExportConfigRequest& request) {
  BITSWEEP_UNARY_CALL(ExportConfig, request, v1::ExportConfigResponse)
}

#undef BITSWEEP_UNARY_CALL

absl::Status ExplorerClient::Watch(const v1::WatchSweepRequest& request,
                                   const std::function<bool(const v1::SweepEvent&)>& on_event) {
  grpc::ClientContext context;
  Prepare(&context);
  auto reader = stub_->WatchSweep(&context, request);
  v1::SweepEvent event;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      context.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (status.error_code() == grpc::StatusCode::CANCELLED) return absl::OkStatus();
  return Check(status);
}

}  // namespace bitsweep::cli
