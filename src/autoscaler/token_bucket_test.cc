#include "autoscaler/token_bucket.h"

#include <gtest/gtest.h>

namespace tidepool::autoscaler {
namespace {

using std::chrono::milliseconds;

TEST(TokenBucket, BurstThenRate) {
  auto t0 = TokenBucket::Clock::time_point() + std::chrono::hours(1);
  TokenBucket b(2.0, 3.0);  // 2/s, burst 3
  EXPECT_TRUE(b.TryTake(t0));
  EXPECT_TRUE(b.TryTake(t0));
  EXPECT_TRUE(b.TryTake(t0));
  EXPECT_FALSE(b.TryTake(t0));
  EXPECT_EQ(b.WaitFor(t0), milliseconds(501));
  EXPECT_FALSE(b.TryTake(t0 + milliseconds(400)));
  EXPECT_TRUE(b.TryTake(t0 + milliseconds(500)));
  EXPECT_FALSE(b.TryTake(t0 + milliseconds(600)));
  // Never more than the burst, however long it rests.
  auto later = t0 + std::chrono::hours(1);
  int taken = 0;
  while (b.TryTake(later)) ++taken;
  EXPECT_EQ(taken, 3);
}

TEST(TokenBucket, CountOverAWindowMatchesTheRate) {
  auto t0 = TokenBucket::Clock::time_point() + std::chrono::hours(1);
  TokenBucket b(10.0, 1.0);
  int taken = 0;
  for (int ms = 0; ms < 10000; ++ms) taken += b.TryTake(t0 + milliseconds(ms));
  EXPECT_GE(taken, 100);  // 10 s at 10/s (+ the initial token)
  EXPECT_LE(taken, 101);
}

}  // namespace
}  // namespace tidepool::autoscaler
