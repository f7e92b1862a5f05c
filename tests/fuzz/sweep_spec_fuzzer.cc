// Fuzzes sweep-spec validation as the Explorer's SubmitSweep meets it: bytes -> SubmitSweepRequest
// -> Coordinator::SubmitSweep on a real (scratch) SQLite database holding one uploaded model,
// LeNet-5 from models/. A spec without a model_hash gets that model's hash, so that validation
// and the strategy's first planner step run; an accepted sweep is read back and cancelled.
// Properties: a refused spec is INVALID_ARGUMENT with a message; an accepted one reads back
// equal to what was submitted and cancels.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/stubs/logging.h"
#include "bitsweep/v1/explorer.pb.h"
#include "common/clock.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/coordinator/coordinator.h"
#include "tests/fuzz/fuzz_util.h"

namespace bitsweep::server {
namespace {

// A fresh database with the model uploaded; reopened now and then so that it stays small.
class Fixture {
 public:
  Coordinator& coordinator() {
    if (coordinator_ == nullptr || accepted_ >= kReopenAfter) Reopen();
    return *coordinator_;
  }
  const std::string& model_hash() const { return model_hash_; }
  void CountAccepted() { ++accepted_; }

 private:
  static constexpr int kReopenAfter = 200;

  void Reopen() {
    coordinator_.reset();
    const std::string db = fuzz::ScratchDir() + "/sweeps.db";
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
    CoordinatorOptions options;
    options.db_path = db;
    options.clock = &clock_;
    options.expiry_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Coordinator>> opened = Coordinator::Open(options);
    FUZZ_CHECK(opened.ok());
    coordinator_ = std::move(*opened);
    std::ifstream in(BITSWEEP_SOURCE_DIR "/models/lenet5.onnx", std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    absl::StatusOr<v1::UploadModelResponse> model =
        coordinator_->PutModel("lenet5.onnx", bytes.str(), "");
    FUZZ_CHECK(model.ok());
    model_hash_ = model->model_hash();
    accepted_ = 0;
  }

  RealClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
  std::string model_hash_;
  int accepted_ = 0;
};

}  // namespace
}  // namespace bitsweep::server

// Protobuf logs every string field with invalid UTF-8 it parses: not a finding, only noise.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bitsweep;
  static auto* fixture = new server::Fixture();
  v1::SubmitSweepRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  server::Coordinator& coordinator = fixture->coordinator();
  v1::SweepSpec spec = request.spec();
  if (spec.model_hash().empty()) spec.set_model_hash(fixture->model_hash());
  absl::StatusOr<v1::Sweep> sweep = coordinator.SubmitSweep(spec);
  if (!sweep.ok()) {
    if (sweep.status().code() != absl::StatusCode::kInvalidArgument ||
        sweep.status().message().empty()) {
      std::fprintf(stderr, "SubmitSweep: %s\n", sweep.status().ToString().c_str());
      FUZZ_CHECK(false);
    }
    return 0;
  }
  fixture->CountAccepted();
  FUZZ_CHECK(sweep->id() > 0);
  absl::StatusOr<v1::Sweep> stored = coordinator.GetSweep(sweep->id());
  FUZZ_CHECK(stored.ok());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(stored->spec(), spec));
  FUZZ_CHECK(coordinator.CancelSweep(sweep->id()).ok());
  return 0;
}
