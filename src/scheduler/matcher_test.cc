#include "scheduler/matcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

namespace tidepool::scheduler {
namespace {

TEST(Match, EmptyInputs) {
  std::vector<QueuedTask> q = {{1, 0, 1}};
  EXPECT_TRUE(Match(q, {}).empty());
  std::vector<FreeWorker> w = {{1, 3}};
  EXPECT_TRUE(Match({}, w).empty());
}

TEST(Match, LowerPriorityNumberFirstThenFifo) {
  std::vector<QueuedTask> q = {{10, 5, 1}, {11, 0, 3}, {12, 0, 2}, {13, -1, 9}};
  std::vector<FreeWorker> w = {{1, 2}};
  auto a = Match(q, w);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].task, 13u);  // priority -1
  EXPECT_EQ(a[1].task, 12u);  // priority 0, seq 2 before seq 3
}

TEST(Match, FillsWorkersInGivenOrder) {
  std::vector<QueuedTask> q = {{1, 0, 1}, {2, 0, 2}, {3, 0, 3}};
  std::vector<FreeWorker> w = {{7, 1}, {8, 0}, {9, 5}};
  auto a = Match(q, w);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].worker, 7u);
  EXPECT_EQ(a[1].worker, 9u);
  EXPECT_EQ(a[2].worker, 9u);
}

TEST(PreferWorkers, BusyFirstFewestFreeThenMostRecentlyIdle) {
  auto t0 = std::chrono::steady_clock::time_point() + std::chrono::hours(1);
  std::vector<WorkerCandidate> c = {
      {1, 1, false, t0},
      {2, 3, true, t0},
      {3, 1, false, t0 + std::chrono::seconds(5)},
      {4, 1, true, t0},
      {5, 0, true, t0},
  };
  auto w = PreferWorkers(c);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].handle, 4u);
  EXPECT_EQ(w[1].handle, 2u);
  EXPECT_EQ(w[2].handle, 3u);  // idle more recently than 1
  EXPECT_EQ(w[3].handle, 1u);
}

// Property test over random queues and worker sets.
TEST(Match, PropertiesHoldOnRandomInputs) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 2000; ++round) {
    int ntasks = static_cast<int>(rng() % 50);
    int nworkers = static_cast<int>(rng() % 10);
    std::vector<QueuedTask> q;
    for (int i = 0; i < ntasks; ++i)
      q.push_back({static_cast<uint32_t>(i), static_cast<int32_t>(rng() % 4) - 1, rng() % 1000000});
    std::vector<FreeWorker> w;
    int total_free = 0;
    for (int i = 0; i < nworkers; ++i) {
      int free = static_cast<int>(rng() % 5);
      total_free += free;
      w.push_back({static_cast<uint32_t>(100 + i), free});
    }
    auto a = Match(q, w);
    // Everything that fits is placed.
    ASSERT_EQ(a.size(), static_cast<size_t>(std::min(ntasks, total_free)));
    // No slot double-booked, no task placed twice.
    std::map<uint32_t, int> used;
    std::map<uint32_t, int> placed;
    for (auto& x : a) {
      used[x.worker]++;
      placed[x.task]++;
    }
    for (auto& fw : w) ASSERT_LE(used[fw.handle], fw.free_slots);
    for (auto& [t, n] : placed) ASSERT_EQ(n, 1);
    // The placed tasks are exactly the first ones in (priority, seq) order.
    std::vector<QueuedTask> sorted = q;
    std::sort(sorted.begin(), sorted.end(), RunsBefore);
    for (size_t i = 0; i < sorted.size(); ++i) {
      ASSERT_EQ(placed.count(sorted[i].handle) > 0, i < a.size());
    }
    // Assignments come in queue order.
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i].task, sorted[i].handle);
  }
}

}  // namespace
}  // namespace tidepool::scheduler
