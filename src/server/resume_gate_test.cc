#include "server/resume_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace tidepool::server {
namespace {

TEST(ResumeGate, AcceptAfterHoldResumes) {
  ResumeGate gate;
  int resumed = 0;
  ASSERT_TRUE(gate.Hold([&] { resumed++; }));
  EXPECT_EQ(resumed, 0);
  gate.Accept();
  EXPECT_EQ(resumed, 1);
  gate.Accept();  // a second acceptance does not resume twice
  EXPECT_EQ(resumed, 1);
}

// The core may accept between the hello's handling and the reader's Hold: not lost.
TEST(ResumeGate, AcceptBeforeHoldResumesAtHold) {
  ResumeGate gate;
  gate.Accept();
  int resumed = 0;
  ASSERT_TRUE(gate.Hold([&] { resumed++; }));
  EXPECT_EQ(resumed, 1);
}

TEST(ResumeGate, EndWhileWaitingDropsTheResume) {
  ResumeGate gate;
  int resumed = 0;
  ASSERT_TRUE(gate.Hold([&] { resumed++; }));
  EXPECT_TRUE(gate.End());  // the caller must finish the stream: nothing else will notice
  gate.Accept();
  EXPECT_EQ(resumed, 0);
}

TEST(ResumeGate, EndAfterResumeReportsNothingWaiting) {
  ResumeGate gate;
  int resumed = 0;
  ASSERT_TRUE(gate.Hold([&] { resumed++; }));
  gate.Accept();
  EXPECT_FALSE(gate.End());  // the resumed read is outstanding and will see the end
  EXPECT_EQ(resumed, 1);
}

// A stream that ended before its reader held: Hold refuses, so the reader finishes the stream,
// and an acceptance that was already on its way does not resume it either.
TEST(ResumeGate, EndBeforeHoldRefusesTheHold) {
  ResumeGate gate;
  EXPECT_FALSE(gate.End());
  int resumed = 0;
  EXPECT_FALSE(gate.Hold([&] { resumed++; }));
  gate.Accept();
  EXPECT_EQ(resumed, 0);

  ResumeGate accepted_first;
  accepted_first.Accept();
  EXPECT_FALSE(accepted_first.End());
  EXPECT_FALSE(accepted_first.Hold([&] { resumed++; }));
  EXPECT_EQ(resumed, 0);
}

// Whatever the interleaving, exactly one of two things happens: the resume runs once, or End
// reports a waiting resume (or Hold refuses). Never both, never neither.
TEST(ResumeGate, RacingEndAndAcceptSettleExactlyOneWay) {
  for (int i = 0; i < 2000; i++) {
    ResumeGate gate;
    std::atomic<int> resumed{0};
    bool held = gate.Hold([&] { resumed++; });
    ASSERT_TRUE(held);
    bool dropped = false;
    std::thread accept([&] { gate.Accept(); });
    std::thread end([&] { dropped = gate.End(); });
    accept.join();
    end.join();
    EXPECT_EQ(resumed.load() + (dropped ? 1 : 0), 1) << "iteration " << i;
  }
}

}  // namespace
}  // namespace tidepool::server
