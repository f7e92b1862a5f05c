// Cores shared by the workers of one process (`bitsweep local`): each trial takes an equal share
// of the budget among the trials running when it starts. A stage with one trial (Ristretto's
// combination, its fine-tuning) then gets every thread, and a stage with many splits them, instead
// of every worker being fixed at total / workers threads.
//
//   auto budget = std::make_shared<ThreadBudget>(2);
//   {
//     ThreadBudget::Share share = budget->Take();   // 2 when alone, 1 when another trial runs
//     executor.Execute(..., {.threads = share.threads()});
//   }                                               // returned here
#ifndef BITSWEEP_WORKER_THREAD_BUDGET_H_
#define BITSWEEP_WORKER_THREAD_BUDGET_H_

#include <algorithm>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace bitsweep::worker {

class ThreadBudget {
 public:
  explicit ThreadBudget(int total) : total_(std::max(1, total)) {}

  class Share {
   public:
    Share(ThreadBudget* budget, int threads) : budget_(budget), threads_(threads) {}
    Share(Share&& other) noexcept : budget_(other.budget_), threads_(other.threads_) {
      other.budget_ = nullptr;
    }
    Share(const Share&) = delete;
    Share& operator=(const Share&) = delete;
    Share& operator=(Share&&) = delete;
    ~Share() {
      if (budget_ != nullptr) budget_->Return();
    }
    int threads() const { return threads_; }

   private:
    ThreadBudget* budget_;
    int threads_;
  };

  // Never blocks: at least one thread, even when the budget is oversubscribed.
  Share Take() {
    absl::MutexLock lock(&mu_);
    ++running_;
    return Share(this, std::max(1, total_ / running_));
  }

  int total() const { return total_; }

 private:
  void Return() {
    absl::MutexLock lock(&mu_);
    --running_;
  }

  const int total_;
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace bitsweep::worker

#endif  // BITSWEEP_WORKER_THREAD_BUDGET_H_
