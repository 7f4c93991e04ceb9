#include "server/name_claim.h"

#include <gtest/gtest.h>

namespace tidepool::server {
namespace {

TEST(NameClaim, ANameNobodyHoldsIsFree) { EXPECT_EQ(JudgeNameClaim(std::nullopt, "i-1"), NameClaim::kFree); }

TEST(NameClaim, TheSameAgentProcessReconnects) {
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"i-1", 0, 5000}, "i-1"), NameClaim::kReconnect);
}

TEST(NameClaim, AnotherAgentIsRefusedWhileTheHolderIsHeardFrom) {
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"i-1", 0, 5000}, "i-2"), NameClaim::kConflict);
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"i-1", 9999, 5000}, "i-2"), NameClaim::kConflict);
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"i-1", 10000, 5000}, "i-2"), NameClaim::kConflict);
  // An agent that does not say its instance is never taken for the holder.
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"", 0, 5000}, ""), NameClaim::kConflict);
}

TEST(NameClaim, AHolderSilentForTwoHeartbeatIntervalsIsStale) {
  EXPECT_EQ(JudgeNameClaim(NameHolderLink{"i-1", 10001, 5000}, "i-2"), NameClaim::kReplaceStale);
}

}  // namespace
}  // namespace tidepool::server
