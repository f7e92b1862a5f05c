// The coordinator's gRPC services: thin layers over server::Coordinator (the domain class), plus
// the server that hosts them with the standard health service and reflection.
//
//   ServerOptions o{.listen = "0.0.0.0:50051", .client_token = "...", .worker_token = "..."};
//   ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
//                    CoordinatorServer::Start(coordinator.get(), o));
//   printf("listening on port %d\n", server->port());
//   server->Wait();   // or Shutdown()
#ifndef BITSWEEP_SERVER_SERVICE_SERVICES_H_
#define BITSWEEP_SERVER_SERVICE_SERVICES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "server/coordinator/coordinator.h"

namespace bitsweep::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  // Bearer tokens ("authorization: Bearer T" metadata). Empty: that side is not checked.
  std::string client_token;  // Explorer
  std::string worker_token;  // WorkerService
  // PEM files; both empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // gRPC server metrics (grpc_server_*, grpc_metrics.h) are registered here when set. Not owned.
  prometheus::Registry* metrics = nullptr;
};

class CoordinatorServer {
 public:
  // The coordinator must outlive the server.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(Coordinator* coordinator,
                                                                  const ServerOptions& options);
  ~CoordinatorServer();

  int port() const { return port_; }
  // Ends open streams (WatchSweep) and stops accepting calls.
  void Shutdown();
  void Wait();

 private:
  CoordinatorServer() = default;
  struct Services;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_SERVICE_SERVICES_H_
