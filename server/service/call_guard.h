// Per-call policy of the coordinator's gRPC server that the services' handlers cannot express,
// as a server interceptor:
// - Server reflection (grpc.reflection.*) answers only calls that carry one of the bearer tokens
//   when tokens are on: it lists every method and message of the API. A call without a valid
//   token is cancelled before the reflection service answers (the client sees CANCELLED; the
//   log line says why). The health service stays open for probes.
// - Every call that ends with a non-OK status is logged to stderr (common/log.h) with its method,
//   code, message and peer; server-side faults (INTERNAL, UNAVAILABLE, UNKNOWN, DATA_LOSS,
//   RESOURCE_EXHAUSTED) at level E, the caller's mistakes at level W. CANCELLED calls (the
//   caller went away, e.g. a watch that was closed) are not logged.
//
//   builder.experimental().SetInterceptorCreators(...factories...,
//       MakeCallGuardInterceptorFactory({.tokens = {client_token, worker_token}}));
#ifndef BITSWEEP_SERVER_SERVICE_CALL_GUARD_H_
#define BITSWEEP_SERVER_SERVICE_CALL_GUARD_H_

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/support/server_interceptor.h"

namespace bitsweep::server {

struct CallGuardOptions {
  // Bearer tokens any of which opens reflection; empty strings are ignored, and with none left
  // reflection is open to everyone (a coordinator without tokens).
  std::vector<std::string> tokens;
  std::string component = "coordinator";  // the log lines' component
};

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeCallGuardInterceptorFactory(CallGuardOptions options);

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_SERVICE_CALL_GUARD_H_
