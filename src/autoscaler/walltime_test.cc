#include "autoscaler/walltime.h"

#include <gtest/gtest.h>

namespace tidepool::autoscaler {
namespace {

TEST(Walltime, DrainsWorkersWhoseTimeHasComeAndWakesForTheNext) {
  std::vector<WalltimeView> w = {
      {1, 1000, true},   // due
      {2, 5000, true},   // ahead
      {3, 3000, true},   // ahead, sooner
      {4, 0, true},      // no walltime
      {5, 500, false},   // due, but already draining (or not connected)
      {6, 1000, true},   // exactly now: due
  };
  WalltimeDue d = DueForDrain(w, 1000);
  EXPECT_EQ(d.drain, (std::vector<uint64_t>{1, 6}));
  ASSERT_TRUE(d.next_ms.has_value());
  EXPECT_EQ(*d.next_ms, 3000);
}

TEST(Walltime, NothingToDoWithoutWalltimes) {
  std::vector<WalltimeView> w = {{1, 0, true}, {2, 0, false}};
  WalltimeDue d = DueForDrain(w, 123456);
  EXPECT_TRUE(d.drain.empty());
  EXPECT_FALSE(d.next_ms.has_value());
}

TEST(Walltime, LaterOnTheClockEverythingIsDue) {
  std::vector<WalltimeView> w = {{1, 1000, true}, {2, 5000, true}, {3, 3000, true}};
  EXPECT_EQ(DueForDrain(w, 4999).drain, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(DueForDrain(w, 5000).drain.size(), 3u);
  EXPECT_FALSE(DueForDrain(w, 5000).next_ms.has_value());
}

}  // namespace
}  // namespace tidepool::autoscaler
