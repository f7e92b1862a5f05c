// SqliteCoordinator: the Coordinator over bitsweep_store. One mutex guards the connection and
// every in-memory cache. The hot worker calls (Lease attempts, Report, Heartbeat) go through a
// group commit in the style of leveldb's DBImpl::Write: callers queue, the first becomes the
// leader and runs every queued call in ONE transaction, each inside its own SAVEPOINT (a call
// that fails rolls back only itself), commits once and only then hands every caller its answer.
// The other calls are one transaction each. Effects outside the database (metrics, waking
// waiters, the frontier-metric cache) are collected per call while the transaction runs and
// applied only after it commits, so a rolled-back call leaves no trace anywhere.
#include "server/coordinator/coordinator.h"

#include <openssl/rand.h>

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/splitmix64.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "server/coordinator/dedup.h"
#include "server/coordinator/manifest.h"
#include "server/export/qdq.h"
#include "server/coordinator/metrics.h"
#include "server/coordinator/model_check.h"
#include "server/frontier/frontier.h"
#include "server/store/store.h"
#include "quant/config.h"

namespace bitsweep::server {
namespace {

using store::Blob;
using store::Database;
using store::Statement;
using store::Transaction;

// Database spelling of v1::TrialState and v1::SweepState (same numbering).
constexpr const char* kStateNames[] = {"", "queued", "running", "succeeded", "failed",
                                       "cancelled"};

int StateFromName(absl::string_view name) {
  for (int i = 1; i < 6; ++i) {
    if (name == kStateNames[i]) return i;
  }
  return 0;
}

const char* StateName(int state) { return state >= 1 && state <= 5 ? kStateNames[state] : ""; }

constexpr int kDefaultMaxAttempts = 3;
// Leases lost to dead or hung workers before a trial fails: more than reported errors, since a
// lost lease says little about the trial (see LostLeaseCap).
constexpr int64_t kMinLostLeaseCap = 10;
int64_t LostLeaseCap(int max_attempts) {
  return std::max<int64_t>(kMinLostLeaseCap, 3 * static_cast<int64_t>(max_attempts));
}
constexpr double kDefaultErrorMarginPp = 1.0;
constexpr int kMaxLeaseBatch = 64;
constexpr int kDefaultSweepPageSize = 50;
constexpr int kDefaultTrialPageSize = 100;
constexpr int kMaxPageSize = 1000;
// A page also ends once its entries reach this many bytes (the next entry goes to the next page),
// so that a list of large sweeps (1 MiB hardware profiles) stays far below the 64 MiB message
// limit.
constexpr size_t kMaxPageBytes = 8 << 20;
// A planner that keeps emitting steps whose trials are all cached would loop without bound.
constexpr int kMaxImmediateSteps = 1000;

std::string RandomHex(int bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    // OpenSSL's CSPRNG failing is near impossible; time-derived bytes still keep ids distinct
    // enough for leases (they are also prefixed with the trial id and attempt).
    int64_t now = absl::GetCurrentTimeNanos();
    for (int i = 0; i < bytes; ++i) raw[i] = static_cast<char>(now >> (8 * (i % 8)));
  }
  return absl::BytesToHexString(raw);
}

// The smallest top-1 within the margin: `top1 >= MarginThreshold(...)` is exactly
// frontier.h's WithinMargin (same expression, same tolerance), for SQL queries that take the
// threshold as a parameter. The SQL views and ListTrials spell the expression the same way.
double MarginThreshold(double baseline_top1, double error_margin_pp) {
  return baseline_top1 - error_margin_pp / 100.0 - 1e-9;
}

absl::StatusOr<int64_t> ParsePageToken(absl::string_view token) {
  if (token.empty()) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(token, &value) || value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: '", token, "' is not a token this server returned"));
  }
  return value;
}

absl::StatusOr<int> ResolvePageSize(int requested, int default_size) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be >= 0, got ", requested));
  }
  if (requested == 0) return default_size;
  return std::min(requested, kMaxPageSize);
}

// What a worker may report: every number in range, the totals the sums of the layers' parts
// (the cost model adds them up layer by layer), layer names unique. INVALID_ARGUMENT naming the
// field and value otherwise; nothing of a refused report is stored.
absl::Status CheckResult(const v1::TrialResult& r) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat("result.", field, ": ", value, " ", rule));
  };
  for (auto [field, value] : {std::pair{"top1", r.top1()}, std::pair{"top5", r.top5()}}) {
    if (!std::isfinite(value) || value < 0 || value > 1) {
      return bad(field, value, "is not an accuracy in [0, 1]");
    }
  }
  if (r.top5() < r.top1()) {
    return bad("top5", r.top5(), absl::StrCat("is below top1 ", r.top1()));
  }
  if (std::isfinite(r.loss()) && r.loss() < 0) return bad("loss", r.loss(), "is negative");
  if (r.has_top1_before_finetune() &&
      (!std::isfinite(r.top1_before_finetune()) || r.top1_before_finetune() < 0 ||
       r.top1_before_finetune() > 1)) {
    return bad("top1_before_finetune", r.top1_before_finetune(),
               "is not an accuracy in [0, 1]");
  }
  for (auto [field, value] :
       {std::pair{"samples", r.samples()}, std::pair{"size_bits", r.size_bits()},
        std::pair{"peak_activation_bits", r.peak_activation_bits()},
        std::pair{"activation_bits", r.activation_bits()}, std::pair{"bops", r.bops()},
        std::pair{"macs", r.macs()}}) {
    if (value < 0) return bad(field, value, "is negative");
  }
  for (auto [field, value] : {std::pair{"energy_pj", r.energy_pj()},
                              std::pair{"wall_seconds", r.wall_seconds()},
                              std::pair{"images_per_second", r.images_per_second()}}) {
    if (!std::isfinite(value) || value < 0) return bad(field, value, "is not finite and >= 0");
  }
  if (r.layers_size() == 0) return absl::OkStatus();
  int64_t macs = 0, weight_bits = 0, activation_bits = 0, bops = 0, peak = 0;
  double energy = 0;
  std::set<absl::string_view> names;
  for (int i = 0; i < r.layers_size(); ++i) {
    const v1::LayerResult& layer = r.layers(i);
    const std::string field = absl::StrCat("layers[", i, "]");
    if (layer.name().empty()) return bad(field, "''", "has no name");
    if (!names.insert(layer.name()).second) {
      return bad(field, absl::StrCat("'", layer.name(), "'"), "repeats a layer name");
    }
    for (auto [part, value] :
         {std::pair{".macs", layer.macs()}, std::pair{".weight_count", layer.weight_count()},
          std::pair{".weight_bits", layer.weight_bits()},
          std::pair{".activation_bits", layer.activation_bits()},
          std::pair{".bops", layer.bops()}}) {
      if (value < 0) return bad(absl::StrCat(field, part), value, "is negative");
    }
    if (!std::isfinite(layer.energy_pj()) || layer.energy_pj() < 0) {
      return bad(absl::StrCat(field, ".energy_pj"), layer.energy_pj(),
                 "is not finite and >= 0");
    }
    // Sums in unsigned arithmetic: forged huge values wrap instead of overflowing (UB).
    macs = static_cast<int64_t>(static_cast<uint64_t>(macs) + layer.macs());
    weight_bits = static_cast<int64_t>(static_cast<uint64_t>(weight_bits) + layer.weight_bits());
    activation_bits =
        static_cast<int64_t>(static_cast<uint64_t>(activation_bits) + layer.activation_bits());
    bops = static_cast<int64_t>(static_cast<uint64_t>(bops) + layer.bops());
    peak = std::max(peak, layer.activation_bits());
    energy += layer.energy_pj();
  }
  for (auto [field, total, sum] :
       {std::tuple{"macs", r.macs(), macs}, std::tuple{"size_bits", r.size_bits(), weight_bits},
        std::tuple{"activation_bits", r.activation_bits(), activation_bits},
        std::tuple{"bops", r.bops(), bops}}) {
    if (total != sum) {
      return bad(field, total, absl::StrCat("is not the sum over its layers (", sum, ")"));
    }
  }
  if (r.peak_activation_bits() != peak) {
    return bad("peak_activation_bits", r.peak_activation_bits(),
               absl::StrCat("is not the largest layer's activation_bits (", peak, ")"));
  }
  if (std::abs(r.energy_pj() - energy) > 1e-9 * std::max(1.0, std::abs(energy))) {
    return bad("energy_pj", r.energy_pj(),
               absl::StrCat("is not the sum over its layers (", energy, ")"));
  }
  return absl::OkStatus();
}

// Upper bounds and every check of a sweep spec that needs no data, so that a spec a worker
// would refuse (or spend days on) is refused at submit. INVALID_ARGUMENT naming field and value.
// (budget and population are bounded by the strategies that use them: planner/plan_util.cc.)
constexpr size_t kMaxSweepNameBytes = 256;
constexpr int64_t kMaxBatch = 65'536;
constexpr int64_t kMaxFinetuneSteps = 10'000'000;
constexpr int kMaxMaxAttempts = 100;
constexpr int64_t kMaxCalibrationSamples = 10'000'000;
constexpr int64_t kMaxImageSide = 16'384;
constexpr size_t kMaxHardwareProfileBytes = 1 << 20;

absl::Status CheckSpecLimits(const v1::SweepSpec& spec) {
  auto bad = [](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value, " ", rule));
  };
  auto in_range = [&](absl::string_view field, int64_t value, int64_t low,
                      int64_t high) -> absl::Status {
    if (value < low || value > high) {
      return bad(field, value, absl::StrCat("is outside [", low, ", ", high, "]"));
    }
    return absl::OkStatus();
  };
  if (spec.name().size() > kMaxSweepNameBytes) {
    return bad("name", absl::StrCat("of ", spec.name().size(), " bytes"),
               absl::StrCat("is longer than ", kMaxSweepNameBytes, " bytes"));
  }
  if (spec.has_error_margin() && !(spec.error_margin() <= 100)) {
    return bad("error_margin", spec.error_margin(), "is above 100 percentage points");
  }
  RETURN_IF_ERROR(in_range("max_attempts", spec.max_attempts(), 0, kMaxMaxAttempts));
  const v1::EvalSettings& settings = spec.settings();
  RETURN_IF_ERROR(in_range("settings.batch", settings.batch(), 0, kMaxBatch));
  if (settings.hardware_profile_json().size() > kMaxHardwareProfileBytes) {
    return bad("settings.hardware_profile_json",
               absl::StrCat("of ", settings.hardware_profile_json().size(), " bytes"),
               absl::StrCat("is longer than ", kMaxHardwareProfileBytes, " bytes"));
  }
  const v1::DatasetRef& dataset = settings.dataset();
  RETURN_IF_ERROR(in_range("settings.dataset.eval_limit", dataset.eval_limit(), 0,
                           std::numeric_limits<int64_t>::max()));
  RETURN_IF_ERROR(in_range("settings.dataset.calibration_samples",
                           dataset.calibration_samples(), 0, kMaxCalibrationSamples));
  RETURN_IF_ERROR(in_range("settings.dataset.resize", dataset.resize(), 0, kMaxImageSide));
  RETURN_IF_ERROR(
      in_range("settings.dataset.center_crop", dataset.center_crop(), 0, kMaxImageSide));
  if (!dataset.channel_order().empty() && dataset.channel_order() != "rgb" &&
      dataset.channel_order() != "bgr") {
    return bad("settings.dataset.channel_order", absl::StrCat("'", dataset.channel_order(), "'"),
               "is neither 'rgb' nor 'bgr'");
  }
  if (!dataset.mean().empty() && !dataset.std().empty() &&
      dataset.mean_size() != dataset.std_size()) {
    return bad("settings.dataset.std", absl::StrCat("has ", dataset.std_size(), " values"),
               absl::StrCat("but mean has ", dataset.mean_size()));
  }
  for (int i = 0; i < dataset.mean_size(); ++i) {
    if (!std::isfinite(dataset.mean(i))) {
      return bad(absl::StrCat("settings.dataset.mean[", i, "]"), dataset.mean(i),
                 "is not finite");
    }
  }
  for (int i = 0; i < dataset.std_size(); ++i) {
    if (!std::isfinite(dataset.std(i)) || dataset.std(i) == 0) {
      return bad(absl::StrCat("settings.dataset.std[", i, "]"), dataset.std(i),
                 "is not a finite non-zero number");
    }
  }
  const v1::FinetuneSpec& finetune = spec.finetune();
  RETURN_IF_ERROR(in_range("finetune.steps", finetune.steps(), 0, kMaxFinetuneSteps));
  RETURN_IF_ERROR(in_range("finetune.batch", finetune.batch(), 0, kMaxBatch));
  for (auto [field, value] : {std::pair{"finetune.learning_rate", finetune.learning_rate()},
                              std::pair{"finetune.weight_decay", finetune.weight_decay()}}) {
    if (!std::isfinite(value) || value < 0) return bad(field, value, "is not finite and >= 0");
  }
  if (!(finetune.momentum() >= 0 && finetune.momentum() < 1)) {
    return bad("finetune.momentum", finetune.momentum(), "is outside [0, 1)");
  }
  return absl::OkStatus();
}

// The numbers of a result the best-trial bookkeeping needs.
struct ResultSummary {
  int64_t trial_id = 0;
  v1::TrialResult result;  // only top1, top5, size_bits, energy_pj, bops set
};

// A planner trial ready to insert: config parsed, hashed, keyed.
struct PreparedTrial {
  v1::TrialSpec spec;
  std::string canonical_config;
  std::string config_hash;
  std::string dedup_key;
};

// What a call changed outside the database; applied after commit.
struct Effects {
  std::set<int64_t> touched_sweeps;
  CoordinatorMetrics::TrialCounts trial_delta{};
  bool work_queued = false;
  int64_t lease_expiries = 0;
  std::vector<double> trial_durations;
  std::vector<double> stage_durations;
  int64_t attempts = 0;                 // leases handed out
  std::vector<std::string> retries;     // a reason per trial queued again (kRetryReasons)
  std::vector<std::string> reports;
  // Workers whose last_seen_ms this call wrote (TouchWorker's once-a-second cache).
  std::vector<std::pair<std::string, int64_t>> workers_seen;
  // A planner step emitted trials: memory worth giving back afterwards (see ApplyEffects).
  bool planned = false;
  // Sweeps this call moved from queued to running (SweepInfo::known_running once committed).
  std::vector<int64_t> sweeps_started;

  void Move(int from, int to) {
    trial_delta[from] -= 1;
    trial_delta[to] += 1;
  }
};

// A worker call waiting for the next group commit. `run` executes under mu_ inside the batch's
// transaction (and its own savepoint); its answer goes wherever `run` writes it.
struct GroupOp {
  std::function<absl::Status(Effects&)> run;
  absl::Time arrived = absl::Now();  // for bitsweep_store_lock_wait_seconds
  bool force_workers_refresh = false;  // Heartbeat: refresh the workers gauge after commit
  absl::Status status;
  bool done = false;
  absl::CondVar done_cv;  // signalled when done, or when this op became the queue's front
};

// The immutable facts of a sweep, cached in memory.
struct SweepInfo {
  int64_t id = 0;
  v1::SweepSpec spec;
  int max_attempts = kDefaultMaxAttempts;
  double error_margin = kDefaultErrorMarginPp;
  std::vector<v1::Objective> objectives;
  // The stored state is known to be past 'queued' (it never goes back): Lease skips the update.
  bool known_running = false;
};

// Columns of a trial row as the API returns it (see ReadTrial).
constexpr absl::string_view kTrialSelect =
    "SELECT t.id, t.sweep_id, t.spec_proto, t.config_hash, t.state, t.attempts, t.error, "
    "t.cached, t.cached_from, t.created_ms, t.finished_ms, r.result_proto, s.baseline_top1, "
    "s.error_margin, t.config_json "
    "FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
    "LEFT JOIN results r ON r.trial_id = coalesce(t.cached_from, t.id) "
    "AND t.state = 'succeeded' ";

absl::StatusOr<v1::Trial> ReadTrial(const Statement& row) {
  v1::Trial trial;
  trial.set_id(row.Int64(0));
  trial.set_sweep_id(row.Int64(1));
  if (!trial.mutable_spec()->ParseFromString(row.BlobColumn(2))) {
    return absl::InternalError(absl::StrCat("trial ", trial.id(), ": stored spec is corrupt"));
  }
  trial.set_config_hash(row.Text(3));
  trial.set_state(static_cast<v1::TrialState>(StateFromName(row.Text(4))));
  trial.set_attempts(static_cast<int32_t>(row.Int64(5)));
  trial.set_error(row.Text(6));
  trial.set_cached(row.Int64(7) != 0);
  trial.set_cached_from(row.IsNull(8) ? 0 : row.Int64(8));
  trial.set_created_ms(row.Int64(9));
  trial.set_finished_ms(row.IsNull(10) ? 0 : row.Int64(10));
  if (!row.IsNull(11)) {
    if (!trial.mutable_result()->ParseFromString(row.BlobColumn(11))) {
      return absl::InternalError(
          absl::StrCat("trial ", trial.id(), ": stored result is corrupt"));
    }
    std::optional<double> baseline = row.OptionalDouble(12);
    trial.set_within_margin(baseline.has_value() &&
                            WithinMargin(trial.result().top1(), *baseline, row.Double(13)));
  }
  return trial;
}

class SqliteCoordinator final : public Coordinator {
 public:
  SqliteCoordinator(const CoordinatorOptions& options, std::unique_ptr<Database> db)
      : options_(options), clock_(options.clock), metrics_(options.metrics), db_(std::move(db)) {}
  ~SqliteCoordinator() override {
    if (expiry_thread_.joinable()) {
      stop_expiry_.Notify();
      expiry_thread_.join();
    }
  }
  // Starts the expiry timer (CoordinatorOptions.expiry_interval) once Init succeeded.
  void StartExpiryTimer() {
    if (options_.expiry_interval <= absl::ZeroDuration()) return;
    expiry_thread_ = std::thread([this] {
      while (!stop_expiry_.WaitForNotificationWithTimeout(options_.expiry_interval)) {
        // Failures (e.g. a busy database) are retried at the next tick.
        (void)ExpireLeases();
      }
    });
  }

  absl::Status Init() ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<std::unique_ptr<ModelUpload>> StartModelUpload(absl::string_view name) override;
  absl::StatusOr<v1::UploadModelResponse> FinishModelUpload(
      std::unique_ptr<ModelUpload> upload, absl::string_view expected_sha256) override;
  absl::Status ReadModel(absl::string_view model_hash, size_t chunk_bytes,
                         const std::function<bool(int64_t, absl::string_view)>& sink) override;
  absl::StatusOr<v1::UploadModelResponse> PutModel(absl::string_view name,
                                                   const std::string& bytes,
                                                   absl::string_view expected_sha256) override;
  // The model's input channels (ModelInputChannels), cached per hash; nullopt when the model
  // leaves them open or is unknown (SubmitSweep says so).
  absl::StatusOr<std::optional<int64_t>> InputChannelsOf(const std::string& model_hash)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::string> GetModelBytes(absl::string_view model_hash) override;
  absl::StatusOr<v1::Sweep> SubmitSweep(const v1::SweepSpec& spec) override;
  absl::StatusOr<v1::Sweep> GetSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::ListSweepsResponse> ListSweeps(const v1::ListSweepsRequest& r) override;
  absl::StatusOr<v1::Sweep> CancelSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::Sweep> ResumeSweep(int64_t sweep_id) override;
  absl::StatusOr<v1::ListTrialsResponse> ListTrials(const v1::ListTrialsRequest& r) override;
  absl::StatusOr<v1::Frontier> GetFrontier(const v1::GetFrontierRequest& r) override;
  absl::StatusOr<v1::ExportConfigResponse> ExportConfig(
      const v1::ExportConfigRequest& r) override;
  absl::StatusOr<int64_t> WaitForSweepChange(int64_t sweep_id, int64_t seen_version,
                                             absl::Duration timeout) override;
  absl::StatusOr<v1::RegisterResponse> RegisterWorker(const v1::RegisterRequest& r) override;
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& r) override;
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r) override;
  absl::StatusOr<v1::ReportResponse> Report(const v1::ReportRequest& r) override;
  absl::StatusOr<v1::ReturnLeasesResponse> ReturnLeases(const v1::ReturnLeasesRequest& r) override;
  absl::StatusOr<v1::InvalidateTrialResponse> InvalidateTrial(int64_t trial_id) override;
  absl::Status ExpireLeases() override;

 private:
  int64_t NowMs() { return absl::ToUnixMillis(clock_->Now()); }

  // --- Small SQL helpers.
  template <typename... Args>
  absl::Status Exec(absl::string_view sql, const Args&... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
    statement.BindAll(args...);
    return statement.Run();
  }
  // The first column of the first row; nullopt for no row or NULL.
  template <typename... Args>
  absl::StatusOr<std::optional<int64_t>> QueryInt(absl::string_view sql, const Args&... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
    statement.BindAll(args...);
    ASSIGN_OR_RETURN(bool row, statement.Step());
    if (!row) return std::optional<int64_t>();
    return statement.OptionalInt64(0);
  }

  // Moves each sweep's version (WaitForSweepChange), inside the caller's transaction.
  absl::Status BumpSweepVersions(const std::set<int64_t>& sweep_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumps the touched sweeps' versions, commits, then applies the effects.
  absl::Status Commit(Transaction& txn, Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `op` in the next group commit (see the top of this file); returns its status once the
  // transaction holding it has committed (or failed).
  absl::Status RunGrouped(GroupOp& op) ABSL_LOCKS_EXCLUDED(mu_, queue_mu_);
  // The leader's part: one transaction, a savepoint per op (when there are several), one commit.
  void RunBatch(const std::vector<GroupOp*>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  void ApplyEffects(const Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RefreshWorkersConnected(bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<SweepInfo*> GetSweepInfo(int64_t sweep_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // INVALID_ARGUMENT unless the result's layers (names and classes, in order) are the model's,
  // as an earlier stored result of the same model listed them; OK when none is stored yet.
  absl::Status CheckLayersOfModel(const std::string& model_hash, const v1::TrialResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // 12 hex digits for a lease id, from a SplitMix64 stream seeded once from OpenSSL's CSPRNG
  // (lease ids need to be distinct, not secret: RAND_bytes per lease cost more than the rest).
  std::string LeaseSuffix() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<const Strategy*> StrategyFor(absl::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Sweep> BuildSweep(int64_t sweep_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NOT_FOUND naming the worker (it registers again) unless the worker exists; marks it seen.
  absl::Status TouchWorker(absl::string_view worker_id, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Planner flow.
  // Moves the trial specs out of `step`.
  absl::StatusOr<std::vector<PreparedTrial>> PrepareTrials(const SweepInfo& sweep,
                                                           PlanStep& step);
  absl::Status InsertTrial(const SweepInfo& sweep, int64_t step_no, const PreparedTrial& trial,
                           int64_t now_ms, Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the strategy for steps until one has unfinished trials or the sweep ends. At submit,
  // planner errors are the caller's (returned); later they fail the sweep.
  absl::Status AdvanceSweep(int64_t sweep_id, bool at_submit, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status EndSweep(int64_t sweep_id, int state, absl::string_view error, int64_t now_ms,
                        Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<TrialOutcome>> LoadOutcomes(int64_t sweep_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Trial transitions.
  // A trial of `sweep_id` now holds the result stored under `result_trial_id`: baseline and best
  // trial follow.
  // `stored`: the result when this call just stored it (else it is read back).
  absl::Status OnTrialSucceeded(int64_t sweep_id, int64_t trial_id, absl::string_view stage,
                                int64_t result_trial_id, Effects& effects,
                                const v1::TrialResult* stored = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RecomputeBestTrial(int64_t sweep_id, double threshold)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Trials waiting on `original_id` succeed with its result; returns their sweeps.
  absl::StatusOr<std::set<int64_t>> CompleteDuplicates(int64_t original_id, int64_t now_ms,
                                                       Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `original_id` will not produce a result: the oldest trial waiting on it runs instead and
  // the others wait on that one.
  absl::Status PromoteDuplicates(int64_t original_id, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FailTrial(int64_t trial_id, int64_t sweep_id, int from_state,
                         absl::string_view error, int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreResult(int64_t trial_id, const SweepInfo& sweep,
                           absl::string_view dedup_key, const v1::ReportRequest& report,
                           int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ExpireLeasesLocked(int64_t now_ms, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LeaseLocked(const v1::LeaseRequest& r, int64_t now_ms, v1::LeaseResponse& out,
                           Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> ReportLocked(const v1::ReportRequest& r, int64_t now_ms,
                                    Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status HeartbeatLocked(const v1::HeartbeatRequest& r, int64_t now_ms,
                               v1::HeartbeatResponse& response, Effects& effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  Clock* const clock_;

  // The group-commit queue: its front is the leader running a batch (it leaves the queue when
  // the batch is done). Ordered before mu_: the leader never holds both.
  absl::Mutex queue_mu_;
  std::deque<GroupOp*> queue_ ABSL_GUARDED_BY(queue_mu_);

  absl::Mutex mu_;
  absl::CondVar work_available_;  // trials were queued (Lease long-polls wait on it)
  // Bumped (after commit) whenever trials were queued: a Lease that found nothing waits until it
  // moves, so that work queued between its attempt and its wait is not missed.
  int64_t work_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<SplitMix64> lease_rng_ ABSL_GUARDED_BY(mu_);  // seeded at the first lease
  absl::CondVar sweep_changed_;   // some sweep's version moved (WaitForSweepChange)
  CoordinatorMetrics metrics_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  // Uploaded models as files (created by Init; thread-safe: content-addressed files).
  std::unique_ptr<ModelFiles> model_files_;
  absl::flat_hash_map<std::string, std::optional<int64_t>> input_channels_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, std::unique_ptr<SweepInfo>> sweeps_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Strategy>, std::less<>> strategies_ ABSL_GUARDED_BY(mu_);
  int64_t workers_refreshed_ms_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::min();
  // When each known worker's last_seen_ms was last written (see TouchWorker).
  absl::flat_hash_map<std::string, int64_t> worker_seen_written_ms_ ABSL_GUARDED_BY(mu_);
  // Quantizable layers (name, class) by model hash, from the model's first stored result.
  absl::flat_hash_map<std::string, std::vector<std::pair<std::string, std::string>>>
      model_layers_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_expiry_;
  std::thread expiry_thread_;
};

// ---------------------------------------------------------------------------------------------
// Setup and shared helpers.

absl::Status SqliteCoordinator::Init() {
  ASSIGN_OR_RETURN(model_files_,
                   ModelFiles::Open(options_.model_dir.empty() ? options_.db_path + "-models"
                                                               : options_.model_dir,
                                    options_.max_model_bytes));
  absl::MutexLock lock(&mu_);
  // Metrics start from what the database holds.
  CoordinatorMetrics::TrialCounts counts{};
  {
    ASSIGN_OR_RETURN(Statement count,
                     db_->Prepare("SELECT state, count(*) FROM trials GROUP BY state"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, count.Step());
      if (!row) break;
      counts[StateFromName(count.Text(0))] = count.Int64(1);
    }
  }
  metrics_.SetTrialCounts(counts);
  // Resume: a sweep whose step finished but was not advanced (impossible with one transaction
  // per call, but cheap to check) moves on now; live leases simply stay live.
  std::vector<int64_t> live_sweeps;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id FROM sweeps WHERE state IN ('queued', 'running') "
                                  "ORDER BY id"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      live_sweeps.push_back(select.Int64(0));
    }
  }
  if (!live_sweeps.empty()) {
    Effects effects;
    ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
    for (int64_t sweep_id : live_sweeps) {
      RETURN_IF_ERROR(AdvanceSweep(sweep_id, /*at_submit=*/false, NowMs(), effects));
    }
    RETURN_IF_ERROR(Commit(txn, effects));
  }
  return RefreshWorkersConnected(/*force=*/true);
}

absl::Status SqliteCoordinator::BumpSweepVersions(const std::set<int64_t>& sweep_ids) {
  const int64_t now_ms = NowMs();
  for (int64_t sweep_id : sweep_ids) {
    RETURN_IF_ERROR(Exec("UPDATE sweeps SET version = version + 1, updated_ms = ?2 WHERE id = ?1",
                         sweep_id, now_ms));
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::Commit(Transaction& txn, Effects& effects) {
  RETURN_IF_ERROR(BumpSweepVersions(effects.touched_sweeps));
  const absl::Time commit_start = absl::Now();
  RETURN_IF_ERROR(txn.Commit());
  metrics_.ObserveCommit(absl::ToDoubleSeconds(absl::Now() - commit_start));
  ApplyEffects(effects);
  return absl::OkStatus();
}

void SqliteCoordinator::ApplyEffects(const Effects& effects) {
  for (const auto& [worker_id, seen_ms] : effects.workers_seen) {
    worker_seen_written_ms_[worker_id] = seen_ms;
  }
  for (int64_t sweep_id : effects.sweeps_started) {
    auto it = sweeps_.find(sweep_id);
    if (it != sweeps_.end()) it->second->known_running = true;
  }
  for (int state = v1::TRIAL_QUEUED; state <= v1::TRIAL_CANCELLED; ++state) {
    metrics_.AddTrials(static_cast<v1::TrialState>(state), effects.trial_delta[state]);
  }
  metrics_.AddLeaseExpiries(effects.lease_expiries);
  for (double seconds : effects.trial_durations) metrics_.ObserveTrialDuration(seconds);
  for (double seconds : effects.stage_durations) metrics_.ObserveStageDuration(seconds);
  for (const std::string& outcome : effects.reports) metrics_.CountReport(outcome);
  metrics_.CountAttempts(effects.attempts);
  for (const std::string& reason : effects.retries) metrics_.CountRetry(reason);
  if (effects.work_queued) {
    ++work_generation_;
    work_available_.SignalAll();
  }
  if (!effects.touched_sweeps.empty()) sweep_changed_.SignalAll();
  // A planner step (and the outcomes it was given) allocated and freed tens of megabytes, often
  // on a gRPC thread with its own malloc arena: give the free pages back so that they do not
  // pile up arena after arena.
  if (effects.planned) malloc_trim(0);
}

absl::Status SqliteCoordinator::RunGrouped(GroupOp& op) {
  {
    absl::MutexLock lock(&queue_mu_);
    queue_.push_back(&op);
    while (!op.done && queue_.front() != &op) op.done_cv.Wait(&queue_mu_);
    if (op.done) return op.status;  // a leader ran it
  }
  // The leader: everything queued so far (this op first) goes into one transaction. Calls
  // arriving meanwhile queue up for the next leader.
  constexpr size_t kMaxGroup = 64;
  std::vector<GroupOp*> batch;
  {
    absl::MutexLock lock(&queue_mu_);
    for (GroupOp* queued : queue_) {
      if (batch.size() == kMaxGroup) break;
      batch.push_back(queued);
    }
  }
  RunBatch(batch);
  absl::MutexLock lock(&queue_mu_);
  for (size_t i = 0; i < batch.size(); ++i) {
    GroupOp* finished = queue_.front();
    queue_.pop_front();
    finished->done = true;
    if (finished != &op) finished->done_cv.Signal();
  }
  if (!queue_.empty()) queue_.front()->done_cv.Signal();  // the next leader
  return op.status;
}

void SqliteCoordinator::RunBatch(const std::vector<GroupOp*>& batch) {
  absl::MutexLock lock(&mu_);
  const absl::Time began = absl::Now();
  for (const GroupOp* op : batch) {
    metrics_.ObserveLockWait(absl::ToDoubleSeconds(began - op->arrived));
  }
  auto fail_all = [&](const absl::Status& status) {
    for (GroupOp* op : batch) op->status = status;
  };
  absl::StatusOr<Transaction> txn = db_->Begin();
  if (!txn.ok()) return fail_all(txn.status());
  // One op needs no savepoint: if it fails, the whole transaction rolls back.
  const bool savepoints = batch.size() > 1;
  std::vector<Effects> effects(batch.size());
  bool any_ok = false;
  bool force_workers_refresh = false;
  for (size_t i = 0; i < batch.size(); ++i) {
    GroupOp& op = *batch[i];
    if (savepoints) {
      absl::Status status = Exec("SAVEPOINT group_op");
      if (!status.ok()) return fail_all(status);
    }
    op.status = op.run(effects[i]);
    if (!savepoints) {
      if (!op.status.ok()) return;  // `txn` rolls back
    } else if (op.status.ok()) {
      absl::Status status = Exec("RELEASE group_op");
      if (!status.ok()) return fail_all(status);
    } else {
      // Undo this op only. If even that fails (SQLite may have rolled back the whole
      // transaction after an I/O error), nothing of the batch is kept.
      absl::Status status = Exec("ROLLBACK TO group_op");
      if (status.ok()) status = Exec("RELEASE group_op");
      if (!status.ok()) {
        const absl::Status op_status = op.status;
        fail_all(status);
        op.status = op_status;
        return;
      }
      effects[i] = Effects();
      continue;
    }
    any_ok = true;
    force_workers_refresh |= op.force_workers_refresh;
  }
  if (!any_ok) return;  // nothing to keep: `txn` rolls back
  // The touched sweeps' versions move once per batch, in the same transaction.
  Effects merged;
  for (const Effects& e : effects) {
    merged.touched_sweeps.insert(e.touched_sweeps.begin(), e.touched_sweeps.end());
  }
  absl::Status status = BumpSweepVersions(merged.touched_sweeps);
  if (!status.ok()) return fail_all(status);
  const absl::Time commit_start = absl::Now();
  status = txn->Commit();
  if (!status.ok()) return fail_all(status);
  metrics_.ObserveCommit(absl::ToDoubleSeconds(absl::Now() - commit_start));
  // Committed: every op's answer stands; now the effects outside the database.
  for (const Effects& e : effects) ApplyEffects(e);
  RefreshWorkersConnected(force_workers_refresh).IgnoreError();  // a gauge: best effort
}

absl::Status SqliteCoordinator::RefreshWorkersConnected(bool force) {
  if (!metrics_.enabled()) return absl::OkStatus();
  const int64_t now_ms = NowMs();
  // Lease calls arrive thousands of times a second; once a second is plenty for a gauge.
  if (!force && now_ms - workers_refreshed_ms_ < 1000) return absl::OkStatus();
  workers_refreshed_ms_ = now_ms;
  const int64_t since_ms = now_ms - 3 * absl::ToInt64Milliseconds(options_.heartbeat_interval);
  ASSIGN_OR_RETURN(std::optional<int64_t> count,
                   QueryInt("SELECT count(*) FROM workers WHERE last_seen_ms >= ?1", since_ms));
  metrics_.SetWorkersConnected(count.value_or(0));
  return absl::OkStatus();
}

absl::StatusOr<SweepInfo*> SqliteCoordinator::GetSweepInfo(int64_t sweep_id) {
  auto it = sweeps_.find(sweep_id);
  if (it != sweeps_.end()) return it->second.get();
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT spec_proto, max_attempts, error_margin FROM sweeps "
                                "WHERE id = ?1"));
  select.Bind(1, sweep_id);
  ASSIGN_OR_RETURN(bool row, select.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  auto info = std::make_unique<SweepInfo>();
  info->id = sweep_id;
  if (!info->spec.ParseFromString(select.BlobColumn(0))) {
    return absl::InternalError(absl::StrCat("sweep ", sweep_id, ": stored spec is corrupt"));
  }
  info->max_attempts = static_cast<int>(select.Int64(1));
  info->error_margin = select.Double(2);
  absl::StatusOr<std::vector<v1::Objective>> objectives = SweepObjectives(info->spec);
  info->objectives = objectives.ok() ? *objectives : DefaultSweepObjectives();
  SweepInfo* raw = info.get();
  sweeps_.emplace(sweep_id, std::move(info));
  return raw;
}

std::string SqliteCoordinator::LeaseSuffix() {
  if (!lease_rng_.has_value()) lease_rng_.emplace(std::stoull(RandomHex(8), nullptr, 16));
  return absl::StrCat(absl::Hex(lease_rng_->Next() >> 16, absl::kZeroPad12));
}

absl::StatusOr<const Strategy*> SqliteCoordinator::StrategyFor(absl::string_view name) {
  auto it = strategies_.find(name);
  if (it != strategies_.end()) return it->second.get();
  auto factory = options_.strategy_factory ? options_.strategy_factory : MakeStrategy;
  ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, factory(name));
  if (strategy == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown strategy '", name, "'"));
  }
  const Strategy* raw = strategy.get();
  strategies_.emplace(std::string(name), std::move(strategy));
  return raw;
}

absl::Status SqliteCoordinator::TouchWorker(absl::string_view worker_id, int64_t now_ms,
                                            Effects& effects) {
  // Lease and Report arrive thousands of times a second: last_seen is written at most once a
  // second per worker (plenty for "seen within three heartbeat intervals"), which keeps the
  // workers page out of most commits.
  auto known = worker_seen_written_ms_.find(worker_id);
  if (known != worker_seen_written_ms_.end() && now_ms - known->second < 1000 &&
      now_ms >= known->second) {
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(
      Exec("UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1", worker_id, now_ms));
  if (db_->Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker '", worker_id, "': register again"));
  }
  effects.workers_seen.emplace_back(std::string(worker_id), now_ms);  // cached once committed
  return absl::OkStatus();
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::BuildSweep(int64_t sweep_id) {
  v1::Sweep sweep;
  std::optional<int64_t> best_trial_id;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT spec_proto, state, stage, error, baseline_top1, "
                                  "best_trial_id, created_ms, updated_ms, finished_ms "
                                  "FROM sweeps WHERE id = ?1"));
    select.Bind(1, sweep_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    sweep.set_id(sweep_id);
    if (!sweep.mutable_spec()->ParseFromString(select.BlobColumn(0))) {
      return absl::InternalError(absl::StrCat("sweep ", sweep_id, ": stored spec is corrupt"));
    }
    sweep.set_state(static_cast<v1::SweepState>(StateFromName(select.Text(1))));
    sweep.set_stage(select.Text(2));
    sweep.set_error(select.Text(3));
    if (!select.IsNull(4)) sweep.set_baseline_top1(select.Double(4));
    best_trial_id = select.OptionalInt64(5);
    sweep.set_created_ms(select.Int64(6));
    sweep.set_updated_ms(select.Int64(7));
    sweep.set_finished_ms(select.IsNull(8) ? 0 : select.Int64(8));
  }
  {
    ASSIGN_OR_RETURN(Statement count,
                     db_->Prepare("SELECT state, cached, count(*) FROM trials "
                                  "WHERE sweep_id = ?1 GROUP BY state, cached"));
    count.Bind(1, sweep_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, count.Step());
      if (!row) break;
      const int64_t n = count.Int64(2);
      sweep.set_trials_total(sweep.trials_total() + n);
      switch (StateFromName(count.Text(0))) {
        case v1::TRIAL_QUEUED: sweep.set_trials_queued(sweep.trials_queued() + n); break;
        case v1::TRIAL_RUNNING: sweep.set_trials_running(sweep.trials_running() + n); break;
        case v1::TRIAL_SUCCEEDED:
          sweep.set_trials_succeeded(sweep.trials_succeeded() + n);
          if (count.Int64(1) != 0) sweep.set_trials_cached(sweep.trials_cached() + n);
          break;
        case v1::TRIAL_FAILED: sweep.set_trials_failed(sweep.trials_failed() + n); break;
        case v1::TRIAL_CANCELLED: sweep.set_trials_cancelled(sweep.trials_cancelled() + n); break;
        default: break;
      }
    }
  }
  {
    ASSIGN_OR_RETURN(Statement stages,
                     db_->Prepare("SELECT stage FROM sweep_stages WHERE sweep_id = ?1 "
                                  "AND finished_ms IS NOT NULL ORDER BY step"));
    stages.Bind(1, sweep_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, stages.Step());
      if (!row) break;
      sweep.add_finished_stages(stages.Text(0));
    }
  }
  if (best_trial_id.has_value()) {
    ASSIGN_OR_RETURN(Statement best,
                     db_->Prepare("SELECT r.top1, r.size_bits FROM trials t JOIN results r "
                                  "ON r.trial_id = coalesce(t.cached_from, t.id) WHERE t.id = ?1"));
    best.Bind(1, *best_trial_id);
    ASSIGN_OR_RETURN(bool row, best.Step());
    if (row) {
      sweep.set_best_trial_id(*best_trial_id);
      sweep.set_best_top1(best.Double(0));
      sweep.set_best_size_bits(best.Int64(1));
    }
  }
  return sweep;
}

// ---------------------------------------------------------------------------------------------
// Models.

absl::StatusOr<std::unique_ptr<ModelUpload>> SqliteCoordinator::StartModelUpload(
    absl::string_view name) {
  return model_files_->StartUpload(name);
}

absl::StatusOr<v1::UploadModelResponse> SqliteCoordinator::FinishModelUpload(
    std::unique_ptr<ModelUpload> upload, absl::string_view expected_sha256) {
  ASSIGN_OR_RETURN(const std::string hash, upload->Finish());
  if (upload->size() == 0) return absl::InvalidArgumentError("model: no bytes uploaded");
  if (!expected_sha256.empty() && absl::AsciiStrToLower(expected_sha256) != hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected_sha256: the upload hashes to ", hash, ", not ", expected_sha256));
  }
  v1::UploadModelResponse response;
  response.set_model_hash(hash);
  response.set_size_bytes(upload->size());
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::optional<int64_t> present,
                     QueryInt("SELECT 1 FROM models WHERE hash = ?1", hash));
    if (present.has_value()) {
      response.set_already_present(true);
      return response;
    }
  }
  // Checking reads the whole file (a chunk at a time) and can take a while for big models: done
  // outside the lock, like storing the file under its hash.
  RETURN_IF_ERROR(CheckOnnxModelFile(upload->path(), upload->name()));
  RETURN_IF_ERROR(model_files_->Commit(*upload, hash));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> present,
                   QueryInt("SELECT 1 FROM models WHERE hash = ?1", hash));
  if (present.has_value()) {
    response.set_already_present(true);  // a concurrent upload of the same bytes won
    return response;
  }
  RETURN_IF_ERROR(Exec("INSERT INTO models(hash, name, size_bytes, bytes, created_ms, in_file) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                       hash, upload->name(), upload->size(), Blob{std::string()}, NowMs()));
  RETURN_IF_ERROR(txn.Commit());
  return response;
}

absl::StatusOr<v1::UploadModelResponse> SqliteCoordinator::PutModel(
    absl::string_view name, const std::string& bytes, absl::string_view expected_sha256) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelUpload> upload, StartModelUpload(name));
  RETURN_IF_ERROR(upload->Append(bytes));
  return FinishModelUpload(std::move(upload), expected_sha256);
}

absl::Status SqliteCoordinator::ReadModel(
    absl::string_view model_hash, size_t chunk_bytes,
    const std::function<bool(int64_t, absl::string_view)>& sink) {
  std::string in_table;  // the bytes of a model stored before version 5 of the schema
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT in_file, bytes FROM models WHERE hash = ?1"));
    select.Bind(1, model_hash);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("model '", model_hash, "' not found"));
    if (select.Int64(0) == 0) in_table = select.BlobColumn(1);
  }
  if (in_table.empty()) return model_files_->Read(std::string(model_hash), chunk_bytes, sink);
  const int64_t total = static_cast<int64_t>(in_table.size());
  for (size_t offset = 0; offset < in_table.size(); offset += chunk_bytes) {
    if (!sink(total, absl::string_view(in_table).substr(offset, chunk_bytes))) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> SqliteCoordinator::InputChannelsOf(
    const std::string& model_hash) {
  bool in_file = false;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = input_channels_.find(model_hash); it != input_channels_.end()) return it->second;
    ASSIGN_OR_RETURN(std::optional<int64_t> stored,
                     QueryInt("SELECT in_file FROM models WHERE hash = ?1", model_hash));
    if (!stored.has_value()) return std::optional<int64_t>();
    in_file = *stored != 0;
  }
  absl::StatusOr<std::optional<int64_t>> channels;
  if (in_file) {
    channels = ModelInputChannels(model_files_->PathOf(model_hash));
  } else {
    ASSIGN_OR_RETURN(std::string bytes, GetModelBytes(model_hash));
    channels = ModelInputChannelsOfBytes(bytes);
  }
  // The model passed the checker when it was stored: a shape we cannot read refuses nothing.
  const std::optional<int64_t> known = channels.ok() ? *channels : std::nullopt;
  absl::MutexLock lock(&mu_);
  input_channels_[model_hash] = known;
  return known;
}

absl::StatusOr<std::string> SqliteCoordinator::GetModelBytes(absl::string_view model_hash) {
  std::string bytes;
  RETURN_IF_ERROR(ReadModel(model_hash, 1 << 20, [&](int64_t total, absl::string_view chunk) {
    if (bytes.empty()) bytes.reserve(static_cast<size_t>(total));
    bytes.append(chunk.data(), chunk.size());
    return true;
  }));
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Sweeps and the planner.

absl::StatusOr<v1::Sweep> SqliteCoordinator::SubmitSweep(const v1::SweepSpec& spec) {
  // Validation that needs no lock first.
  if (spec.settings().dataset().eval().empty()) {
    return absl::InvalidArgumentError(
        "settings.dataset.eval: required (the evaluation split, e.g. "
        "'idx:/usr/share/datasets/fashion-mnist/t10k')");
  }
  if (spec.has_error_margin() && !(spec.error_margin() >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("error_margin: must be >= 0 percentage points, got ", spec.error_margin()));
  }
  if (spec.max_attempts() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attempts: must be >= 0, got ", spec.max_attempts()));
  }
  if (spec.budget() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("budget: must be >= 0, got ", spec.budget()));
  }
  RETURN_IF_ERROR(CheckSpecLimits(spec));
  // Normalisation values per channel must fit the model (one value serves every channel).
  ASSIGN_OR_RETURN(std::optional<int64_t> channels, InputChannelsOf(spec.model_hash()));
  if (channels.has_value()) {
    const v1::DatasetRef& dataset = spec.settings().dataset();
    for (auto [field, count] : {std::pair{"mean", dataset.mean_size()},
                                std::pair{"std", dataset.std_size()}}) {
      if (count > 1 && count != *channels) {
        return absl::InvalidArgumentError(absl::StrCat(
            "settings.dataset.", field, ": ", count, " values, but the model's input has ",
            *channels, " channel", *channels == 1 ? "" : "s",
            " (give one value per channel, or one for all)"));
      }
    }
  }
  {
    absl::StatusOr<std::vector<v1::Objective>> objectives = SweepObjectives(spec);
    if (!objectives.ok()) return Annotate(objectives.status(), "objectives");
  }

  absl::MutexLock lock(&mu_);
  absl::StatusOr<const Strategy*> strategy = StrategyFor(spec.strategy());
  if (!strategy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy: ", strategy.status().message()));
  }
  RETURN_IF_ERROR((*strategy)->Validate(spec));

  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> model_known,
                   QueryInt("SELECT 1 FROM models WHERE hash = ?1", spec.model_hash()));
  if (!model_known.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model_hash: no model '", spec.model_hash(), "' was uploaded (UploadModel first)"));
  }
  std::string spec_json;
  {
    google::protobuf::util::JsonPrintOptions json_options;
    json_options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(spec, &spec_json, json_options).ok()) {
      spec_json = "{}";  // only for people; the proto bytes are what counts
    }
  }
  const double error_margin = spec.has_error_margin() ? spec.error_margin()
                                                      : kDefaultErrorMarginPp;
  const int max_attempts = spec.max_attempts() > 0 ? spec.max_attempts() : kDefaultMaxAttempts;
  RETURN_IF_ERROR(Exec(
      "INSERT INTO sweeps(name, model_hash, strategy, dataset_eval, error_margin, max_attempts, "
      "spec_proto, spec_json, state, created_ms, updated_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?9)",
      spec.name(), spec.model_hash(), spec.strategy(), spec.settings().dataset().eval(),
      error_margin, static_cast<int64_t>(max_attempts), Blob{spec.SerializeAsString()},
      spec_json, now_ms));
  const int64_t sweep_id = db_->LastInsertRowId();
  effects.touched_sweeps.insert(sweep_id);
  absl::Status status = AdvanceSweep(sweep_id, /*at_submit=*/true, now_ms, effects);
  if (status.ok()) status = Commit(txn, effects);
  if (!status.ok()) {
    // Rolled back: the id may be reused by the next sweep, so forget what was cached for it.
    sweeps_.erase(sweep_id);
    return status;
  }
  return BuildSweep(sweep_id);
}

absl::StatusOr<std::vector<PreparedTrial>> SqliteCoordinator::PrepareTrials(
    const SweepInfo& sweep, PlanStep& step) {
  std::vector<PreparedTrial> prepared;
  prepared.reserve(step.trials.size());
  for (size_t i = 0; i < step.trials.size(); ++i) {
    PreparedTrial trial;
    trial.spec = std::move(step.trials[i]);
    if (trial.spec.stage().empty()) trial.spec.set_stage(step.stage);
    absl::StatusOr<quant::QuantConfig> config =
        quant::ParseQuantConfig(trial.spec.config_json());
    if (!config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage '", trial.spec.stage(), "' trial ", i, " ('", trial.spec.label(),
          "'): config_json: ", config.status().message()));
    }
    trial.canonical_config = quant::CanonicalJson(*config);
    trial.config_hash = quant::ConfigHash(*config);
    trial.dedup_key = TrialDedupKey(sweep.spec.model_hash(), sweep.spec.settings(),
                                    trial.config_hash, trial.spec.finetune());
    prepared.push_back(std::move(trial));
  }
  return prepared;
}

absl::Status SqliteCoordinator::InsertTrial(const SweepInfo& sweep, int64_t step_no,
                                            const PreparedTrial& trial, int64_t now_ms,
                                            Effects& effects) {
  static constexpr absl::string_view kInsert =
      "INSERT INTO trials(sweep_id, step, stage, label, spec_proto, config_json, config_hash, "
      "dedup_key, state, cached, cached_from, duplicate_of, created_ms, finished_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
  const std::string spec_bytes = trial.spec.SerializeAsString();
  // Already evaluated (in any sweep): reuse the result, nothing runs.
  std::optional<int64_t> evaluated;
  if (!sweep.spec.no_cache()) {
    ASSIGN_OR_RETURN(evaluated,
                     QueryInt("SELECT trial_id FROM results WHERE dedup_key = ?1 "
                              "AND invalidated_ms IS NULL ORDER BY trial_id LIMIT 1",
                              trial.dedup_key));
  }
  if (evaluated.has_value()) {
    RETURN_IF_ERROR(Exec(kInsert, sweep.id, step_no, trial.spec.stage(), trial.spec.label(),
                         Blob{spec_bytes}, trial.canonical_config, trial.config_hash,
                         trial.dedup_key, "succeeded", int64_t{1}, *evaluated, nullptr, now_ms,
                         now_ms));
    const int64_t trial_id = db_->LastInsertRowId();
    effects.trial_delta[v1::TRIAL_SUCCEEDED] += 1;
    return OnTrialSucceeded(sweep.id, trial_id, trial.spec.stage(), *evaluated, effects);
  }
  // Being evaluated right now: wait for that one instead of running it twice.
  std::optional<int64_t> original;
  if (!sweep.spec.no_cache()) {
    ASSIGN_OR_RETURN(original,
                     QueryInt("SELECT id FROM trials WHERE dedup_key = ?1 "
                              "AND state IN ('queued', 'running') AND duplicate_of IS NULL "
                              "ORDER BY id LIMIT 1",
                              trial.dedup_key));
  }
  RETURN_IF_ERROR(Exec(kInsert, sweep.id, step_no, trial.spec.stage(), trial.spec.label(),
                       Blob{spec_bytes}, trial.canonical_config, trial.config_hash,
                       trial.dedup_key, "queued", int64_t{0}, nullptr, original, now_ms,
                       nullptr));
  effects.trial_delta[v1::TRIAL_QUEUED] += 1;
  if (!original.has_value()) effects.work_queued = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TrialOutcome>> SqliteCoordinator::LoadOutcomes(int64_t sweep_id) {
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT t.id, t.spec_proto, t.state, t.error, r.result_proto "
                                "FROM trials t LEFT JOIN results r "
                                "ON r.trial_id = coalesce(t.cached_from, t.id) "
                                "AND t.state = 'succeeded' "
                                "WHERE t.sweep_id = ?1 "
                                "AND t.state IN ('succeeded', 'failed', 'cancelled') "
                                "ORDER BY t.id"));
  select.Bind(1, sweep_id);
  std::vector<TrialOutcome> outcomes;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    TrialOutcome outcome;
    outcome.trial_id = select.Int64(0);
    if (!outcome.spec.ParseFromString(select.BlobColumn(1))) {
      return absl::InternalError(
          absl::StrCat("trial ", outcome.trial_id, ": stored spec is corrupt"));
    }
    outcome.succeeded = StateFromName(select.Text(2)) == v1::TRIAL_SUCCEEDED;
    outcome.error = select.Text(3);
    if (outcome.succeeded && !outcome.result.ParseFromString(select.BlobColumn(4))) {
      return absl::InternalError(
          absl::StrCat("trial ", outcome.trial_id, ": stored result is corrupt"));
    }
    if (outcome.succeeded) outcome.error.clear();
    outcomes.push_back(std::move(outcome));
  }
  return outcomes;
}

absl::Status SqliteCoordinator::EndSweep(int64_t sweep_id, int state, absl::string_view error,
                                         int64_t now_ms, Effects& effects) {
  RETURN_IF_ERROR(Exec("UPDATE sweeps SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
                       sweep_id, StateName(state), error, now_ms));
  effects.touched_sweeps.insert(sweep_id);
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::AdvanceSweep(int64_t sweep_id, bool at_submit, int64_t now_ms,
                                             Effects& effects) {
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(sweep_id));
  for (int steps = 0; steps < kMaxImmediateSteps; ++steps) {
    int64_t step_no = 0;
    {
      ASSIGN_OR_RETURN(Statement select,
                       db_->Prepare("SELECT state, step FROM sweeps WHERE id = ?1"));
      select.Bind(1, sweep_id);
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
      const int state = StateFromName(select.Text(0));
      if (state != v1::SWEEP_QUEUED && state != v1::SWEEP_RUNNING) return absl::OkStatus();
      step_no = select.Int64(1);
    }
    ASSIGN_OR_RETURN(std::optional<int64_t> unfinished,
                     QueryInt("SELECT EXISTS(SELECT 1 FROM trials WHERE sweep_id = ?1 "
                              "AND state IN ('queued', 'running'))",
                              sweep_id));
    if (unfinished.value_or(0) != 0) return absl::OkStatus();

    // The current step is over.
    if (step_no > 0) {
      ASSIGN_OR_RETURN(std::optional<int64_t> started_ms,
                       QueryInt("SELECT started_ms FROM sweep_stages WHERE sweep_id = ?1 "
                                "AND step = ?2 AND finished_ms IS NULL",
                                sweep_id, step_no));
      if (started_ms.has_value()) {
        RETURN_IF_ERROR(Exec("UPDATE sweep_stages SET finished_ms = ?3 WHERE sweep_id = ?1 "
                             "AND step = ?2",
                             sweep_id, step_no, now_ms));
        effects.stage_durations.push_back((now_ms - *started_ms) / 1000.0);
      }
    }
    effects.touched_sweeps.insert(sweep_id);

    absl::StatusOr<const Strategy*> strategy = StrategyFor(sweep->spec.strategy());
    if (!strategy.ok()) {
      if (at_submit) return strategy.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", strategy.status().message()), now_ms, effects);
    }
    effects.planned = true;
    absl::StatusOr<PlanStep> step;
    {
      // Every outcome of the sweep, freed as soon as the strategy has seen them.
      ASSIGN_OR_RETURN(std::vector<TrialOutcome> outcomes, LoadOutcomes(sweep_id));
      step = (*strategy)->Next(sweep->spec, outcomes);
    }
    if (!step.ok()) {
      if (at_submit) return step.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", step.status().message()), now_ms, effects);
    }
    if (!step->failure.empty()) {
      return EndSweep(sweep_id, v1::SWEEP_FAILED, step->failure, now_ms, effects);
    }
    if (step->done) return EndSweep(sweep_id, v1::SWEEP_SUCCEEDED, "", now_ms, effects);
    if (step->trials.empty()) {
      const std::string error =
          absl::StrCat("planner: step '", step->stage, "' has no trials and is not done");
      if (at_submit) return absl::InternalError(error);
      return EndSweep(sweep_id, v1::SWEEP_FAILED, error, now_ms, effects);
    }
    absl::StatusOr<std::vector<PreparedTrial>> trials = PrepareTrials(*sweep, *step);
    step->trials.clear();
    step->trials.shrink_to_fit();
    if (!trials.ok()) {
      if (at_submit) return trials.status();
      return EndSweep(sweep_id, v1::SWEEP_FAILED,
                      absl::StrCat("planner: ", trials.status().message()), now_ms, effects);
    }
    ++step_no;
    RETURN_IF_ERROR(Exec("INSERT INTO sweep_stages(sweep_id, step, stage, trials, started_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
                         sweep_id, step_no, step->stage, static_cast<int64_t>(trials->size()),
                         now_ms));
    RETURN_IF_ERROR(Exec("UPDATE sweeps SET step = ?2, stage = ?3 WHERE id = ?1", sweep_id,
                         step_no, step->stage));
    for (const PreparedTrial& trial : *trials) {
      RETURN_IF_ERROR(InsertTrial(*sweep, step_no, trial, now_ms, effects));
    }
    // Loop: if every trial of the step was cached, the step is already over.
  }
  return EndSweep(sweep_id, v1::SWEEP_FAILED,
                  absl::StrCat("planner: no trial to run after ", kMaxImmediateSteps,
                               " steps whose trials were all cached"),
                  now_ms, effects);
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::GetSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  return BuildSweep(sweep_id);
}

absl::StatusOr<v1::ListSweepsResponse> SqliteCoordinator::ListSweeps(
    const v1::ListSweepsRequest& r) {
  ASSIGN_OR_RETURN(int page_size, ResolvePageSize(r.page_size(), kDefaultSweepPageSize));
  ASSIGN_OR_RETURN(int64_t after, ParsePageToken(r.page_token()));
  const int64_t before_id = after == 0 ? std::numeric_limits<int64_t>::max() : after;
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> ids;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id FROM sweeps WHERE id < ?1 ORDER BY id DESC "
                                  "LIMIT ?2"));
    select.BindAll(before_id, static_cast<int64_t>(page_size) + 1);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      ids.push_back(select.Int64(0));
    }
  }
  v1::ListSweepsResponse response;
  size_t page_bytes = 0;
  for (int i = 0; i < static_cast<int>(ids.size()) && i < page_size; ++i) {
    v1::Sweep* sweep = response.add_sweeps();
    ASSIGN_OR_RETURN(*sweep, BuildSweep(ids[i]));
    page_bytes += sweep->ByteSizeLong();
    if (page_bytes >= kMaxPageBytes && i + 1 < static_cast<int>(ids.size())) {
      response.set_next_page_token(absl::StrCat(ids[i]));
      return response;
    }
  }
  if (static_cast<int>(ids.size()) > page_size) {
    response.set_next_page_token(absl::StrCat(ids[page_size - 1]));
  }
  return response;
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::CancelSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(v1::Sweep sweep, BuildSweep(sweep_id));
  if (sweep.state() != v1::SWEEP_QUEUED && sweep.state() != v1::SWEEP_RUNNING) {
    return sweep;  // finished: cancelling is a no-op
  }
  std::vector<std::pair<int64_t, int>> cancelled;  // trial id, previous state
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, state, lease_id FROM trials WHERE sweep_id = ?1 "
                                  "AND state IN ('queued', 'running') ORDER BY id"));
    select.Bind(1, sweep_id);
    std::vector<std::string> live_leases;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      const int state = StateFromName(select.Text(1));
      cancelled.emplace_back(select.Int64(0), state);
      if (state == v1::TRIAL_RUNNING && !select.IsNull(2)) live_leases.push_back(select.Text(2));
    }
    // Workers holding these learn it from their next heartbeat.
    for (const std::string& lease_id : live_leases) {
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'cancelled', ended_ms = ?2 "
                           "WHERE id = ?1 AND outcome IS NULL",
                           lease_id, now_ms));
    }
  }
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'cancelled', finished_ms = ?2, "
                       "lease_deadline_ms = NULL, duplicate_of = NULL, "
                       "error = CASE WHEN error = '' THEN 'sweep cancelled' ELSE error END "
                       "WHERE sweep_id = ?1 AND state IN ('queued', 'running')",
                       sweep_id, now_ms));
  for (const auto& [trial_id, state] : cancelled) {
    effects.Move(state, v1::TRIAL_CANCELLED);
    RETURN_IF_ERROR(PromoteDuplicates(trial_id, effects));  // identical trials of other sweeps
  }
  RETURN_IF_ERROR(EndSweep(sweep_id, v1::SWEEP_CANCELLED, "", now_ms, effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  return BuildSweep(sweep_id);
}

absl::StatusOr<v1::Sweep> SqliteCoordinator::ResumeSweep(int64_t sweep_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(v1::Sweep sweep, BuildSweep(sweep_id));
  if (sweep.state() != v1::SWEEP_FAILED && sweep.state() != v1::SWEEP_CANCELLED) {
    return absl::FailedPreconditionError(
        absl::StrCat("sweep ", sweep_id, " is ", StateName(sweep.state()),
                     ": only a failed or cancelled sweep can be resumed"));
  }
  std::vector<std::pair<int64_t, int>> requeued;  // trial id, previous state
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, state FROM trials WHERE sweep_id = ?1 "
                                  "AND state IN ('failed', 'cancelled') ORDER BY id"));
    select.Bind(1, sweep_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      requeued.emplace_back(select.Int64(0), StateFromName(select.Text(1)));
    }
  }
  // Fresh attempts; the last error stays readable until the trial runs again.
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', attempts = 0, lost_leases = 0, "
                       "finished_ms = NULL, lease_deadline_ms = NULL, "
                       "duplicate_of = NULL "
                       "WHERE sweep_id = ?1 AND state IN ('failed', 'cancelled')",
                       sweep_id));
  for (const auto& [trial_id, state] : requeued) effects.Move(state, v1::TRIAL_QUEUED);
  if (!requeued.empty()) effects.work_queued = true;
  RETURN_IF_ERROR(Exec("UPDATE sweeps SET state = 'running', error = '', finished_ms = NULL "
                       "WHERE id = ?1",
                       sweep_id));
  effects.touched_sweeps.insert(sweep_id);
  // Nothing to run again (the planner itself had failed): it plans from the results it has.
  RETURN_IF_ERROR(AdvanceSweep(sweep_id, /*at_submit=*/false, now_ms, effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  return BuildSweep(sweep_id);
}

// ---------------------------------------------------------------------------------------------
// Trials and results.

absl::StatusOr<v1::ListTrialsResponse> SqliteCoordinator::ListTrials(
    const v1::ListTrialsRequest& r) {
  if (r.sweep_id() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep_id: required, got ", r.sweep_id()));
  }
  ASSIGN_OR_RETURN(int page_size, ResolvePageSize(r.page_size(), kDefaultTrialPageSize));
  ASSIGN_OR_RETURN(int64_t after_id, ParsePageToken(r.page_token()));
  if (r.state() != v1::TRIAL_STATE_UNSPECIFIED && StateName(r.state())[0] == '\0') {
    return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", r.state()));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::optional<int64_t> exists,
                   QueryInt("SELECT 1 FROM sweeps WHERE id = ?1", r.sweep_id()));
  if (!exists.has_value()) {
    return absl::NotFoundError(absl::StrCat("sweep ", r.sweep_id(), " not found"));
  }
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(absl::StrCat(
          kTrialSelect,
          "WHERE t.sweep_id = ?1 AND t.id > ?2 AND (?3 = '' OR t.state = ?3) "
          "AND (?4 = '' OR t.stage = ?4) "
          "AND (?5 = 0 OR (t.state = 'succeeded' AND s.baseline_top1 IS NOT NULL "
          "AND r.top1 >= s.baseline_top1 - s.error_margin / 100.0 - 1e-9)) "
          "ORDER BY t.id LIMIT ?6")));
  select.BindAll(r.sweep_id(), after_id,
                 r.state() == v1::TRIAL_STATE_UNSPECIFIED ? "" : StateName(r.state()), r.stage(),
                 r.within_margin_only(), static_cast<int64_t>(page_size) + 1);
  v1::ListTrialsResponse response;
  int64_t last_id = 0;
  size_t page_bytes = 0;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (response.trials_size() == page_size || page_bytes >= kMaxPageBytes) {
      response.set_next_page_token(absl::StrCat(last_id));
      break;
    }
    v1::Trial* trial = response.add_trials();
    ASSIGN_OR_RETURN(*trial, ReadTrial(select));
    page_bytes += trial->ByteSizeLong();
    last_id = trial->id();
  }
  return response;
}

absl::StatusOr<v1::Frontier> SqliteCoordinator::GetFrontier(const v1::GetFrontierRequest& r) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(r.sweep_id()));
  absl::StatusOr<std::vector<v1::Objective>> objectives =
      ResolveObjectives(ToObjectives(r.objectives()), sweep->objectives);
  if (!objectives.ok()) return Annotate(objectives.status(), "objectives");
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT baseline_top1 FROM sweeps WHERE id = ?1"));
  select.Bind(1, r.sweep_id());
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("sweep ", r.sweep_id(), " not found"));
  const std::optional<double> baseline = select.OptionalDouble(0);

  // The numbers of every succeeded trial (no protos: a sweep may hold 100,000 of them), then
  // full specs and results only for the points on the frontier.
  std::vector<v1::Trial> candidates;
  {
    ASSIGN_OR_RETURN(Statement numbers,
                     db_->Prepare("SELECT t.id, r.top1, r.top5, r.size_bits, r.energy_pj, "
                                  "r.bops FROM trials t "
                                  "JOIN results r ON r.trial_id = coalesce(t.cached_from, t.id) "
                                  "WHERE t.sweep_id = ?1 AND t.state = 'succeeded' "
                                  "ORDER BY t.id"));
    numbers.Bind(1, r.sweep_id());
    for (;;) {
      ASSIGN_OR_RETURN(bool row, numbers.Step());
      if (!row) break;
      v1::Trial& trial = candidates.emplace_back();
      trial.set_id(numbers.Int64(0));
      trial.set_sweep_id(r.sweep_id());
      trial.set_state(v1::TRIAL_SUCCEEDED);
      trial.mutable_result()->set_top1(numbers.Double(1));
      trial.mutable_result()->set_top5(numbers.Double(2));
      trial.mutable_result()->set_size_bits(numbers.Int64(3));
      trial.mutable_result()->set_energy_pj(numbers.Double(4));
      trial.mutable_result()->set_bops(numbers.Int64(5));
    }
  }
  v1::Frontier frontier = BuildFrontier(r.sweep_id(), candidates, *objectives, baseline,
                                        sweep->error_margin, r.within_margin_only());
  ASSIGN_OR_RETURN(Statement detail,
                   db_->Prepare(absl::StrCat(kTrialSelect, "WHERE t.id = ?1")));
  for (v1::FrontierPoint& point : *frontier.mutable_points()) {
    detail.Reset();
    detail.Bind(1, point.trial_id());
    ASSIGN_OR_RETURN(bool row, detail.Step());
    if (!row) continue;
    ASSIGN_OR_RETURN(v1::Trial trial, ReadTrial(detail));
    *point.mutable_spec() = trial.spec();
    *point.mutable_result() = trial.result();
  }
  return frontier;
}

absl::StatusOr<v1::ExportConfigResponse> SqliteCoordinator::ExportConfig(
    const v1::ExportConfigRequest& r) {
  v1::ExportConfigResponse response;
  v1::Trial trial;
  std::string model_hash;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare(absl::StrCat(kTrialSelect, "WHERE t.id = ?1")));
    select.Bind(1, r.trial_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    ASSIGN_OR_RETURN(trial, ReadTrial(select));
    const std::string canonical_config = select.Text(14);
    if (trial.state() != v1::TRIAL_SUCCEEDED) {
      return absl::FailedPreconditionError(
          absl::StrCat("trial ", trial.id(), " has no result to export (it is ",
                       StateName(trial.state()), ")"));
    }
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id()));
    model_hash = sweep->spec.model_hash();
    response.set_manifest_json(BuildConfigManifest(trial, model_hash, canonical_config));
  }
  if (r.qdq_onnx()) {
    if (trial.spec().finetune().steps() > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "trial ", trial.id(), " was fine-tuned (", trial.spec().finetune().steps(),
          " steps): its tuned weights stayed on the worker and the stored model holds the "
          "untuned ones, so a QDQ model would not be what was measured; export its manifest, "
          "or rebuild the weights with 'bitsweep finetune --model M.onnx --config C.json --dataset D --steps N --out F.onnx'"));
    }
    ASSIGN_OR_RETURN(std::string model, GetModelBytes(model_hash));
    absl::StatusOr<std::string> qdq = BuildQdqModel(model, trial.result());
    if (!qdq.ok()) return Annotate(qdq.status(), absl::StrCat("trial ", trial.id()));
    response.set_qdq_onnx(*std::move(qdq));
  }
  return response;
}

absl::StatusOr<int64_t> SqliteCoordinator::WaitForSweepChange(int64_t sweep_id,
                                                              int64_t seen_version,
                                                              absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  for (;;) {
    ASSIGN_OR_RETURN(std::optional<int64_t> version,
                     QueryInt("SELECT version FROM sweeps WHERE id = ?1", sweep_id));
    if (!version.has_value()) {
      return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    }
    if (*version != seen_version) return *version;
    const absl::Duration remaining = deadline - absl::Now();
    if (remaining <= absl::ZeroDuration()) return *version;
    sweep_changed_.WaitWithTimeout(&mu_, remaining);
  }
}

absl::Status SqliteCoordinator::OnTrialSucceeded(int64_t sweep_id, int64_t trial_id,
                                                 absl::string_view stage,
                                                 int64_t result_trial_id, Effects& effects,
                                                 const v1::TrialResult* stored) {
  effects.touched_sweeps.insert(sweep_id);
  ResultSummary summary;
  summary.trial_id = trial_id;
  if (stored != nullptr) {  // just stored by this call: no need to read it back
    summary.result.set_top1(stored->top1());
    summary.result.set_top5(stored->top5());
    summary.result.set_size_bits(stored->size_bits());
    summary.result.set_energy_pj(stored->energy_pj());
    summary.result.set_bops(stored->bops());
  } else {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT top1, top5, size_bits, energy_pj, bops FROM results "
                                  "WHERE trial_id = ?1"));
    select.Bind(1, result_trial_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      return absl::InternalError(absl::StrCat("result of trial ", result_trial_id, " missing"));
    }
    summary.result.set_top1(select.Double(0));
    summary.result.set_top5(select.Double(1));
    summary.result.set_size_bits(select.Int64(2));
    summary.result.set_energy_pj(select.Double(3));
    summary.result.set_bops(select.Int64(4));
  }

  std::optional<double> baseline;
  double error_margin = 0;
  std::optional<int64_t> best_trial_id;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT baseline_top1, error_margin, best_trial_id FROM sweeps "
                                  "WHERE id = ?1"));
    select.Bind(1, sweep_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
    baseline = select.OptionalDouble(0);
    error_margin = select.Double(1);
    best_trial_id = select.OptionalInt64(2);
  }
  const double top1 = summary.result.top1();
  if (!baseline.has_value()) {
    if (stage != "baseline") return absl::OkStatus();  // nothing is "within margin" yet
    RETURN_IF_ERROR(
        Exec("UPDATE sweeps SET baseline_top1 = ?2 WHERE id = ?1", sweep_id, top1));
    return RecomputeBestTrial(sweep_id, MarginThreshold(top1, error_margin));
  }
  if (top1 < MarginThreshold(*baseline, error_margin)) return absl::OkStatus();
  if (best_trial_id.has_value()) {
    ASSIGN_OR_RETURN(Statement best,
                     db_->Prepare("SELECT r.top1, r.size_bits FROM trials t JOIN results r "
                                  "ON r.trial_id = coalesce(t.cached_from, t.id) "
                                  "WHERE t.id = ?1"));
    best.Bind(1, *best_trial_id);
    ASSIGN_OR_RETURN(bool row, best.Step());
    if (row) {
      const double best_top1 = best.Double(0);
      const int64_t best_size = best.Int64(1);
      const int64_t size = summary.result.size_bits();
      const bool better = size < best_size || (size == best_size && top1 > best_top1);
      if (!better) return absl::OkStatus();
    }
  }
  return Exec("UPDATE sweeps SET best_trial_id = ?2 WHERE id = ?1", sweep_id, trial_id);
}

absl::Status SqliteCoordinator::RecomputeBestTrial(int64_t sweep_id, double threshold) {
  ASSIGN_OR_RETURN(std::optional<int64_t> best,
                   QueryInt("SELECT t.id FROM trials t JOIN results r "
                            "ON r.trial_id = coalesce(t.cached_from, t.id) "
                            "WHERE t.sweep_id = ?1 AND t.state = 'succeeded' AND r.top1 >= ?2 "
                            "ORDER BY r.size_bits, r.top1 DESC, t.id LIMIT 1",
                            sweep_id, threshold));
  return Exec("UPDATE sweeps SET best_trial_id = ?2 WHERE id = ?1", sweep_id, best);
}

absl::StatusOr<std::set<int64_t>> SqliteCoordinator::CompleteDuplicates(int64_t original_id,
                                                                        int64_t now_ms,
                                                                        Effects& effects) {
  struct Waiting {
    int64_t id, sweep_id;
    std::string stage;
  };
  std::vector<Waiting> waiting;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, stage FROM trials "
                                  "WHERE duplicate_of = ?1 AND state = 'queued' ORDER BY id"));
    select.Bind(1, original_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      waiting.push_back({select.Int64(0), select.Int64(1), select.Text(2)});
    }
  }
  std::set<int64_t> sweeps;
  for (const Waiting& trial : waiting) {
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'succeeded', cached = 1, cached_from = ?2, "
                         "duplicate_of = NULL, finished_ms = ?3 WHERE id = ?1",
                         trial.id, original_id, now_ms));
    effects.Move(v1::TRIAL_QUEUED, v1::TRIAL_SUCCEEDED);
    RETURN_IF_ERROR(OnTrialSucceeded(trial.sweep_id, trial.id, trial.stage, original_id, effects));
    sweeps.insert(trial.sweep_id);
  }
  return sweeps;
}

absl::Status SqliteCoordinator::PromoteDuplicates(int64_t original_id, Effects& effects) {
  ASSIGN_OR_RETURN(std::optional<int64_t> successor,
                   QueryInt("SELECT id FROM trials WHERE duplicate_of = ?1 AND state = 'queued' "
                            "ORDER BY id LIMIT 1",
                            original_id));
  if (!successor.has_value()) return absl::OkStatus();
  RETURN_IF_ERROR(Exec("UPDATE trials SET duplicate_of = NULL WHERE id = ?1", *successor));
  RETURN_IF_ERROR(Exec("UPDATE trials SET duplicate_of = ?2 WHERE duplicate_of = ?1 "
                       "AND state = 'queued'",
                       original_id, *successor));
  effects.work_queued = true;
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::FailTrial(int64_t trial_id, int64_t sweep_id, int from_state,
                                          absl::string_view error, int64_t now_ms,
                                          Effects& effects) {
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'failed', error = ?2, finished_ms = ?3, "
                       "lease_deadline_ms = NULL WHERE id = ?1",
                       trial_id, error, now_ms));
  effects.Move(from_state, v1::TRIAL_FAILED);
  effects.touched_sweeps.insert(sweep_id);
  RETURN_IF_ERROR(PromoteDuplicates(trial_id, effects));
  return AdvanceSweep(sweep_id, /*at_submit=*/false, now_ms, effects);
}

absl::Status SqliteCoordinator::StoreResult(int64_t trial_id, const SweepInfo& sweep,
                                            absl::string_view dedup_key,
                                            const v1::ReportRequest& report, int64_t now_ms) {
  v1::TrialResult result = report.result();
  if (result.worker_id().empty()) result.set_worker_id(report.worker_id());
  std::optional<double> loss;
  if (std::isfinite(result.loss())) loss = result.loss();
  std::optional<double> top1_before_finetune;
  if (result.has_top1_before_finetune()) {
    top1_before_finetune = result.top1_before_finetune();
  }
  RETURN_IF_ERROR(Exec(
      "INSERT INTO results(trial_id, dedup_key, lease_id, worker_id, top1, top5, loss, samples, "
      "size_bits, peak_activation_bits, activation_bits, bops, macs, energy_pj, "
      "hardware_profile, wall_seconds, images_per_second, engine_version, "
      "top1_before_finetune, result_proto, created_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
      "?19, ?20, ?21)",
      trial_id, dedup_key, report.lease_id(), report.worker_id(), result.top1(), result.top5(),
      loss, result.samples(), result.size_bits(), result.peak_activation_bits(),
      result.activation_bits(), result.bops(), result.macs(), result.energy_pj(),
      result.hardware_profile(), result.wall_seconds(), result.images_per_second(),
      result.engine_version(), top1_before_finetune, Blob{result.SerializeAsString()}, now_ms));

  auto optional_params = [](const v1::LayerResult& layer, const v1::QuantParams& params,
                            bool present) {
    struct Columns {
      std::optional<std::string> format;
      std::optional<int64_t> bits, fractional_bits, max_exponent;
      std::optional<std::string> scale, zero_point;
    } columns;
    if (!present || params.format().empty()) return columns;
    columns.format = params.format();
    columns.bits = params.bits();
    if (params.has_fractional_bits()) columns.fractional_bits = params.fractional_bits();
    if (params.has_max_exponent()) columns.max_exponent = params.max_exponent();
    if (params.scale_size() > 0) {
      columns.scale = absl::StrCat("[", absl::StrJoin(params.scale(), ","), "]");
    }
    if (params.zero_point_size() > 0) {
      columns.zero_point = absl::StrCat("[", absl::StrJoin(params.zero_point(), ","), "]");
    }
    return columns;
  };
  const v1::EvalSettings settings = NormalizedEvalSettings(sweep.spec.settings());
  for (int i = 0; i < result.layers_size(); ++i) {
    const v1::LayerResult& layer = result.layers(i);
    auto w = optional_params(layer, layer.weights(), layer.has_weights());
    auto in = optional_params(layer, layer.inputs(), layer.has_inputs());
    auto out = optional_params(layer, layer.outputs(), layer.has_outputs());
    RETURN_IF_ERROR(Exec(
        "INSERT INTO trial_layers(trial_id, layer_index, name, layer_class, weights_format, "
        "weights_bits, weights_fractional_bits, weights_scale, weights_zero_point, "
        "weights_max_exponent, inputs_format, inputs_bits, inputs_fractional_bits, "
        "inputs_scale, inputs_zero_point, outputs_format, outputs_bits, "
        "outputs_fractional_bits, outputs_scale, outputs_zero_point, macs, weight_count, "
        "weight_bits, activation_bits, bops, energy_pj) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
        "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
        trial_id, static_cast<int64_t>(i), layer.name(), layer.layer_class(), w.format, w.bits,
        w.fractional_bits, w.scale, w.zero_point, w.max_exponent, in.format, in.bits,
        in.fractional_bits, in.scale, in.zero_point, out.format, out.bits, out.fractional_bits,
        out.scale, out.zero_point, layer.macs(), layer.weight_count(), layer.weight_bits(),
        layer.activation_bits(), layer.bops(), layer.energy_pj()));
    const bool has_input = layer.input_range().count() > 0;
    const bool has_output = layer.output_range().count() > 0;
    if (!has_input && !has_output) continue;
    auto range_value = [](bool has, double value) {
      return has ? std::optional<double>(value) : std::nullopt;
    };
    auto range_count = [](bool has, int64_t value) {
      return has ? std::optional<int64_t>(value) : std::nullopt;
    };
    RETURN_IF_ERROR(Exec(
        "INSERT OR REPLACE INTO calibration_stats(model_hash, dataset, calibration_samples, "
        "layer, input_min, input_max, input_count, output_min, output_max, output_count, "
        "trial_id, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        sweep.spec.model_hash(), settings.dataset().train(),
        settings.dataset().calibration_samples(), layer.name(),
        range_value(has_input, layer.input_range().min()),
        range_value(has_input, layer.input_range().max()),
        range_count(has_input, layer.input_range().count()),
        range_value(has_output, layer.output_range().min()),
        range_value(has_output, layer.output_range().max()),
        range_count(has_output, layer.output_range().count()), trial_id, now_ms));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// WorkerService.

absl::StatusOr<v1::RegisterResponse> SqliteCoordinator::RegisterWorker(
    const v1::RegisterRequest& r) {
  if (r.threads() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads: must be >= 0, got ", r.threads()));
  }
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = NowMs();
  const std::string worker_id = absl::StrCat("w-", RandomHex(8));
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  RETURN_IF_ERROR(Exec("INSERT INTO workers(id, name, threads, engine_version, registered_ms, "
                       "last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                       worker_id, r.name(), static_cast<int64_t>(r.threads()),
                       r.engine_version(), now_ms));
  RETURN_IF_ERROR(txn.Commit());
  worker_seen_written_ms_[worker_id] = now_ms;
  RETURN_IF_ERROR(RefreshWorkersConnected(/*force=*/true));
  v1::RegisterResponse response;
  response.set_worker_id(worker_id);
  response.set_lease_duration_ms(absl::ToInt64Milliseconds(options_.lease_duration));
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  return response;
}

absl::Status SqliteCoordinator::ExpireLeasesLocked(int64_t now_ms, Effects& effects) {
  struct Expired {
    int64_t id, sweep_id, lost;
    std::string error, lease_id;
  };
  std::vector<Expired> expired;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, lost_leases + 1, error, lease_id "
                                  "FROM trials WHERE state = 'running' "
                                  "AND lease_deadline_ms < ?1"));
    select.Bind(1, now_ms);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      expired.push_back({select.Int64(0), select.Int64(1), select.Int64(2), select.Text(3),
                         select.Text(4)});
    }
  }
  // Sorted here, not by ORDER BY id: that makes SQLite walk the whole table in rowid order
  // instead of the small partial index of running trials, on every Lease and Heartbeat.
  std::sort(expired.begin(), expired.end(),
            [](const Expired& a, const Expired& b) { return a.id < b.id; });
  for (const Expired& trial : expired) {
    effects.lease_expiries += 1;
    RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'expired', ended_ms = ?2 "
                         "WHERE id = ?1 AND outcome IS NULL",
                         trial.lease_id, now_ms));
    RETURN_IF_ERROR(Exec("UPDATE trials SET lost_leases = ?2 WHERE id = ?1", trial.id,
                         trial.lost));
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id));
    if (trial.lost >= LostLeaseCap(sweep->max_attempts)) {
      const std::string error =
          trial.error.empty() ? absl::StrCat("lease expired ", trial.lost, " times")
                              : trial.error;
      RETURN_IF_ERROR(
          FailTrial(trial.id, trial.sweep_id, v1::TRIAL_RUNNING, error, now_ms, effects));
    } else {
      RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', lease_deadline_ms = NULL "
                           "WHERE id = ?1",
                           trial.id));
      effects.Move(v1::TRIAL_RUNNING, v1::TRIAL_QUEUED);
      effects.retries.push_back("lease_expired");
      effects.work_queued = true;
      effects.touched_sweeps.insert(trial.sweep_id);
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  Effects effects;
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  RETURN_IF_ERROR(ExpireLeasesLocked(NowMs(), effects));
  RETURN_IF_ERROR(Commit(txn, effects));
  // Workers that stopped calling are noticed here too, not only on the next worker call.
  return RefreshWorkersConnected(/*force=*/true);
}

absl::Status SqliteCoordinator::LeaseLocked(const v1::LeaseRequest& r, int64_t now_ms,
                                            v1::LeaseResponse& out, Effects& effects) {
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  RETURN_IF_ERROR(ExpireLeasesLocked(now_ms, effects));
  const int64_t limit = std::clamp(r.max_trials() == 0 ? 1 : r.max_trials(), 1, kMaxLeaseBatch);
  struct Queued {
    int64_t id, sweep_id, attempts;
    std::string spec_bytes, config_hash;
  };
  std::vector<Queued> queued;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, sweep_id, attempts, spec_proto, config_hash "
                                  "FROM trials WHERE state = 'queued' AND duplicate_of IS NULL "
                                  "ORDER BY sweep_id, id LIMIT ?1"));
    select.Bind(1, limit);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      queued.push_back({select.Int64(0), select.Int64(1), select.Int64(2),
                        select.BlobColumn(3), select.Text(4)});
    }
  }
  const int64_t deadline_ms = now_ms + absl::ToInt64Milliseconds(options_.lease_duration);
  for (const Queued& trial : queued) {
    const int64_t attempt = trial.attempts + 1;
    const std::string lease_id = absl::StrCat(trial.id, "-", attempt, "-", LeaseSuffix());
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'running', attempts = ?2, lease_id = ?3, "
                         "worker_id = ?4, lease_deadline_ms = ?5, "
                         "started_ms = coalesce(started_ms, ?6) WHERE id = ?1",
                         trial.id, attempt, lease_id, r.worker_id(), deadline_ms, now_ms));
    RETURN_IF_ERROR(Exec("INSERT INTO leases(id, trial_id, worker_id, attempt, leased_ms) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
                         lease_id, trial.id, r.worker_id(), attempt, now_ms));
    ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(trial.sweep_id));
    if (!sweep->known_running) {
      RETURN_IF_ERROR(Exec(
          "UPDATE sweeps SET state = 'running' WHERE id = ?1 AND state = 'queued'",
          trial.sweep_id));
      effects.sweeps_started.push_back(trial.sweep_id);
    }
    effects.Move(v1::TRIAL_QUEUED, v1::TRIAL_RUNNING);
    effects.touched_sweeps.insert(trial.sweep_id);
    effects.attempts += 1;
    v1::LeasedTrial& leased = *out.add_trials();
    leased.set_trial_id(trial.id);
    leased.set_lease_id(lease_id);
    leased.set_deadline_ms(deadline_ms);
    leased.set_attempt(static_cast<int32_t>(attempt));
    leased.set_model_hash(sweep->spec.model_hash());
    *leased.mutable_settings() = sweep->spec.settings();
    if (!leased.mutable_spec()->ParseFromString(trial.spec_bytes)) {
      return absl::InternalError(absl::StrCat("trial ", trial.id, ": stored spec is corrupt"));
    }
    leased.set_config_hash(trial.config_hash);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::LeaseResponse> SqliteCoordinator::Lease(const v1::LeaseRequest& r) {
  if (r.max_trials() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_trials: must be >= 0, got ", r.max_trials()));
  }
  // A long poll lasts at most one heartbeat interval: an idle worker then calls again, is seen,
  // and stays counted in bitsweep_workers_connected (three intervals).
  const absl::Time wait_until =
      absl::Now() + std::min(absl::Milliseconds(std::max<int64_t>(0, r.wait_ms())),
                             options_.heartbeat_interval);
  for (;;) {
    v1::LeaseResponse response;
    int64_t generation = 0;
    GroupOp op;
    op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      response.Clear();
      generation = work_generation_;
      return LeaseLocked(r, NowMs(), response, effects);
    };
    RETURN_IF_ERROR(RunGrouped(op));
    if (response.trials_size() > 0) return response;
    if (wait_until - absl::Now() <= absl::ZeroDuration()) return response;
    // Woken when trials were queued since the attempt; the loop re-checks (another worker may
    // have taken them). The long poll itself is outside any transaction.
    absl::MutexLock lock(&mu_);
    while (work_generation_ == generation) {
      const absl::Duration remaining = wait_until - absl::Now();
      if (remaining <= absl::ZeroDuration()) break;
      work_available_.WaitWithTimeout(&mu_, remaining);
    }
  }
}

absl::StatusOr<v1::HeartbeatResponse> SqliteCoordinator::Heartbeat(
    const v1::HeartbeatRequest& r) {
  v1::HeartbeatResponse response;
  GroupOp op;
  op.force_workers_refresh = true;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    response.Clear();
    return HeartbeatLocked(r, NowMs(), response, effects);
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

absl::Status SqliteCoordinator::HeartbeatLocked(const v1::HeartbeatRequest& r, int64_t now_ms,
                                                v1::HeartbeatResponse& response,
                                                Effects& effects) {
  const int64_t deadline_ms = now_ms + absl::ToInt64Milliseconds(options_.lease_duration);
  response.set_deadline_ms(deadline_ms);
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  // Leases that ran out before this heartbeat are gone: the worker hears so below.
  RETURN_IF_ERROR(ExpireLeasesLocked(now_ms, effects));
  for (const std::string& lease_id : r.lease_ids()) {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT trial_id, worker_id, outcome FROM leases "
                                  "WHERE id = ?1"));
    select.Bind(1, lease_id);
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row || select.Text(1) != r.worker_id()) {
      response.add_lost_lease_ids(lease_id);
      continue;
    }
    const int64_t trial_id = select.Int64(0);
    const bool live = select.IsNull(2);
    const std::string outcome = select.Text(2);
    if (live) {
      RETURN_IF_ERROR(Exec("UPDATE trials SET lease_deadline_ms = ?3 WHERE id = ?1 "
                           "AND lease_id = ?2 AND state = 'running'",
                           trial_id, lease_id, deadline_ms));
      if (db_->Changes() == 0) response.add_lost_lease_ids(lease_id);
    } else if (outcome == "cancelled") {
      response.add_cancelled_lease_ids(lease_id);
    } else {
      response.add_lost_lease_ids(lease_id);
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteCoordinator::CheckLayersOfModel(const std::string& model_hash,
                                                   const v1::TrialResult& result) {
  if (result.layers_size() == 0) return absl::OkStatus();
  auto known = model_layers_.find(model_hash);
  if (known == model_layers_.end()) {
    ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT name, layer_class FROM trial_layers WHERE trial_id = ("
                     "SELECT t.id FROM sweeps s JOIN trials t ON t.sweep_id = s.id "
                     "JOIN results r ON r.trial_id = t.id WHERE s.model_hash = ?1 "
                     "AND EXISTS (SELECT 1 FROM trial_layers l WHERE l.trial_id = t.id) "
                     "LIMIT 1) ORDER BY layer_index"));
    select.Bind(1, model_hash);
    std::vector<std::pair<std::string, std::string>> layers;
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      layers.emplace_back(select.Text(0), select.Text(1));
    }
    if (layers.empty()) return absl::OkStatus();  // nothing known about this model yet
    known = model_layers_.emplace(model_hash, std::move(layers)).first;
  }
  const auto& layers = known->second;
  auto names = [](auto begin, auto end, auto name_of) {
    std::vector<std::string> out;
    for (auto it = begin; it != end; ++it) out.push_back(name_of(*it));
    return absl::StrJoin(out, ",");
  };
  bool same = static_cast<int>(layers.size()) == result.layers_size();
  for (int i = 0; same && i < result.layers_size(); ++i) {
    same = layers[i].first == result.layers(i).name() &&
           layers[i].second == result.layers(i).layer_class();
  }
  if (same) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "result.layers: [",
      names(result.layers().begin(), result.layers().end(),
            [](const v1::LayerResult& l) { return absl::StrCat(l.name(), ":", l.layer_class()); }),
      "] are not the model's quantizable layers [",
      names(layers.begin(), layers.end(),
            [](const auto& l) { return absl::StrCat(l.first, ":", l.second); }),
      "]"));
}

absl::StatusOr<bool> SqliteCoordinator::ReportLocked(const v1::ReportRequest& r, int64_t now_ms,
                                                     Effects& effects) {
  RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
  // The lease decides idempotency: its first report's answer is every later report's answer.
  int64_t lease_trial_id = 0;
  int64_t leased_ms = 0;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT trial_id, report_accepted, leased_ms, worker_id, "
                                  "outcome FROM leases WHERE id = ?1"));
    select.Bind(1, r.lease_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (row) {
      // Only the worker the lease was handed to may report on it (and settle its answer).
      if (select.Text(3) != r.worker_id()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "lease ", r.lease_id(), " belongs to another worker, not ", r.worker_id()));
      }
      lease_trial_id = select.Int64(0);
      if (lease_trial_id == r.trial_id() && !select.IsNull(1)) return select.Int64(1) != 0;
      if (lease_trial_id == r.trial_id() && !select.IsNull(4) && select.Text(4) == "returned") {
        // The worker gave this lease back: whatever it reports later is not its trial's.
        RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0 WHERE id = ?1", r.lease_id()));
        effects.reports.push_back("refused");
        return false;
      }
      leased_ms = select.Int64(2);
    }
  }
  if (lease_trial_id != r.trial_id()) {
    ASSIGN_OR_RETURN(std::optional<int64_t> exists,
                     QueryInt("SELECT 1 FROM trials WHERE id = ?1", r.trial_id()));
    if (!exists.has_value()) {
      return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    }
    effects.reports.push_back("refused");
    return false;  // a lease this trial never had: nothing to store
  }

  int64_t sweep_id = 0, attempts = 0;
  int state = 0;
  std::string current_lease, stage, dedup_key;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT sweep_id, state, attempts - lost_leases, lease_id, "
                                  "stage, dedup_key FROM trials WHERE id = ?1"));
    select.Bind(1, r.trial_id());
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("trial ", r.trial_id(), " not found"));
    sweep_id = select.Int64(0);
    state = StateFromName(select.Text(1));
    attempts = select.Int64(2);
    current_lease = select.Text(3);
    stage = select.Text(4);
    dedup_key = select.Text(5);
  }
  if (state != v1::TRIAL_QUEUED && state != v1::TRIAL_RUNNING) {
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0 WHERE id = ?1", r.lease_id()));
    effects.reports.push_back("refused");
    return false;  // finished (another attempt reported first, or it was cancelled)
  }
  ASSIGN_OR_RETURN(SweepInfo * sweep, GetSweepInfo(sweep_id));
  const bool is_current_lease = state == v1::TRIAL_RUNNING && current_lease == r.lease_id();
  // Ends this lease with `outcome` (if still live) and, when another lease of the trial is
  // live, that one as superseded (its worker hears "lost" at its next heartbeat).
  auto end_leases = [&](absl::string_view outcome, bool trial_finished) -> absl::Status {
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 1, "
                         "outcome = coalesce(outcome, ?2), ended_ms = coalesce(ended_ms, ?3) "
                         "WHERE id = ?1",
                         r.lease_id(), outcome, now_ms));
    if (trial_finished && state == v1::TRIAL_RUNNING && !is_current_lease) {
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'superseded', ended_ms = ?2 "
                           "WHERE id = ?1 AND outcome IS NULL",
                           current_lease, now_ms));
    }
    return absl::OkStatus();
  };
  effects.touched_sweeps.insert(sweep_id);

  if (r.has_result()) {
    RETURN_IF_ERROR(CheckLayersOfModel(sweep->spec.model_hash(), r.result()));
    RETURN_IF_ERROR(StoreResult(r.trial_id(), *sweep, dedup_key, r, now_ms));
    RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'succeeded', finished_ms = ?2, "
                         "lease_deadline_ms = NULL WHERE id = ?1",
                         r.trial_id(), now_ms));
    effects.Move(state, v1::TRIAL_SUCCEEDED);
    RETURN_IF_ERROR(end_leases("result", /*trial_finished=*/true));
    effects.trial_durations.push_back((now_ms - leased_ms) / 1000.0);
    effects.reports.push_back("result");
    RETURN_IF_ERROR(
        OnTrialSucceeded(sweep_id, r.trial_id(), stage, r.trial_id(), effects, &r.result()));
    ASSIGN_OR_RETURN(std::set<int64_t> other_sweeps,
                     CompleteDuplicates(r.trial_id(), now_ms, effects));
    other_sweeps.insert(sweep_id);
    for (int64_t id : other_sweeps) {
      RETURN_IF_ERROR(AdvanceSweep(id, /*at_submit=*/false, now_ms, effects));
    }
    return true;
  }
  if (!r.has_error()) {
    return absl::InvalidArgumentError("report: neither result nor error is set");
  }
  const std::string& message = r.error().message().empty() ? std::string("unknown worker error")
                                                           : r.error().message();
  if (r.error().permanent()) {
    RETURN_IF_ERROR(end_leases("error", /*trial_finished=*/true));
    effects.reports.push_back("permanent_error");
    RETURN_IF_ERROR(FailTrial(r.trial_id(), sweep_id, state, message, now_ms, effects));
    return true;
  }
  if (!is_current_lease) {
    // A stale lease's transient failure: its attempt was already counted when it expired and
    // the trial runs (or waits) under another lease; nothing is stored, and the answer says so.
    RETURN_IF_ERROR(Exec("UPDATE leases SET report_accepted = 0, outcome = coalesce(outcome, "
                         "'error'), ended_ms = coalesce(ended_ms, ?2) WHERE id = ?1",
                         r.lease_id(), now_ms));
    effects.reports.push_back("refused");
    return false;
  }
  effects.reports.push_back("error");
  RETURN_IF_ERROR(end_leases("error", /*trial_finished=*/false));
  if (attempts >= sweep->max_attempts) {
    RETURN_IF_ERROR(FailTrial(r.trial_id(), sweep_id, state, message, now_ms, effects));
    return true;
  }
  RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', error = ?2, "
                       "lease_deadline_ms = NULL WHERE id = ?1",
                       r.trial_id(), message));
  effects.Move(state, v1::TRIAL_QUEUED);
  effects.retries.push_back("error");
  effects.work_queued = true;
  return true;
}

absl::StatusOr<v1::InvalidateTrialResponse> SqliteCoordinator::InvalidateTrial(
    int64_t trial_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  ASSIGN_OR_RETURN(std::optional<int64_t> evaluated,
                   QueryInt("SELECT coalesce(cached_from, id) FROM trials WHERE id = ?1",
                            trial_id));
  if (!evaluated.has_value()) {
    return absl::NotFoundError(absl::StrCat("trial ", trial_id, " not found"));
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> already,
                   QueryInt("SELECT invalidated_ms IS NOT NULL FROM results WHERE trial_id = ?1",
                            *evaluated));
  if (!already.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("trial ", trial_id, " has no result to invalidate"));
  }
  v1::InvalidateTrialResponse response;
  response.set_evaluated_trial_id(*evaluated);
  response.set_invalidated(*already == 0);
  if (*already == 0) {
    RETURN_IF_ERROR(Exec("UPDATE results SET invalidated_ms = ?2 WHERE trial_id = ?1",
                         *evaluated, NowMs()));
  }
  RETURN_IF_ERROR(txn.Commit());
  return response;
}

absl::StatusOr<v1::ReturnLeasesResponse> SqliteCoordinator::ReturnLeases(
    const v1::ReturnLeasesRequest& r) {
  v1::ReturnLeasesResponse response;
  GroupOp op;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    response.Clear();
    const int64_t now_ms = NowMs();
    RETURN_IF_ERROR(TouchWorker(r.worker_id(), now_ms, effects));
    for (const std::string& lease_id : r.lease_ids()) {
      // Only a live lease of this worker that is still its trial's current one.
      ASSIGN_OR_RETURN(Statement select,
                       db_->Prepare("SELECT t.id, t.sweep_id FROM leases l JOIN trials t "
                                    "ON t.id = l.trial_id AND t.lease_id = l.id "
                                    "WHERE l.id = ?1 AND l.worker_id = ?2 AND l.outcome IS NULL "
                                    "AND t.state = 'running'"));
      select.BindAll(lease_id, r.worker_id());
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) continue;
      const int64_t trial_id = select.Int64(0), sweep_id = select.Int64(1);
      RETURN_IF_ERROR(Exec("UPDATE leases SET outcome = 'returned', ended_ms = ?2 WHERE id = ?1",
                           lease_id, now_ms));
      RETURN_IF_ERROR(Exec("UPDATE trials SET state = 'queued', lease_deadline_ms = NULL, "
                           "attempts = attempts - 1 WHERE id = ?1",
                           trial_id));
      effects.Move(v1::TRIAL_RUNNING, v1::TRIAL_QUEUED);
      effects.work_queued = true;
      effects.touched_sweeps.insert(sweep_id);
      response.add_returned_lease_ids(lease_id);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

absl::StatusOr<v1::ReportResponse> SqliteCoordinator::Report(const v1::ReportRequest& r) {
  if (r.lease_next() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease_next: must be >= 0, got ", r.lease_next()));
  }
  if (r.has_result()) {
    if (absl::Status checked = CheckResult(r.result()); !checked.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(checked.message(), " (trial ", r.trial_id(), ")"));
    }
  }
  v1::ReportResponse response;
  GroupOp op;
  op.run = [&](Effects& effects) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    response.Clear();
    const int64_t now_ms = NowMs();
    ASSIGN_OR_RETURN(bool accepted, ReportLocked(r, now_ms, effects));
    response.set_accepted(accepted);
    if (r.lease_next() == 0) return absl::OkStatus();
    // The worker's next trials, in the same transaction: one call and one commit per trial.
    v1::LeaseRequest lease;
    lease.set_worker_id(r.worker_id());
    lease.set_max_trials(r.lease_next());
    v1::LeaseResponse leased;
    RETURN_IF_ERROR(LeaseLocked(lease, now_ms, leased, effects));
    response.mutable_next()->Swap(leased.mutable_trials());
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RunGrouped(op));
  return response;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(
    const CoordinatorOptions& options) {
  if (options.clock == nullptr) {
    return absl::InvalidArgumentError("CoordinatorOptions.clock: required");
  }
  if (options.db_path.empty()) {
    return absl::InvalidArgumentError("CoordinatorOptions.db_path: required");
  }
  if (options.lease_duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CoordinatorOptions.lease_duration: must be positive");
  }
  absl::StatusOr<std::unique_ptr<store::Database>> db = store::Database::Open(options.db_path);
  if (!db.ok()) return Annotate(db.status(), absl::StrCat("database '", options.db_path, "'"));
  auto coordinator = std::make_unique<SqliteCoordinator>(options, std::move(*db));
  RETURN_IF_ERROR(coordinator->Init());
  coordinator->StartExpiryTimer();
  return coordinator;
}

}  // namespace bitsweep::server
