// GroupCommitQueue: the leader/follower queue of a group commit, in the style of leveldb's
// DBImpl::Write. Callers queue their op; the caller at the front becomes the leader and runs a
// batch of everything queued so far (its own op first, at most `max_batch` ops) through
// `run_batch`, typically one transaction with one commit; callers arriving meanwhile queue up
// for the next leader. Every caller returns only once a leader ran its op, so an op's result
// fields (written by `run_batch`) are final when Run returns. The queue knows nothing of
// databases: the SqliteCoordinator's worker calls use it (group_commit.cc).
//
//   GroupCommitQueue<MyOp> queue(/*max_batch=*/64);
//   MyOp op{...};
//   queue.Run(op, [&](const std::vector<MyOp*>& batch) { RunInOneTransaction(batch); });
//   return op.status;
#ifndef BITSWEEP_SERVER_COORDINATOR_GROUP_COMMIT_QUEUE_H_
#define BITSWEEP_SERVER_COORDINATOR_GROUP_COMMIT_QUEUE_H_

#include <cstddef>
#include <deque>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace bitsweep::server {

template <typename Op>
class GroupCommitQueue {
 public:
  explicit GroupCommitQueue(size_t max_batch) : max_batch_(max_batch < 1 ? 1 : max_batch) {}
  GroupCommitQueue(const GroupCommitQueue&) = delete;
  GroupCommitQueue& operator=(const GroupCommitQueue&) = delete;

  // Blocks until `op` ran in some batch, run by this thread or by another caller's. `run_batch`
  // is called without the queue's lock held, by one leader at a time.
  void Run(Op& op, absl::FunctionRef<void(const std::vector<Op*>&)> run_batch)
      ABSL_LOCKS_EXCLUDED(mu_) {
    Waiter self{&op};
    {
      absl::MutexLock lock(&mu_);
      queue_.push_back(&self);
      while (!self.done && queue_.front() != &self) self.wake.Wait(&mu_);
      if (self.done) return;  // a leader ran it
    }
    // The leader: everything queued so far, this op first.
    std::vector<Op*> batch;
    {
      absl::MutexLock lock(&mu_);
      for (Waiter* queued : queue_) {
        if (batch.size() == max_batch_) break;
        batch.push_back(queued->op);
      }
    }
    run_batch(batch);
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < batch.size(); ++i) {
      Waiter* finished = queue_.front();
      queue_.pop_front();
      finished->done = true;
      if (finished != &self) finished->wake.Signal();
    }
    if (!queue_.empty()) queue_.front()->wake.Signal();  // the next leader
  }

  // Callers waiting, the running leader included (tests use it to line callers up).
  size_t QueuedForTest() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return queue_.size();
  }

 private:
  // One waiting caller, on its own stack.
  struct Waiter {
    Op* op;
    bool done = false;
    absl::CondVar wake;  // signalled when done, or when this caller became the queue's front
  };

  const size_t max_batch_;
  absl::Mutex mu_;
  std::deque<Waiter*> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bitsweep::server

#endif  // BITSWEEP_SERVER_COORDINATOR_GROUP_COMMIT_QUEUE_H_
