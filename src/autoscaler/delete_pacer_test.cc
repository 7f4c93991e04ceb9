#include "autoscaler/delete_pacer.h"

#include <gtest/gtest.h>

#include <set>

namespace tidepool::autoscaler {
namespace {

using std::chrono::milliseconds;

const auto kT0 = TimePoint() + std::chrono::hours(1);
auto Any = [](uint64_t) { return true; };

TEST(DeletePacer, BurstThenTheCreateRate) {
  DeletePacer p(2.0, 3);  // 2/s, burst and in-flight limit 3
  for (uint64_t id = 1; id <= 100; ++id) p.Enqueue(id);
  std::vector<uint64_t> started;
  while (auto id = p.Next(kT0, Any)) {
    started.push_back(*id);
    p.Done();  // ends at once: only the rate holds the rest
  }
  EXPECT_EQ(started, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(p.WaitFor(kT0), milliseconds(501));
  EXPECT_FALSE(p.Next(kT0 + milliseconds(400), Any));
  EXPECT_EQ(p.Next(kT0 + milliseconds(500), Any), 4u);
  p.Done();
  // Ten seconds later: 20 tokens earned, but the bucket holds only its burst.
  int n = 0;
  while (p.Next(kT0 + std::chrono::seconds(10), Any)) ++n, p.Done();
  EXPECT_EQ(n, 3);
  EXPECT_EQ(p.queued_count(), 93u);
}

TEST(DeletePacer, AtMostMaxInFlight) {
  DeletePacer p(1000.0, 2);
  for (uint64_t id = 1; id <= 5; ++id) p.Enqueue(id);
  EXPECT_EQ(p.Next(kT0, Any), 1u);
  EXPECT_EQ(p.Next(kT0, Any), 2u);
  EXPECT_FALSE(p.Next(kT0 + std::chrono::seconds(1), Any));
  EXPECT_FALSE(p.WaitFor(kT0 + std::chrono::seconds(1)));  // held by Done, not by time
  p.Done();
  EXPECT_EQ(p.Next(kT0 + std::chrono::seconds(1), Any), 3u);
  EXPECT_EQ(p.in_flight(), 2);
}

TEST(DeletePacer, QueuedOnceAndUnwantedSkippedWithoutAToken) {
  DeletePacer p(1.0, 1);
  p.Enqueue(7);
  p.Enqueue(7);
  p.Enqueue(8);
  EXPECT_EQ(p.queued_count(), 2u);
  std::set<uint64_t> gone{7};
  auto wanted = [&](uint64_t id) { return !gone.count(id); };
  EXPECT_EQ(p.Next(kT0, wanted), 8u);  // 7 was dropped, and cost no token
  p.Done();
  EXPECT_FALSE(p.Next(kT0, wanted));
  EXPECT_EQ(p.queued_count(), 0u);
  EXPECT_FALSE(p.WaitFor(kT0));
}

TEST(ListFlood, FarMoreThanThePoolCouldHaveMade) {
  EXPECT_FALSE(IsListFlood(0, 4, 0));
  EXPECT_FALSE(IsListFlood(18, 4, 0));     // 2*4 + 10
  EXPECT_TRUE(IsListFlood(19, 4, 0));
  EXPECT_FALSE(IsListFlood(210, 4, 100));  // it did make 100
  EXPECT_TRUE(IsListFlood(100000, 20, 20));
  EXPECT_FALSE(IsListFlood(10, 0, 0));
}

}  // namespace
}  // namespace tidepool::autoscaler
