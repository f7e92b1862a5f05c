#include "server/service/call_guard.h"

#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "grpcpp/server_context.h"

namespace bitsweep::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

bool IsServerFault(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return true;
    default:
      return false;
  }
}

class CallGuard : public grpc::experimental::Interceptor {
 public:
  CallGuard(grpc::experimental::ServerRpcInfo* info, const CallGuardOptions* options)
      : info_(info), options_(options) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA) &&
        NeedsToken() && !HasToken(*methods->GetRecvInitialMetadata())) {
      Log(LogLevel::kWarning, options_->component,
          absl::StrCat(info_->method(), " refused: reflection needs a bearer token (peer ",
                       Peer(), ")"));
      info_->server_context()->TryCancel();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
        Log(IsServerFault(status.error_code()) ? LogLevel::kError : LogLevel::kWarning,
            options_->component,
            absl::StrCat(info_->method(), " failed: ", absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())), ": ",
                         status.error_message(), " (peer ", Peer(), ")"));
      }
    }
    methods->Proceed();
  }

 private:
  bool NeedsToken() const {
    if (!absl::StartsWith(info_->method(), "/grpc.reflection.")) return false;
    for (const std::string& token : options_->tokens) {
      if (!token.empty()) return true;
    }
    return false;
  }

  bool HasToken(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
    auto [begin, end] = metadata.equal_range("authorization");
    for (auto it = begin; it != end; ++it) {
      const absl::string_view value(it->second.data(), it->second.size());
      for (const std::string& token : options_->tokens) {
        if (!token.empty() && value == absl::StrCat("Bearer ", token)) return true;
      }
    }
    return false;
  }

  std::string Peer() const { return info_->server_context()->peer(); }

  grpc::experimental::ServerRpcInfo* const info_;
  const CallGuardOptions* const options_;
};

class CallGuardFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallGuardFactory(CallGuardOptions options) : options_(std::move(options)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallGuard(info, &options_);
  }

 private:
  const CallGuardOptions options_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeCallGuardInterceptorFactory(CallGuardOptions options) {
  return std::make_unique<CallGuardFactory>(std::move(options));
}

}  // namespace bitsweep::server
