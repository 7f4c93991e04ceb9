#include "server/silence.h"

#include <gtest/gtest.h>

namespace tidepool::server {
namespace {

constexpr int64_t kBeat = 5000;       // the agents' heartbeat interval and the sweep's period
constexpr int64_t kLimit = 3 * kBeat;  // three silent intervals close a link
constexpr int64_t kT0 = 1'000'000;

// A reader that keeps up: its horizon is now.
TEST(SilenceJudge, AnAgentThatStopsBeatingIsSilentAfterThreeIntervals) {
  SilenceJudge j(kBeat);
  j.Start(kT0);
  int64_t heard = kT0;
  for (int64_t t = kT0 + kBeat; t <= kT0 + kLimit; t += kBeat) {
    EXPECT_FALSE(j.Sweep(t));
    EXPECT_FALSE(j.Silent(t, heard, t, kLimit)) << t - kT0;
  }
  EXPECT_FALSE(j.Sweep(kT0 + 4 * kBeat));
  EXPECT_TRUE(j.Silent(kT0 + 4 * kBeat, heard, kT0 + 4 * kBeat, kLimit));
}

// The whole server stopped for 40 s (SIGSTOP): the first sweep after it runs 40 s late, and the
// agents' beats are still unread. Nobody is silent; each has a full window from the resume.
TEST(SilenceJudge, AFrozenServerGivesEveryAgentAFreshWindowWhenItResumes) {
  SilenceJudge j(kBeat);
  j.Start(kT0);
  EXPECT_FALSE(j.Sweep(kT0 + kBeat));
  const int64_t heard = kT0 + kBeat;  // the last beat read before the freeze
  const int64_t resumed = kT0 + kBeat + 40'000;
  EXPECT_TRUE(j.Sweep(resumed));
  EXPECT_FALSE(j.Silent(resumed, heard, resumed, kLimit));
  EXPECT_FALSE(j.Silent(resumed + kLimit, heard, resumed + kLimit, kLimit));
  // ... but an agent that really is gone is still found, one full window after the resume.
  j.Sweep(resumed + kBeat);
  EXPECT_TRUE(j.Silent(resumed + kLimit + 1, heard, resumed + kLimit + 1, kLimit));
}

// The sweep runs on time, but the reader is stuck (a write to a stalled disk): its horizon does
// not move, so the agents it reads for are not silent however long it takes.
TEST(SilenceJudge, AStuckReaderDoesNotMakeItsAgentsSilent) {
  SilenceJudge j(kBeat);
  j.Start(kT0);
  const int64_t heard = kT0;
  const int64_t horizon = kT0 + 100;  // the reader's last full pass
  for (int64_t t = kT0 + kBeat; t <= kT0 + 60'000; t += kBeat) {
    EXPECT_FALSE(j.Sweep(t));
    EXPECT_FALSE(j.Silent(t, heard, horizon, kLimit)) << t - kT0;
  }
  // Once it reads again, an agent whose beats were waiting is heard: not silent.
  const int64_t back = kT0 + 61'000;
  EXPECT_FALSE(j.Silent(back, back - 2, back - 1, kLimit));
  // One that sent nothing during all that time is, once the reader has passed it by.
  EXPECT_TRUE(j.Silent(back, heard, back - 1, kLimit));
}

TEST(SilenceJudge, ASweepLateByLessThanHalfAPeriodChangesNothing) {
  SilenceJudge j(kBeat);
  j.Start(kT0);
  EXPECT_FALSE(j.Sweep(kT0 + kBeat + kBeat / 2));
  EXPECT_EQ(j.listening_since_ms(), SilenceJudge::kNever);
  EXPECT_TRUE(j.Silent(kT0 + 4 * kBeat, kT0, kT0 + 4 * kBeat, kLimit));
}

}  // namespace
}  // namespace tidepool::server
