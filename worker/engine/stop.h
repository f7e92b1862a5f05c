// Stopping long engine calls between batches. Evaluate (and int8::EvaluateInt8),
// CalibrateActivations, Train, RunTrial and FinetuneTrial take an optional StopFn in their options
// and call it before every batch; once it returns true the call ends with CANCELLED instead of
// finishing its pass. The engine has no threads or RPCs of its own to watch: the caller decides
// what "stop" means (a worker's cancel flag, a test's batch counter).
//
//   std::atomic<bool> cancel{false};
//   EvalOptions options;
//   options.stop = [&cancel] { return cancel.load(); };   // another thread sets `cancel`
//   absl::StatusOr<EvalResult> r = Evaluate(graph, dataset, options);   // CANCELLED once set
#ifndef BITSWEEP_WORKER_ENGINE_STOP_H_
#define BITSWEEP_WORKER_ENGINE_STOP_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bitsweep::engine {

// Polled before every batch; true: stop. Empty: never stop. Must be cheap and thread-safe
// against whatever sets the condition.
using StopFn = std::function<bool()>;

// CANCELLED ("<what> stopped") when `stop` is set and says stop; OK otherwise.
inline absl::Status CheckStop(const StopFn& stop, absl::string_view what) {
  if (stop && stop()) return absl::CancelledError(absl::StrCat(what, " stopped"));
  return absl::OkStatus();
}

}  // namespace bitsweep::engine

#endif  // BITSWEEP_WORKER_ENGINE_STOP_H_
