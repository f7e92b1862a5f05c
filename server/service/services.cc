#include "server/service/services.h"

#include <atomic>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitsweep/v1/explorer.grpc.pb.h"
#include "bitsweep/v1/worker.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "common/file_util.h"
#include "common/grpc_status.h"
#include "server/service/call_guard.h"
#include "server/service/grpc_metrics.h"

namespace bitsweep::server {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

// The bearer token check, shared by both services. Constant-time comparison is not needed for
// the threat model (tokens on a private network) but costs nothing.
grpc::Status CheckToken(grpc::ServerContext* context, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this coordinator requires a bearer token (--token)");
  }
  const std::string value(it->second.data(), it->second.size());
  const std::string expected = "Bearer " + token;
  bool equal = value.size() == expected.size();
  unsigned char diff = 0;
  for (size_t i = 0; equal && i < value.size(); ++i) diff |= value[i] ^ expected[i];
  if (!equal || diff != 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  return grpc::Status::OK;
}

// Every unary method: check the token, call the domain, convert its status at this boundary.
template <typename T, typename Call>
grpc::Status Unary(grpc::ServerContext* context, const std::string& token, T* response,
                   Call&& call) {
  if (grpc::Status s = CheckToken(context, token); !s.ok()) return s;
  absl::StatusOr<T> result = call();
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

bool IsFinal(v1::SweepState s) {
  return s == v1::SWEEP_SUCCEEDED || s == v1::SWEEP_FAILED || s == v1::SWEEP_CANCELLED;
}

class ExplorerService final : public v1::Explorer::Service {
 public:
  ExplorerService(Coordinator* coordinator, std::string token, const std::atomic<bool>* stopping)
      : coordinator_(coordinator), token_(std::move(token)), stopping_(stopping) {}

  grpc::Status UploadModel(grpc::ServerContext* context,
                           grpc::ServerReader<v1::UploadModelRequest>* reader,
                           v1::UploadModelResponse* response) override {
    if (grpc::Status s = CheckToken(context, token_); !s.ok()) return s;
    v1::UploadModelRequest chunk;
    std::string expected;
    std::unique_ptr<ModelUpload> upload;
    // Each chunk goes straight to the staging file: the model is never whole in memory.
    while (reader->Read(&chunk)) {
      if (upload == nullptr) {
        expected = chunk.expected_sha256();
        absl::StatusOr<std::unique_ptr<ModelUpload>> started =
            coordinator_->StartModelUpload(chunk.name());
        if (!started.ok()) return ToGrpcStatus(started.status());
        upload = *std::move(started);
      }
      if (absl::Status appended = upload->Append(chunk.chunk()); !appended.ok()) {
        return ToGrpcStatus(appended);
      }
    }
    if (upload == nullptr) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "UploadModel received no chunks");
    }
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled by the client");
    }
    absl::StatusOr<v1::UploadModelResponse> stored =
        coordinator_->FinishModelUpload(std::move(upload), expected);
    if (!stored.ok()) return ToGrpcStatus(stored.status());
    *response = *std::move(stored);
    return grpc::Status::OK;
  }

  grpc::Status SubmitSweep(grpc::ServerContext* context, const v1::SubmitSweepRequest* request,
                           v1::Sweep* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->SubmitSweep(request->spec()); });
  }

  grpc::Status GetSweep(grpc::ServerContext* context, const v1::GetSweepRequest* request,
                        v1::Sweep* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->GetSweep(request->sweep_id()); });
  }

  grpc::Status ListSweeps(grpc::ServerContext* context, const v1::ListSweepsRequest* request,
                          v1::ListSweepsResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->ListSweeps(*request); });
  }

  grpc::Status ResumeSweep(grpc::ServerContext* context, const v1::ResumeSweepRequest* request,
                           v1::Sweep* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->ResumeSweep(request->sweep_id()); });
  }

  grpc::Status CancelSweep(grpc::ServerContext* context, const v1::CancelSweepRequest* request,
                           v1::Sweep* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->CancelSweep(request->sweep_id()); });
  }

  grpc::Status InvalidateTrial(grpc::ServerContext* context,
                               const v1::InvalidateTrialRequest* request,
                               v1::InvalidateTrialResponse* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->InvalidateTrial(request->trial_id()); });
  }

  // One event now, then one per change of the sweep, until it is final or the client leaves.
  // Waits in one-second slices so a cancelled call or a shutdown ends the stream promptly.
  grpc::Status WatchSweep(grpc::ServerContext* context, const v1::WatchSweepRequest* request,
                          grpc::ServerWriter<v1::SweepEvent>* writer) override {
    if (grpc::Status s = CheckToken(context, token_); !s.ok()) return s;
    v1::GetFrontierRequest frontier_request;
    frontier_request.set_sweep_id(request->sweep_id());
    *frontier_request.mutable_objectives() = request->objectives();
    int64_t seen = 0;
    std::string last_frontier;
    std::string last_stage;
    int64_t last_succeeded = -1;  // so the first event carries the frontier
    while (!context->IsCancelled() && !stopping_->load()) {
      absl::StatusOr<int64_t> version =
          coordinator_->WaitForSweepChange(request->sweep_id(), seen, absl::Seconds(1));
      if (!version.ok()) return ToGrpcStatus(version.status());
      if (*version == seen) continue;
      seen = *version;
      absl::StatusOr<v1::Sweep> sweep = coordinator_->GetSweep(request->sweep_id());
      if (!sweep.ok()) return ToGrpcStatus(sweep.status());
      v1::SweepEvent event;
      *event.mutable_sweep() = *sweep;
      // The frontier can only change when a result lands (the baseline lands as one too), and
      // computing it reads every result of the sweep: not on every progress tick.
      if (sweep->trials_succeeded() != last_succeeded) {
        last_succeeded = sweep->trials_succeeded();
        absl::StatusOr<v1::Frontier> frontier = coordinator_->GetFrontier(frontier_request);
        if (!frontier.ok()) return ToGrpcStatus(frontier.status());
        std::string serialized;
        frontier->SerializeToString(&serialized);
        if (serialized != last_frontier) {
          *event.mutable_frontier() = *frontier;
          last_frontier = std::move(serialized);
        }
      }
      if (sweep->stage() != last_stage) {
        event.set_message(absl::StrCat("stage ", sweep->stage()));
        last_stage = sweep->stage();
      }
      if (!writer->Write(event)) break;  // the client went away
      if (IsFinal(sweep->state())) break;
    }
    if (stopping_->load() && !context->IsCancelled()) {
      // Retryable: a restarted coordinator serves the same sweep (clients reconnect).
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    }
    return grpc::Status::OK;
  }

  grpc::Status ListTrials(grpc::ServerContext* context, const v1::ListTrialsRequest* request,
                          v1::ListTrialsResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->ListTrials(*request); });
  }

  grpc::Status GetFrontier(grpc::ServerContext* context, const v1::GetFrontierRequest* request,
                           v1::Frontier* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->GetFrontier(*request); });
  }

  grpc::Status ExportConfig(grpc::ServerContext* context, const v1::ExportConfigRequest* request,
                            v1::ExportConfigResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->ExportConfig(*request); });
  }

 private:
  Coordinator* coordinator_;
  const std::string token_;
  const std::atomic<bool>* stopping_;
};

class WorkerService final : public v1::WorkerService::Service {
 public:
  WorkerService(Coordinator* coordinator, std::string token)
      : coordinator_(coordinator), token_(std::move(token)) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->RegisterWorker(*request); });
  }

  grpc::Status Lease(grpc::ServerContext* context, const v1::LeaseRequest* request,
                     v1::LeaseResponse* response) override {
    return Unary(context, token_, response, [&]() -> absl::StatusOr<v1::LeaseResponse> {
      absl::StatusOr<v1::LeaseResponse> leased = coordinator_->Lease(*request);
      if (!leased.ok() || leased->trials().empty() || !context->IsCancelled()) return leased;
      // The caller left during the long poll (a dead worker): its trials go back at once
      // instead of waiting out the lease.
      v1::ReturnLeasesRequest back;
      back.set_worker_id(request->worker_id());
      for (const v1::LeasedTrial& trial : leased->trials()) back.add_lease_ids(trial.lease_id());
      absl::StatusOr<v1::ReturnLeasesResponse> returned = coordinator_->ReturnLeases(back);
      if (!returned.ok()) return returned.status();
      return absl::CancelledError("the caller left; its leases were returned");
    });
  }

  grpc::Status ReturnLeases(grpc::ServerContext* context, const v1::ReturnLeasesRequest* request,
                            v1::ReturnLeasesResponse* response) override {
    return Unary(context, token_, response,
                 [&] { return coordinator_->ReturnLeases(*request); });
  }

  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->Heartbeat(*request); });
  }

  grpc::Status Report(grpc::ServerContext* context, const v1::ReportRequest* request,
                      v1::ReportResponse* response) override {
    return Unary(context, token_, response, [&] { return coordinator_->Report(*request); });
  }

  grpc::Status FetchModel(grpc::ServerContext* context, const v1::FetchModelRequest* request,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override {
    if (grpc::Status s = CheckToken(context, token_); !s.ok()) return s;
    bool first = true;
    absl::Status read = coordinator_->ReadModel(
        request->model_hash(), kChunkBytes, [&](int64_t total, absl::string_view data) {
          v1::ModelChunk chunk;
          if (first) chunk.set_total_size(total);
          first = false;
          chunk.set_data(std::string(data));
          return writer->Write(chunk);  // false: the worker went away
        });
    if (!read.ok()) return ToGrpcStatus(read);
    return grpc::Status::OK;
  }

 private:
  Coordinator* coordinator_;
  const std::string token_;
};


}  // namespace

struct CoordinatorServer::Services {
  std::atomic<bool> stopping{false};
  std::unique_ptr<ExplorerService> explorer;
  std::unique_ptr<WorkerService> worker;
};

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const ServerOptions& options) {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("TLS needs both a certificate and a key file");
    }
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    absl::StatusOr<std::string> cert = ReadFileToString(options.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFileToString(options.tls_key_file);
    if (!key.ok()) return key.status();
    pair.cert_chain = *cert;
    pair.private_key = *key;
    ssl.pem_key_cert_pairs.push_back(pair);
    credentials = grpc::SslServerCredentials(ssl);
  }
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->services_ = std::make_unique<Services>();
  server->services_->explorer = std::make_unique<ExplorerService>(coordinator, options.client_token,
                                                                  &server->services_->stopping);
  server->services_->worker = std::make_unique<WorkerService>(coordinator, options.worker_token);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.RegisterService(server->services_->explorer.get());
  builder.RegisterService(server->services_->worker.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  if (options.metrics != nullptr) {
    interceptors = MakeGrpcMetricsInterceptors(
        options.metrics,
        {"bitsweep.v1.Explorer", "bitsweep.v1.WorkerService", "grpc.health.v1.Health"});
  }
  interceptors.push_back(MakeCallGuardInterceptorFactory(
      {.tokens = {options.client_token, options.worker_token}}));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (address in use or invalid?)"));
  }
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

void CoordinatorServer::Shutdown() {
  if (server_ == nullptr) return;
  services_->stopping = true;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  server_.reset();
}

void CoordinatorServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace bitsweep::server
