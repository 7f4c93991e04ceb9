// Checking what backends answer (answers.h), and the planner's cap counting refused creates.
#include "autoscaler/answers.h"
#include "autoscaler/worker.h"

#include <gtest/gtest.h>

namespace tidepool::autoscaler {
namespace {

using std::chrono::seconds;

const TimePoint kT0 = TimePoint() + std::chrono::hours(1000);

TEST(CreateAnswer, ANewValidNameIsTheWorkers) {
  EXPECT_EQ(JudgeCreateAnswer("w-1", std::nullopt, kT0).verdict, CreateVerdict::kNew);
  EXPECT_EQ(JudgeCreateAnswer("", std::nullopt, kT0).verdict, CreateVerdict::kNameless);
}

TEST(CreateAnswer, ANameThePoolAlreadyHasIsAnErrorNamingIt) {
  for (Phase p : {Phase::kStarting, Phase::kIdle, Phase::kBusy, Phase::kLost, Phase::kDeleting}) {
    CreateJudgement j = JudgeCreateAnswer("dup-1", NameHolder{p, false, kT0 - seconds(5)}, kT0);
    EXPECT_EQ(j.verdict, CreateVerdict::kDuplicate) << PhaseName(p);
    EXPECT_NE(j.error.find("\"dup-1\""), std::string::npos) << j.error;
    EXPECT_NE(j.error.find("already has"), std::string::npos) << j.error;
    EXPECT_NE(j.error.find(PhaseName(p)), std::string::npos) << j.error;
  }
}

TEST(CreateAnswer, AnUnknownMachineListedAfterTheLaunchIsTheOneItMade) {
  // Listed while the create was in flight: the same machine, adopted.
  EXPECT_EQ(JudgeCreateAnswer("m", NameHolder{Phase::kUnknown, true, kT0 + seconds(1)}, kT0).verdict,
            CreateVerdict::kAdoptListed);
  // Its agent connected to that record meanwhile: still the same machine.
  EXPECT_EQ(JudgeCreateAnswer("m", NameHolder{Phase::kIdle, true, kT0 + seconds(1)}, kT0).verdict,
            CreateVerdict::kAdoptListed);
  // Listed before the create was launched: it existed already, so it is not what the create made.
  EXPECT_EQ(JudgeCreateAnswer("m", NameHolder{Phase::kUnknown, true, kT0 - seconds(1)}, kT0).verdict,
            CreateVerdict::kDuplicate);
}

TEST(CreateAnswer, AnInvalidNameIsAnErrorInOneBoundedLine) {
  CreateJudgement spaced = JudgeCreateAnswer("my machine", std::nullopt, kT0);
  EXPECT_EQ(spaced.verdict, CreateVerdict::kInvalid);
  EXPECT_NE(spaced.error.find("\"my machine\""), std::string::npos) << spaced.error;
  EXPECT_NE(spaced.error.find("a space"), std::string::npos) << spaced.error;
  CreateJudgement huge = JudgeCreateAnswer(std::string(10 << 20, 'x'), std::nullopt, kT0);
  EXPECT_EQ(huge.verdict, CreateVerdict::kInvalid);
  EXPECT_LT(huge.error.size(), 300u);
  EXPECT_EQ(huge.error.find('\n'), std::string::npos);
  EXPECT_NE(huge.error.find("10485760 bytes"), std::string::npos) << huge.error;
}

TEST(CreateAnswer, ARefusedCreateIsHeldForRegisterTimeoutOrTheCooldown) {
  EXPECT_EQ(RefusedCreateHeldUntil(kT0, seconds(600), seconds(60)), kT0 + seconds(600));
  EXPECT_EQ(RefusedCreateHeldUntil(kT0, seconds(0), seconds(60)), kT0 + seconds(60));
}

TEST(CreateAnswer, CooldownDoublesPerFailureUpToTheMaximum) {
  EXPECT_EQ(CreateCooldown(seconds(60), 1, seconds(600)), seconds(60));
  EXPECT_EQ(CreateCooldown(seconds(60), 2, seconds(600)), seconds(120));
  EXPECT_EQ(CreateCooldown(seconds(60), 4, seconds(600)), seconds(480));
  EXPECT_EQ(CreateCooldown(seconds(60), 9, seconds(600)), seconds(600));
}

TEST(Planner, RefusedCreatesCountAgainstMaxAgents) {
  Policy pol;
  pol.max_agents = 2;
  pol.min_agents = 2;
  Snapshot snap;
  snap.started_at = kT0 - seconds(100);
  snap.workers.push_back({1, Phase::kIdle, 1, kT0});
  snap.waiting_tasks = 3;
  EXPECT_EQ(MakePlan(snap, pol, kT0).creates, 1);
  snap.held_creates = 1;
  Plan p = MakePlan(snap, pol, kT0);
  EXPECT_EQ(p.creates, 0);
  EXPECT_EQ(p.alive, 2);
}

// The pool's decisions against a backend whose every create answers the name of the worker it
// already has (issue 17: 50 creates in 20 s with max_agents 2), on a fixed clock: at most
// max_agents creates while the refused one is held, and the cooldown between the next ones.
TEST(Planner, ABackendAnsweringOneNameIsAskedBoundedTimes) {
  Policy pol;
  pol.max_agents = 2;
  pol.min_agents = 2;
  const Millis base = seconds(1), max_cooldown = seconds(600), register_timeout = seconds(600);
  Snapshot snap;
  snap.started_at = kT0;
  std::optional<TimePoint> cooldown_until;
  std::vector<TimePoint> held;
  int creates = 0, failures = 0;
  bool named = false;
  for (TimePoint now = kT0; now < kT0 + seconds(20); now += Millis(100)) {
    std::erase_if(held, [&](TimePoint t) { return t <= now; });
    snap.held_creates = static_cast<int>(held.size());
    snap.creates_blocked = cooldown_until && now < *cooldown_until;
    Plan plan = MakePlan(snap, pol, now);
    for (int i = 0; i < plan.creates; ++i) {
      ++creates;
      std::optional<NameHolder> holder;
      if (named) holder = NameHolder{Phase::kStarting, false, kT0};
      CreateJudgement j = JudgeCreateAnswer("dup-1", holder, now);
      if (j.verdict == CreateVerdict::kNew) {
        named = true;
        snap.workers.push_back({1, Phase::kStarting, 0, now});
        continue;
      }
      ASSERT_EQ(j.verdict, CreateVerdict::kDuplicate);
      Millis cooldown = CreateCooldown(base, ++failures, max_cooldown);
      cooldown_until = now + cooldown;
      held.push_back(RefusedCreateHeldUntil(now, register_timeout, cooldown));
      snap.creates_blocked = true;
      break;
    }
  }
  EXPECT_EQ(creates, 2);
}

TEST(ListCheck, EntriesThatAreNotWorkerNamesAreReportedNotTracked) {
  std::vector<backends::ListedWorker> listed = {
      {"ok-1", backends::WorkerState::kRunning, "running", "ok-1 running"},
      {std::string(10 << 20, 'A'), backends::WorkerState::kRunning, "", std::string(10 << 20, 'A')},
      {"b\x01", backends::WorkerState::kRunning, "running", "b\x01 running"},
  };
  CheckedList c = CheckListed(listed, {});
  ASSERT_EQ(c.workers.size(), 1u);
  EXPECT_EQ(c.workers[0].name, "ok-1");
  ASSERT_EQ(c.problems.size(), 2u);
  EXPECT_NE(c.problems[0].find("10485760 bytes"), std::string::npos) << c.problems[0];
  EXPECT_LT(c.problems[0].size(), 300u);
  EXPECT_NE(c.problems[1].find("byte 0x01"), std::string::npos) << c.problems[1];
  std::string summary = SummarizeListProblems(c.problems);
  EXPECT_EQ(summary.find('\n'), std::string::npos);
  EXPECT_LT(summary.size(), 800u);
}

TEST(ListCheck, ALineOfAMachineAnsweredWithASpacedNameIsNotAMachineCalledItsFirstWord) {
  std::vector<backends::ListedWorker> listed = {
      {"my", backends::WorkerState::kRunning, "machine", "my machine running"},
      {"my", backends::WorkerState::kRunning, "", "my"},  // a machine really called "my": its own
      {"mymachine", backends::WorkerState::kRunning, "", "mymachine"},
  };
  CheckedList c = CheckListed(listed, {"my machine"});
  ASSERT_EQ(c.workers.size(), 2u);
  EXPECT_EQ(c.workers[0].line, "my");
  EXPECT_EQ(c.workers[1].name, "mymachine");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_NE(c.problems[0].find("\"my machine\""), std::string::npos) << c.problems[0];
  EXPECT_NE(c.problems[0].find("never deleted"), std::string::npos) << c.problems[0];
}

}  // namespace
}  // namespace tidepool::autoscaler
