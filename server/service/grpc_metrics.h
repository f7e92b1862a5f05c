// gRPC server metrics through a server interceptor, with the names and labels of the
// grpc-ecosystem exporters (go-grpc-prometheus / go-grpc-middleware), so that existing gRPC
// dashboards and alerts work on bitsweep-coordinator unchanged:
//
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}   codes as Go names
//   grpc_server_msg_received_total / grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}          histogram
//
// Every method of the services named at construction is pre-initialised (all codes included),
// so rates and error ratios read 0 before the first call; other methods appear on first use.
//
//   builder.experimental().SetInterceptorCreators(MakeGrpcMetricsInterceptors(
//       registry, {"bitsweep.v1.Explorer", "bitsweep.v1.WorkerService"}));
#ifndef BITSWEEP_SERVER_SERVICE_GRPC_METRICS_H_
#define BITSWEEP_SERVER_SERVICE_GRPC_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/support/server_interceptor.h"

namespace prometheus {
class Registry;
}

namespace bitsweep::server {

// `services`: full names of services whose methods to pre-initialise, looked up in the generated
// protobuf descriptor pool (grpc.health.v1.Health is known without it).
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeGrpcMetricsInterceptors(prometheus::Registry* registry,
                            const std::vector<std::string>& services);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_SERVICE_GRPC_METRICS_H_
