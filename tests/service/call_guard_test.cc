// The coordinator's gRPC server in process (CoordinatorServer over a real Coordinator): server
// reflection needs a bearer token when tokens are on, health does not, and failing calls are
// logged to stderr with method, code and message (server/service/call_guard.h, common/log.h).
#include "server/service/call_guard.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "bitsweep/v1/explorer.grpc.pb.h"
#include "common/clock.h"
#include "common/log.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/coordinator/coordinator.h"
#include "server/service/services.h"
#include "tests/coordinator/test_util.h"

namespace bitsweep::server {
namespace {

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

class CallGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.db_path = testing::TempDbPath("guard");
    options.clock = &clock_;
    coordinator_ = *Coordinator::Open(options);
    ServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.client_token = "client-secret";
    server_options.worker_token = "worker-secret";
    server_ = *CoordinatorServer::Start(coordinator_.get(), server_options);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
  }

  // One list_services request on the reflection stream; the status and the answer's bytes.
  std::pair<grpc::Status, std::string> ListServices(const std::string& token) {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue queue;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    auto step = [&queue] {
      void* tag = nullptr;
      bool ok = false;
      EXPECT_TRUE(queue.Next(&tag, &ok));
      return ok;
    };
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
        &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
    call->StartCall(reinterpret_cast<void*>(1));
    step();
    // ServerReflectionRequest{list_services: ""}: field 7, length-delimited, empty.
    const std::string request_bytes("\x3a\x00", 2);
    grpc::Slice slice(request_bytes);
    call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
    step();
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(3));
    const bool got = step();
    call->WritesDone(reinterpret_cast<void*>(4));
    step();
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    step();
    queue.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (queue.Next(&tag, &ok)) {
    }
    return {status, got ? Bytes(response) : std::string()};
  }

  RealClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(CallGuardTest, ReflectionNeedsEitherTokenWhenTokensAreOn) {
  for (const std::string token : {"client-secret", "worker-secret"}) {
    auto [status, answer] = ListServices(token);
    EXPECT_TRUE(status.ok()) << token << ": " << status.error_message();
    EXPECT_NE(answer.find("bitsweep.v1.Explorer"), std::string::npos) << token;
    EXPECT_NE(answer.find("bitsweep.v1.WorkerService"), std::string::npos) << token;
  }
  for (const std::string token : {"", "wrong"}) {
    ::testing::internal::CaptureStderr();
    auto [status, answer] = ListServices(token);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << "'" << token << "'";
    EXPECT_EQ(answer.find("bitsweep.v1.Explorer"), std::string::npos) << "'" << token << "'";
    EXPECT_NE(log.find("ServerReflectionInfo refused: reflection needs a bearer token"),
              std::string::npos)
        << log;
  }
}

TEST_F(CallGuardTest, HealthAnswersWithoutAToken) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Slice empty;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                                    grpc::ByteBuffer(&empty, 1), &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(queue.Next(&tag, &ok));
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Bytes(response), std::string("\x08\x01", 2));  // status: SERVING
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
}

TEST_F(CallGuardTest, FailingCallsAreLoggedWithMethodCodeAndMessage) {
  auto stub = v1::Explorer::NewStub(channel_);
  ::testing::internal::CaptureStderr();
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer client-secret");
    v1::GetSweepRequest request;
    request.set_sweep_id(987);
    v1::Sweep sweep;
    EXPECT_EQ(stub->GetSweep(&context, request, &sweep).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;  // no token
    v1::ListSweepsRequest request;
    v1::ListSweepsResponse response;
    EXPECT_EQ(stub->ListSweeps(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;  // a call that succeeds is not logged
    context.AddMetadata("authorization", "Bearer client-secret");
    v1::ListSweepsRequest request;
    v1::ListSweepsResponse response;
    EXPECT_TRUE(stub->ListSweeps(&context, request, &response).ok());
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find(" W coordinator: /bitsweep.v1.Explorer/GetSweep failed: NOT_FOUND: "),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("987"), std::string::npos) << log;
  EXPECT_NE(log.find(" W coordinator: /bitsweep.v1.Explorer/ListSweeps failed: UNAUTHENTICATED: "),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("\n", log.find("UNAUTHENTICATED")) + 1, log.size())
      << "one line per failing call, none for the successful one:\n"
      << log;
}

TEST(LogTest, LineHasUtcMillisecondsLevelComponentAndMessage) {
  const absl::Time time = absl::FromCivil(absl::CivilSecond(2026, 12, 3, 13, 1, 2),
                                          absl::UTCTimeZone()) +
                          absl::Milliseconds(45);
  EXPECT_EQ(FormatLogLine(time, LogLevel::kWarning, "worker", "Report failed"),
            "2026-12-03T13:01:02.045Z W worker: Report failed");
  EXPECT_EQ(FormatLogLine(time, LogLevel::kInfo, "coordinator", "up"),
            "2026-12-03T13:01:02.045Z I coordinator: up");
  EXPECT_EQ(FormatLogLine(time, LogLevel::kError, "c", "x"), "2026-12-03T13:01:02.045Z E c: x");
}

}  // namespace
}  // namespace bitsweep::server
