// The subprocess runner against real programs.
#include "backends/toolkit/subprocess.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/process.h"

namespace tidepool::backends {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

SubprocessSpec Bash(const std::string& script, std::chrono::milliseconds budget = 60s) {
  SubprocessSpec s;
  s.argv = {"bash", "-c", script};
  s.env = CurrentEnvironment();
  s.deadline = steady_clock::now() + budget;
  return s;
}

bool Alive(pid_t pid) {
  auto st = ReadProcStat(pid);
  return st && st->state != 'Z' && st->state != 'X';
}

// Waits (bounded) for `pid` to be gone: killing is asynchronous.
bool GoneWithin(pid_t pid, std::chrono::seconds bound) {
  auto until = steady_clock::now() + bound;
  while (Alive(pid)) {
    if (steady_clock::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

TEST(Subprocess, DeadlineKillsTheWholeGroupGrandchildrenToo) {
  // The grandchild ignores SIGTERM and the child waits for it: only a group SIGKILL ends both.
  auto r = RunSubprocess(Bash("bash -c 'trap \"\" TERM; sleep 300' & echo $!; wait", 500ms));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->Describe(), "timed out");
  pid_t grandchild = static_cast<pid_t>(std::stol(r->out));
  ASSERT_GT(grandchild, 1);
  EXPECT_TRUE(GoneWithin(grandchild, 30s)) << "grandchild " << grandchild << " survived the deadline";
}

TEST(Subprocess, StdoutCapIsHonouredAndStderrKeepsItsTail) {
  SubprocessSpec s = Bash("head -c 100000 /dev/zero | tr '\\0' o; head -c 100000 /dev/zero | tr '\\0' e >&2; echo END >&2");
  s.stdout_cap = 1000;
  s.stderr_cap = 500;
  auto r = RunSubprocess(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->out, std::string(1000, 'o'));
  EXPECT_TRUE(r->stdout_overflow);
  EXPECT_EQ(r->err.size(), 500u);
  EXPECT_EQ(r->err.substr(r->err.size() - 4), "END\n");
}

TEST(Subprocess, StdoutUnderTheCapIsWholeAndNotOverflowing) {
  SubprocessSpec s = Bash("printf 12345");
  s.stdout_cap = 5;
  auto r = RunSubprocess(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->out, "12345");
  EXPECT_FALSE(r->stdout_overflow);
}

TEST(Subprocess, StdinIsDeliveredWhole) {
  std::string big(3 << 20, 'x');  // more than any pipe holds: the runner must not block on it
  big += "\nlast line";
  SubprocessSpec s;
  s.argv = {"cat"};
  s.env = CurrentEnvironment();
  s.stdin_data = big;
  s.deadline = steady_clock::now() + 60s;
  auto r = RunSubprocess(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->ok()) << r->Describe();
  EXPECT_EQ(r->out.size(), big.size());
  EXPECT_TRUE(r->out == big);
}

TEST(Subprocess, BashScriptReadsTheScriptFromStdinWithArguments) {
  SubprocessSpec s = BashScript("echo \"$#:$1:$2\"", {"a b", "c"});
  s.env = CurrentEnvironment();
  s.deadline = steady_clock::now() + 60s;
  auto r = RunSubprocess(s);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->out, "2:a b:c\n");
}

TEST(Subprocess, ExitStatusAndSignalAreReported) {
  auto exited = RunSubprocess(Bash("echo oops >&2; exit 7"));
  ASSERT_TRUE(exited.ok()) << exited.status().message();
  EXPECT_EQ(exited->exit_code, 7);
  EXPECT_EQ(exited->term_signal, 0);
  EXPECT_FALSE(exited->ok());
  EXPECT_EQ(exited->Describe(), "exit 7");
  EXPECT_EQ(exited->err, "oops\n");

  auto killed = RunSubprocess(Bash("kill -TERM $$"));
  ASSERT_TRUE(killed.ok()) << killed.status().message();
  EXPECT_EQ(killed->term_signal, SIGTERM);
  EXPECT_FALSE(killed->ok());
  EXPECT_EQ(killed->Describe(), "killed by signal SIGTERM");

  auto fine = RunSubprocess(Bash("true"));
  ASSERT_TRUE(fine.ok());
  EXPECT_TRUE(fine->ok());
  EXPECT_EQ(fine->exit_code, 0);
}

TEST(Subprocess, TheEnvironmentIsExactlyTheOneGiven) {
  ::setenv("SUBPROCESS_TEST_PARENT_ONLY", "leak", 1);
  SubprocessSpec s;
  s.argv = {"/bin/sh", "-c", "echo \"$GIVEN|${SUBPROCESS_TEST_PARENT_ONLY-unset}\""};
  s.env = {"GIVEN=yes", "PATH=/usr/bin:/bin"};
  s.deadline = steady_clock::now() + 60s;
  auto r = RunSubprocess(s);
  ::unsetenv("SUBPROCESS_TEST_PARENT_ONLY");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->out, "yes|unset\n");
}

TEST(Subprocess, ABackgroundChildHoldingThePipesDoesNotHoldTheCall) {
  auto r = RunSubprocess(Bash("sleep 300 & echo $!"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->timed_out);  // the call ended when bash did, not at the deadline
  EXPECT_TRUE(r->ok());
  pid_t sleeper = static_cast<pid_t>(std::stol(r->out));
  ASSERT_GT(sleeper, 1);
  EXPECT_TRUE(Alive(sleeper));  // left running, as a started agent would be
  ::kill(sleeper, SIGKILL);
}

TEST(Subprocess, AMissingProgramIsAnErrorNamingIt) {
  SubprocessSpec s;
  s.argv = {"no-such-program-tidepool"};
  s.env = {"PATH=/usr/bin:/bin"};
  s.deadline = steady_clock::now() + 60s;
  auto r = RunSubprocess(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no-such-program-tidepool"), std::string::npos) << r.status().message();
}

TEST(Subprocess, AbandonKillsWhatRunsAndRefusesWhatComes) {
  ProcessGroups groups;
  SubprocessSpec s = Bash("echo $$; sleep 300");
  s.groups = &groups;
  Result<SubprocessResult> r = Unavailable("not run");
  std::thread call([&] { r = RunSubprocess(s); });
  // Abandon once the program runs: wait for bash to exist (its group is then registered).
  for (int i = 0; i < 3000 && !groups.Running(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(groups.Running());
  groups.Abandon();
  call.join();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->term_signal, SIGKILL);
  auto later = RunSubprocess(s);
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.status().code(), StatusCode::kUnavailable);
}

TEST(Subprocess, StderrTailKeepsTheLastLinesWithinAKilobyte) {
  std::string err;
  for (int i = 1; i <= 20; ++i) err += "line-" + std::to_string(i) + "\n\n";
  EXPECT_EQ(StderrTail(err), "line-16\nline-17\nline-18\nline-19\nline-20");
  std::string tail = StderrTail(std::string(5000, 'e'));
  EXPECT_LE(tail.size(), 1024u + 3);
  EXPECT_EQ(tail.substr(0, 3), "…");
}

}  // namespace
}  // namespace tidepool::backends
