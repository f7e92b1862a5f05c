// ThreadBudget: a trial alone gets every thread, concurrent trials split them, nothing goes below
// one thread, and shares come back when dropped.
#include "worker/thread_budget.h"

#include <optional>
#include <utility>

#include "gtest/gtest.h"

namespace bitsweep::worker {
namespace {

TEST(ThreadBudgetTest, SharesFollowTheTrialsRunning) {
  ThreadBudget budget(4);
  std::optional<ThreadBudget::Share> first(budget.Take());
  EXPECT_EQ(first->threads(), 4);  // alone: everything
  std::optional<ThreadBudget::Share> second(budget.Take());
  EXPECT_EQ(second->threads(), 2);
  ThreadBudget::Share third = budget.Take();
  EXPECT_EQ(third.threads(), 1);   // 4 / 3
  ThreadBudget::Share fourth = budget.Take();
  ThreadBudget::Share fifth = budget.Take();
  EXPECT_EQ(fifth.threads(), 1);   // oversubscribed: still one
  first.reset();
  second.reset();
  // Three still run (third, fourth, fifth): a new one gets 4 / 4.
  EXPECT_EQ(budget.Take().threads(), 1);
}

TEST(ThreadBudgetTest, ReturnedSharesFreeTheThreads) {
  ThreadBudget budget(2);
  {
    ThreadBudget::Share a = budget.Take();
    ThreadBudget::Share b = budget.Take();
    EXPECT_EQ(a.threads(), 2);
    EXPECT_EQ(b.threads(), 1);
    ThreadBudget::Share moved = std::move(b);  // a moved-from share returns nothing
    EXPECT_EQ(moved.threads(), 1);
  }
  EXPECT_EQ(budget.Take().threads(), 2);
}

TEST(ThreadBudgetTest, AtLeastOneThread) {
  ThreadBudget budget(0);
  EXPECT_EQ(budget.total(), 1);
  EXPECT_EQ(budget.Take().threads(), 1);
}

}  // namespace
}  // namespace bitsweep::worker
