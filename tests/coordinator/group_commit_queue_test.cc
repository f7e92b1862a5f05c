// GroupCommitQueue alone: callers lined up behind a running leader go into the next batch
// together, each op runs exactly once, the leader's op comes first in its batch, batches respect
// their bound, and every caller returns only after its op ran. No sleeping: the leader's batch
// is held open until the others are seen queued.
#include "server/coordinator/group_commit_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace bitsweep::server {
namespace {

struct Op {
  int id = 0;
  int runs = 0;       // written by the batch runner
  int batch_no = -1;  // which batch ran it
};

TEST(GroupCommitQueueTest, LoneCallerLeadsABatchOfOne) {
  GroupCommitQueue<Op> queue(64);
  Op op{.id = 7};
  std::vector<std::vector<int>> batches;
  queue.Run(op, [&](const std::vector<Op*>& batch) {
    batches.emplace_back();
    for (Op* o : batch) {
      ++o->runs;
      batches.back().push_back(o->id);
    }
  });
  EXPECT_EQ(op.runs, 1);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0], std::vector<int>{7});
  EXPECT_EQ(queue.QueuedForTest(), 0u);
}

// `followers` callers queue while the first caller's batch runs; they are then run in batches
// of at most `max_batch`, the first follower's batch led by the first follower.
void LineUpBehindALeader(size_t max_batch, int followers) {
  GroupCommitQueue<Op> queue(max_batch);
  absl::Mutex mu;
  std::vector<std::vector<int>> batches;  // guarded by mu
  absl::Notification leader_running, release_leader;
  auto run_batch = [&](const std::vector<Op*>& batch) {
    if (batch.front()->id == 0) {
      leader_running.Notify();
      release_leader.WaitForNotification();
    }
    absl::MutexLock lock(&mu);
    const int batch_no = static_cast<int>(batches.size());
    batches.emplace_back();
    for (Op* o : batch) {
      ++o->runs;
      o->batch_no = batch_no;
      batches.back().push_back(o->id);
    }
  };
  std::vector<Op> ops(followers + 1);
  for (int i = 0; i <= followers; ++i) ops[i].id = i;
  std::atomic<int> returned_early{0};
  std::thread leader([&] { queue.Run(ops[0], run_batch); });
  leader_running.WaitForNotification();
  std::vector<std::thread> threads;
  for (int i = 1; i <= followers; ++i) {
    threads.emplace_back([&, i] {
      queue.Run(ops[i], run_batch);
      if (ops[i].runs != 1) returned_early.fetch_add(1);
    });
    // In order: follower i is queued before follower i + 1 starts.
    while (queue.QueuedForTest() < static_cast<size_t>(i + 1)) std::this_thread::yield();
  }
  release_leader.Notify();
  leader.join();
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(returned_early.load(), 0);
  for (const Op& op : ops) EXPECT_EQ(op.runs, 1) << "op " << op.id;
  ASSERT_EQ(batches.front(), std::vector<int>{0});  // the leader ran alone: nobody was queued
  // The followers, in arrival order, in full batches but the last.
  std::vector<int> expected_order;
  for (int i = 1; i <= followers; ++i) expected_order.push_back(i);
  std::vector<int> order;
  for (size_t b = 1; b < batches.size(); ++b) {
    EXPECT_LE(batches[b].size(), max_batch);
    if (b + 1 < batches.size()) {
      EXPECT_EQ(batches[b].size(), max_batch);
    }
    order.insert(order.end(), batches[b].begin(), batches[b].end());
  }
  EXPECT_EQ(order, expected_order);
  const size_t expected_batches = 1 + (followers + max_batch - 1) / max_batch;
  EXPECT_EQ(batches.size(), expected_batches);
  EXPECT_EQ(queue.QueuedForTest(), 0u);
}

TEST(GroupCommitQueueTest, CallersQueuedBehindALeaderShareTheNextBatch) {
  LineUpBehindALeader(/*max_batch=*/64, /*followers=*/10);
}

TEST(GroupCommitQueueTest, BatchesAreBoundedAndTheRestLeadTheirOwn) {
  LineUpBehindALeader(/*max_batch=*/3, /*followers=*/8);
}

// Many callers at once, no choreography: each op still runs exactly once.
TEST(GroupCommitQueueTest, ConcurrentCallersEachRunOnce) {
  GroupCommitQueue<Op> queue(4);
  constexpr int kThreads = 8, kOpsPerThread = 200;
  std::atomic<int> running_leaders{0}, overlapping{0};
  std::vector<std::vector<Op>> ops(kThreads, std::vector<Op>(kOpsPerThread));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (Op& op : ops[t]) {
        queue.Run(op, [&](const std::vector<Op*>& batch) {
          if (running_leaders.fetch_add(1) != 0) overlapping.fetch_add(1);
          for (Op* o : batch) ++o->runs;
          running_leaders.fetch_sub(1);
        });
        EXPECT_EQ(op.runs, 1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(overlapping.load(), 0);  // one leader at a time
  for (const auto& per_thread : ops) {
    for (const Op& op : per_thread) EXPECT_EQ(op.runs, 1);
  }
}

}  // namespace
}  // namespace bitsweep::server
