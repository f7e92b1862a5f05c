// Status conversion between Abseil (the domain and the engine) and gRPC (the wire), in one place
// so every service and client maps codes the same way.
//
//   return ToGrpcStatus(coordinator->GetSweep(id).status());
//   absl::Status s = FromGrpcStatus(stub->GetSweep(&ctx, req, &resp));
#ifndef BITSWEEP_COMMON_GRPC_STATUS_H_
#define BITSWEEP_COMMON_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace bitsweep {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace bitsweep

#endif  // BITSWEEP_COMMON_GRPC_STATUS_H_
