// `bitsweep health --server ADDR [--tls_ca PEM] [--timeout_seconds 5]`: asks the server's
// standard gRPC health service (grpc.health.v1.Health/Check, service "") whether it is SERVING;
// exit status 0 if so, 1 otherwise, with the reason. The Docker image's HEALTHCHECK runs it.
#ifndef BITSWEEP_CLIENT_HEALTH_COMMAND_H_
#define BITSWEEP_CLIENT_HEALTH_COMMAND_H_

#include "absl/status/status.h"

namespace bitsweep::cli {

absl::Status HealthCommand();

}  // namespace bitsweep::cli

#endif  // BITSWEEP_CLIENT_HEALTH_COMMAND_H_
