#include "server/service/grpc_metrics.h"

#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace bitsweep::server {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

// grpc::StatusCode 0..16 as Go's codes.Code.String() spells them (go-grpc-prometheus's labels).
constexpr std::array<const char*, 17> kCodeNames = {
    "OK",           "Canceled",           "Unknown",           "InvalidArgument",
    "DeadlineExceeded", "NotFound",       "AlreadyExists",     "PermissionDenied",
    "ResourceExhausted", "FailedPrecondition", "Aborted",      "OutOfRange",
    "Unimplemented", "Internal",          "Unavailable",       "DataLoss",
    "Unauthenticated"};

const char* TypeName(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY: return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING: return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING: return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING: return "bidi_stream";
  }
  return "unary";
}

// Latencies from sub-millisecond reads to Lease long-polls (seconds) and watch streams.
const prometheus::Histogram::BucketBoundaries kBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};

struct MethodMetrics {
  prometheus::Counter* started = nullptr;
  prometheus::Counter* received = nullptr;
  prometheus::Counter* sent = nullptr;
  prometheus::Histogram* seconds = nullptr;
  std::array<prometheus::Counter*, kCodeNames.size()> handled{};
};

class Metrics {
 public:
  explicit Metrics(prometheus::Registry* registry)
      : started_(prometheus::BuildCounter()
                     .Name("grpc_server_started_total")
                     .Help("Total number of RPCs started on the server.")
                     .Register(*registry)),
        handled_(prometheus::BuildCounter()
                     .Name("grpc_server_handled_total")
                     .Help("Total number of RPCs completed on the server, regardless of success "
                           "or failure.")
                     .Register(*registry)),
        received_(prometheus::BuildCounter()
                      .Name("grpc_server_msg_received_total")
                      .Help("Total number of RPC stream messages received on the server.")
                      .Register(*registry)),
        sent_(prometheus::BuildCounter()
                  .Name("grpc_server_msg_sent_total")
                  .Help("Total number of gRPC stream messages sent by the server.")
                  .Register(*registry)),
        seconds_(prometheus::BuildHistogram()
                     .Name("grpc_server_handling_seconds")
                     .Help("Histogram of response latency (seconds) of gRPC that had been "
                           "application-level handled by the server.")
                     .Register(*registry)) {}

  // `method`: "/package.Service/Method".
  MethodMetrics* Get(absl::string_view method, const char* type) {
    absl::MutexLock lock(&mu_);
    auto it = methods_.find(method);
    if (it != methods_.end()) return &it->second;
    const size_t slash = method.rfind('/');
    const std::string service(slash == absl::string_view::npos || slash == 0
                                  ? absl::string_view("unknown")
                                  : method.substr(1, slash - 1));
    const std::string name(slash == absl::string_view::npos ? method : method.substr(slash + 1));
    const prometheus::Labels labels = {
        {"grpc_type", type}, {"grpc_service", service}, {"grpc_method", name}};
    MethodMetrics m;
    m.started = &started_.Add(labels);
    m.received = &received_.Add(labels);
    m.sent = &sent_.Add(labels);
    m.seconds = &seconds_.Add(labels, kBuckets);
    for (size_t code = 0; code < kCodeNames.size(); ++code) {
      prometheus::Labels with_code = labels;
      with_code["grpc_code"] = kCodeNames[code];
      m.handled[code] = &handled_.Add(with_code);
    }
    return &methods_.emplace(std::string(method), m).first->second;
  }

 private:
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& received_;
  prometheus::Family<prometheus::Counter>& sent_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  absl::Mutex mu_;
  std::map<std::string, MethodMetrics, std::less<>> methods_ ABSL_GUARDED_BY(mu_);
};

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MetricsInterceptor(MethodMetrics* metrics) : metrics_(metrics), start_(absl::Now()) {
    metrics_->started->Increment();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      metrics_->received->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      metrics_->sent->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const int code = static_cast<int>(methods->GetSendStatus().error_code());
      metrics_->handled[code >= 0 && code < static_cast<int>(kCodeNames.size()) ? code : 2]
          ->Increment();
      metrics_->seconds->Observe(absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  MethodMetrics* const metrics_;
  const absl::Time start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(std::shared_ptr<Metrics> metrics)
      : metrics_(std::move(metrics)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_->Get(info->method(), TypeName(info->type())));
  }

 private:
  std::shared_ptr<Metrics> metrics_;
};

const char* DescriptorType(const google::protobuf::MethodDescriptor& method) {
  if (method.client_streaming()) {
    return method.server_streaming() ? "bidi_stream" : "client_stream";
  }
  return method.server_streaming() ? "server_stream" : "unary";
}

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeGrpcMetricsInterceptors(prometheus::Registry* registry,
                            const std::vector<std::string>& services) {
  // The server owns the factory, which owns the metrics; every call (and its interceptor) ends
  // before the server is destroyed.
  auto metrics = std::make_shared<Metrics>(registry);
  for (const std::string& service : services) {
    if (service == "grpc.health.v1.Health") {
      metrics->Get("/grpc.health.v1.Health/Check", "unary");
      metrics->Get("/grpc.health.v1.Health/Watch", "server_stream");
      continue;
    }
    const google::protobuf::ServiceDescriptor* descriptor =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    if (descriptor == nullptr) continue;
    for (int i = 0; i < descriptor->method_count(); ++i) {
      const google::protobuf::MethodDescriptor& method = *descriptor->method(i);
      metrics->Get("/" + service + "/" + method.name(), DescriptorType(method));
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<MetricsInterceptorFactory>(std::move(metrics)));
  return factories;
}

}  // namespace bitsweep::server
