// TrialExecutor: runs one leased trial with the engine and fills a v1::TrialResult -- the part of
// the worker that knows the engine but no gRPC.
//
// It keeps what trials of a sweep share, so the second trial of a sweep costs only its own
// quantized evaluation: loaded datasets (by reference, preprocessing and sample limit), imported
// models (by content hash) and activation calibrations (engine::CalibrationCache, by model hash
// and calibration split). All of it is thread-safe: one executor may serve several worker
// threads (`bitsweep local`), and several executors may run in one process.
//
//   TrialExecutor executor;
//   absl::StatusOr<v1::TrialResult> r = executor.Execute(
//       {.hash = sha256_hex, .path = "/cache/<hash>.onnx"}, trial.settings(), trial.spec(),
//       {.threads = 2, .cancelled = &cancel_flag});
//   if (!r.ok()) report(TrialErrorFromStatus(r.status()));   // permanent or transient
//
// Semantics follow `bitsweep eval` / `bitsweep finetune` (client/engine_commands.cc): the splits
// are read as dataset_settings.h says (the calibration split is `calibration_samples`, default
// 1000, of the calibration or training split; image datasets take the model input's channel
// count and are decoded once into `dataset_cache_dir`); fine-tuning runs on the whole training split with lr 0.001, batch 64, momentum 0.9 and
// weight decay 5e-4 unless the spec says otherwise, and `top1` is measured after it.
#ifndef BITSWEEP_WORKER_TRIAL_EXECUTOR_H_
#define BITSWEEP_WORKER_TRIAL_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "bitsweep/v1/common.pb.h"
#include "bitsweep/v1/worker.pb.h"
#include "onnx/onnx_pb.h"
#include "worker/dataset_settings.h"
#include "worker/engine/calibration.h"
#include "worker/engine/dataset.h"
#include "worker/engine/graph.h"

namespace bitsweep::worker {

// Reported in every TrialResult and RegisterRequest.
inline constexpr char kEngineVersion[] = "bitsweep-engine 0.1.0";

// The model a trial runs on: its SHA-256 (lower-case hex; the cache key) and the ONNX file holding
// those bytes (read only on a cache miss).
struct ModelRef {
  std::string hash;
  std::string path;
};

struct ExecuteOptions {
  int threads = 0;  // engine (OpenMP) threads; 0: TrialExecutorOptions::threads
  // Checked between stages (loading, calibration, fine-tuning, evaluation) and, inside the engine,
  // before every batch of calibration, fine-tuning and evaluation: once it is true Execute
  // returns CANCELLED within a batch. May be null.
  const std::atomic<bool>* cancelled = nullptr;
};

struct TrialExecutorOptions {
  int threads = 2;
  // Least recently used entries beyond these counts are dropped (trials still using them keep
  // their copy alive). The Fashion-MNIST training split alone is ~190 MB as float.
  int max_cached_datasets = 6;
  int max_cached_models = 4;
  // Decoded image datasets (uint8, per files and geometry) on disk: later trials and later
  // processes decode nothing. Empty: kept in memory only.
  std::string dataset_cache_dir;
};

class TrialExecutor {
 public:
  explicit TrialExecutor(TrialExecutorOptions options = {});
  TrialExecutor(const TrialExecutor&) = delete;
  TrialExecutor& operator=(const TrialExecutor&) = delete;

  // Runs one trial. Errors keep the engine's codes: INVALID_ARGUMENT for a bad config or settings
  // (naming the field), UNIMPLEMENTED / NOT_FOUND / FAILED_PRECONDITION from the engine, CANCELLED
  // when `options.cancelled` was set. worker_id is left empty (the Worker fills it).
  absl::StatusOr<v1::TrialResult> Execute(const ModelRef& model, const v1::EvalSettings& settings,
                                          const v1::TrialSpec& spec,
                                          const ExecuteOptions& options = {});

  // How many datasets were loaded and models imported (cache misses); for tests and logs.
  int64_t dataset_loads() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t model_imports() const ABSL_LOCKS_EXCLUDED(mu_);
  // Images decoded by those loads (0 for loads served by the on-disk dataset cache).
  int64_t images_decoded() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t calibrations() const { return calibration_cache_.computations(); }

 private:
  struct LoadedModel {
    onnx::ModelProto proto;  // fine-tuning trains the proto
    engine::Graph graph;
  };
  // A cache slot filled once: concurrent requests for the same key wait for the first loader
  // instead of loading the same data twice.
  template <typename T>
  struct Slot {
    absl::Mutex mu;
    std::shared_ptr<const T> value ABSL_GUARDED_BY(mu);
  };

  // The cached value under `key`, loading it with `load` (returning absl::StatusOr<T>) on a miss;
  // `loads` counts misses. Failures are not cached.
  template <typename T, typename Load>
  absl::StatusOr<std::shared_ptr<const T>> GetOrLoad(
      std::list<std::pair<std::string, std::shared_ptr<Slot<T>>>>* cache, int max_entries,
      const std::string& key, int64_t* loads, Load load) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::shared_ptr<const engine::Dataset>> GetDataset(const SplitLoad& split,
                                                                    int threads,
                                                                    std::string* cache_key)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::shared_ptr<const LoadedModel>> GetModel(const ModelRef& model)
      ABSL_LOCKS_EXCLUDED(mu_);

  const TrialExecutorOptions options_;
  engine::CalibrationCache calibration_cache_;  // thread-safe on its own

  mutable absl::Mutex mu_;
  // Most recently used first; values are slots so loading happens outside mu_.
  std::list<std::pair<std::string, std::shared_ptr<Slot<engine::Dataset>>>> datasets_
      ABSL_GUARDED_BY(mu_);
  std::list<std::pair<std::string, std::shared_ptr<Slot<LoadedModel>>>> models_
      ABSL_GUARDED_BY(mu_);
  int64_t dataset_loads_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t model_imports_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t images_decoded_ ABSL_GUARDED_BY(mu_) = 0;
};

// Retrying cannot fix INVALID_ARGUMENT, UNIMPLEMENTED, NOT_FOUND or FAILED_PRECONDITION from the
// engine (bad config, unsupported operator, missing or mismatched dataset); the rest may pass on
// another attempt.
bool IsPermanentError(const absl::Status& status);
v1::TrialError TrialErrorFromStatus(const absl::Status& status);

}  // namespace bitsweep::worker

#endif  // BITSWEEP_WORKER_TRIAL_EXECUTOR_H_
