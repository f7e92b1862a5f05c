#include "client/health_command.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/explorer_client.h"
#include "common/status_macros.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(std::string, tls_ca);

ABSL_FLAG(int32_t, timeout_seconds, 5, "give up after this many seconds");

namespace bitsweep::cli {

absl::Status HealthCommand() {
  const int timeout = absl::GetFlag(FLAGS_timeout_seconds);
  if (timeout < 1) return absl::InvalidArgumentError("--timeout-seconds must be >= 1");
  ConnectOptions options;
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  ASSIGN_OR_RETURN(std::unique_ptr<ExplorerClient> client,
                   ExplorerClient::Connect(absl::GetFlag(FLAGS_server), options));

  // HealthCheckRequest{service: ""} serializes to no bytes; the answer is
  // HealthCheckResponse{status = 1 (SERVING)}: field 1, varint.
  grpc::GenericStub stub(client->channel());
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout));
  context.set_wait_for_ready(true);  // a server still starting answers within the timeout
  grpc::ByteBuffer request;
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(absl::GetFlag(FLAGS_server), ": ",
                                               status.error_message(), " (gRPC code ",
                                               static_cast<int>(status.error_code()), ")"));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("unreadable health answer");
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // Status values: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN (absent field: 0).
  const int value = bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  constexpr const char* kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  const char* name = value >= 0 && value <= 3 ? kNames[value] : "UNKNOWN";
  if (value != 1) {
    return absl::UnavailableError(absl::StrCat(absl::GetFlag(FLAGS_server), " is ", name));
  }
  std::printf("%s: SERVING\n", absl::GetFlag(FLAGS_server).c_str());
  return absl::OkStatus();
}

}  // namespace bitsweep::cli
