// A client of the coordinator's Explorer API with Abseil statuses: what `bitsweep submit`,
// `watch`, `frontier`, ... and `bitsweep local` use to talk to a coordinator.
//
//   ASSIGN_OR_RETURN(auto client, ExplorerClient::Connect("127.0.0.1:50051", {}));
//   ASSIGN_OR_RETURN(std::string hash, client->UploadModelFile("lenet5.onnx"));
//   ASSIGN_OR_RETURN(v1::Sweep sweep, client->Submit(spec));
//
// Server errors come back with their gRPC code and message, prefixed with the server address
// when the server could not be reached.
#ifndef BITSWEEP_CLIENT_EXPLORER_CLIENT_H_
#define BITSWEEP_CLIENT_EXPLORER_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bitsweep/v1/explorer.grpc.pb.h"
#include "grpcpp/channel.h"

namespace bitsweep::cli {

struct ConnectOptions {
  std::string token;        // bearer token, when the coordinator requires one
  std::string tls_ca_file;  // PEM roots: connect with TLS
};

class ExplorerClient {
 public:
  static absl::StatusOr<std::unique_ptr<ExplorerClient>> Connect(const std::string& address,
                                                                 const ConnectOptions& options);

  // Uploads the file in 1 MiB chunks; returns its content hash.
  absl::StatusOr<std::string> UploadModelFile(const std::string& path);
  absl::StatusOr<v1::Sweep> Submit(const v1::SweepSpec& spec);
  absl::StatusOr<v1::Sweep> GetSweep(int64_t id);
  absl::StatusOr<v1::ListSweepsResponse> ListSweeps(const v1::ListSweepsRequest& request);
  absl::StatusOr<v1::Sweep> Cancel(int64_t id);
  absl::StatusOr<v1::Sweep> Resume(int64_t id);
  absl::StatusOr<v1::InvalidateTrialResponse> InvalidateTrial(int64_t trial_id);
  absl::StatusOr<v1::ListTrialsResponse> ListTrials(const v1::ListTrialsRequest& request);
  absl::StatusOr<v1::Frontier> GetFrontier(const v1::GetFrontierRequest& request);
  absl::StatusOr<v1::ExportConfigResponse> Export(const v1::ExportConfigRequest& request);
  // Calls on_event for every event until the sweep is final, the stream ends, or on_event
  // returns false.
  absl::Status Watch(const v1::WatchSweepRequest& request,
                     const std::function<bool(const v1::SweepEvent&)>& on_event);
  // The connection (TLS as configured), for other services on the same server (health).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  ExplorerClient(std::string address, ConnectOptions options,
                 std::shared_ptr<grpc::Channel> channel);
  void Prepare(grpc::ClientContext* context) const;
  absl::Status Check(const grpc::Status& status) const;

  std::string address_;
  ConnectOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Explorer::Stub> stub_;
};

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_EXPLORER_CLIENT_H_
