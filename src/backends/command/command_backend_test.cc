// The command backend against real bash scripts: no mocks.
#include "backends/command/command_backend.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "common/process.h"

namespace tidepool::backends {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

const fs::path kDataDir = fs::path(__FILE__).parent_path() / "../../../tests/data/command";

class CommandBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tidepool-command-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ctx_.pool = "gpu-pool";
    ctx_.data_dir = dir_ + "/data";
    ctx_.agent_binary = fs::canonical(kDataDir / "fake-tidepool.sh").string();
    ctx_.server_address = "10.0.0.1:7000";
    ctx_.slots = 3;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Fields with harmless defaults for whatever a test does not set.
  static nlohmann::json Fields(nlohmann::json overrides) {
    nlohmann::json f = {{"start", "echo w-default"}, {"stop", "true"}, {"list", "true"}};
    if (!overrides.is_null()) f.update(overrides);  // `{}` arrives as null
    return f;
  }

  Result<std::unique_ptr<Backend>> TryMake(const nlohmann::json& fields) {
    config::BackendConfig cfg;
    cfg.type = "command";
    cfg.fields = fields;
    return CommandBackend::Make(cfg, ctx_);
  }

  std::unique_ptr<Backend> MakeBackend(const nlohmann::json& overrides) {
    auto b = TryMake(Fields(overrides));
    EXPECT_TRUE(b.ok()) << b.status().message();
    return b.ok() ? std::move(b).value() : nullptr;
  }

  // A deadline far enough away that the backend's own `timeout` is what bounds a call.
  static Deadline Far() { return Clock::now() + std::chrono::hours(1); }

  CreateRequest Request() const {
    CreateRequest r;
    r.pool = "gpu-pool";
    r.server_address = "10.0.0.2:7443";
    r.slots = 4;
    return r;
  }

  std::string ReadFileText(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_;
  BackendContext ctx_;
};

// Live (non-zombie) processes whose process group is `pgid`.
std::vector<pid_t> LiveMembers(pid_t pgid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    auto st = ReadProcStat(pid);
    if (st && st->pgid == pgid && st->state != 'Z' && st->state != 'X') out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

size_t OpenFds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

bool WaitGroupGone(pid_t pgid, std::chrono::milliseconds bound) {
  auto deadline = steady_clock::now() + bound;
  while (!LiveMembers(pgid).empty()) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

TEST_F(CommandBackendTest, MakeRequiresStartStopAndList) {
  for (const char* field : {"start", "stop", "list"}) {
    nlohmann::json f = Fields({});
    f.erase(field);
    auto missing = TryMake(f);
    ASSERT_FALSE(missing.ok()) << field;
    EXPECT_NE(missing.status().message().find(std::string("`") + field + "`"), std::string::npos)
        << missing.status().message();

    f[field] = "  ";
    auto empty = TryMake(f);
    ASSERT_FALSE(empty.ok()) << field;
    EXPECT_NE(empty.status().message().find(field), std::string::npos) << empty.status().message();
  }
  EXPECT_FALSE(TryMake(Fields({{"timeout", 0}})).ok());
  EXPECT_FALSE(TryMake(Fields({{"timeout", "5m"}})).ok());  // the config layer hands milliseconds
}

TEST_F(CommandBackendTest, TimeoutDefaultsToFiveMinutes) {
  auto b = MakeBackend({});
  ASSERT_TRUE(b);
  EXPECT_EQ(dynamic_cast<CommandBackend&>(*b).timeout(), 300000ms);
  auto c = MakeBackend({{"timeout", 1500}});
  ASSERT_TRUE(c);
  EXPECT_EQ(dynamic_cast<CommandBackend&>(*c).timeout(), 1500ms);
}

TEST_F(CommandBackendTest, StartOutputIsTheTrimmedName) {
  auto b = MakeBackend({{"start", "echo '   w-1 \t '"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "w-1");
}

TEST_F(CommandBackendTest, StartUsesTheLastNonEmptyLine) {
  auto b = MakeBackend({{"start", "echo 'booting vm...'; echo; echo 'vm up'; echo '  w-2  '; echo; echo '   '"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "w-2");
}

TEST_F(CommandBackendTest, StartWithoutOutputMeansNameComesLater) {
  auto b = MakeBackend({{"start", "echo 'only chatter on stderr' >&2"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "");
}

TEST_F(CommandBackendTest, FailingScriptReportsExitCodeAndStderr) {
  auto b = MakeBackend({{"start", "echo w-3; echo 'quota exceeded for n2-standard-8' >&2; exit 3"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_FALSE(name.ok());
  EXPECT_EQ(name.status().message(), "start failed (exit 3): quota exceeded for n2-standard-8");
}

TEST_F(CommandBackendTest, FailingScriptWithoutOutputSaysSo) {
  auto b = MakeBackend({{"list", "exit 7"}});
  ASSERT_TRUE(b);
  auto listed = b->List(Far());
  ASSERT_FALSE(listed.ok());
  EXPECT_NE(listed.status().message().find("list failed"), std::string::npos) << listed.status().message();
  EXPECT_NE(listed.status().message().find("exit 7 with no output"), std::string::npos)
      << listed.status().message();
}

TEST_F(CommandBackendTest, ErrorKeepsOnlyTheLastLinesOfStderr) {
  auto b = MakeBackend({{"stop", "for i in $(seq -w 1 20); do echo \"line-$i\" >&2; echo >&2; done; exit 1"}});
  ASSERT_TRUE(b);
  Status s = b->Delete("w-4", Far());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("stop failed (exit 1)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("line-16\nline-17\nline-18\nline-19\nline-20"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("line-15"), std::string::npos) << s.message();
}

TEST_F(CommandBackendTest, ScriptKilledBySignalSaysSo) {
  auto b = MakeBackend({{"start", "echo dying >&2; kill -KILL $$"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_FALSE(name.ok());
  EXPECT_NE(name.status().message().find("killed by signal SIGKILL"), std::string::npos)
      << name.status().message();
  EXPECT_NE(name.status().message().find("dying"), std::string::npos) << name.status().message();
}

TEST_F(CommandBackendTest, TimeoutKillsTheScriptAndItsWholeGroup) {
  std::string pgid_file = dir_ + "/pgid";
  auto b = MakeBackend({{"timeout", 500},
                        {"start", "echo $$ > " + pgid_file + "; sleep 1000 & sleep 1000"}});
  ASSERT_TRUE(b);
  auto t0 = steady_clock::now();
  auto name = b->Create(Request(), Far());
  auto took = steady_clock::now() - t0;
  ASSERT_FALSE(name.ok());
  EXPECT_EQ(name.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(name.status().message(), "start timed out after 500ms");
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 10s);  // generous: the bound is what matters, not the precision

  pid_t pgid = static_cast<pid_t>(std::stoi(ReadFileText(pgid_file)));
  ASSERT_GT(pgid, 1);
  bool gone = WaitGroupGone(pgid, 5s);
  if (!gone) ::kill(-pgid, SIGKILL);  // don't leave them behind even when failing
  EXPECT_TRUE(gone) << "processes of group " << pgid << " survived the timeout";
}

// The server is stopping: a script running is killed with its whole group and its call fails;
// no later call runs anything.
TEST_F(CommandBackendTest, AbandonKillsRunningScriptsAndRunsNoMore) {
  std::string pgid_file = dir_ + "/pgid";
  std::string ran = dir_ + "/ran";
  auto b = MakeBackend({{"start", "echo $$ > " + pgid_file + "; sleep 1000 & sleep 1000"},
                        {"stop", "echo $1 >> " + ran}});
  ASSERT_TRUE(b);
  Result<std::string> name = std::string("not yet");
  std::thread call([&] { name = b->Create(Request(), Far()); });
  auto started = steady_clock::now();
  while (ReadFileText(pgid_file).empty() && steady_clock::now() - started < 60s) std::this_thread::sleep_for(10ms);
  pid_t pgid = static_cast<pid_t>(std::atoi(ReadFileText(pgid_file).c_str()));
  ASSERT_GT(pgid, 1);
  b->Abandon();
  call.join();  // ends at once, not after the 5 min timeout
  EXPECT_FALSE(name.ok());
  bool gone = WaitGroupGone(pgid, 30s);
  if (!gone) ::kill(-pgid, SIGKILL);
  EXPECT_TRUE(gone) << "processes of group " << pgid << " survived Abandon";

  Status later = b->Delete("w-1", Far());
  EXPECT_EQ(later.code(), StatusCode::kUnavailable) << later.message();
  EXPECT_FALSE(fs::exists(ran)) << "a script ran after Abandon";
}

TEST_F(CommandBackendTest, BackgroundChildHoldingStdoutDoesNotHangStart) {
  std::string pid_file = dir_ + "/bg.pid";
  auto b = MakeBackend({{"timeout", 30000},
                        {"start", "sleep 100 > /dev/stdout & echo $! > " + pid_file + "; echo w-bg"}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  pid_t bg = static_cast<pid_t>(std::atoi(ReadFileText(pid_file).c_str()));
  // The agent-like child must survive the call: only a timeout kills the group.
  bool bg_alive = bg > 1 && ::kill(bg, 0) == 0;
  if (bg > 1) ::kill(bg, SIGKILL);
  EXPECT_TRUE(bg_alive);
  ASSERT_TRUE(name.ok()) << name.status().message();  // not "timed out after 30s"
  EXPECT_EQ(*name, "w-bg");
}

TEST_F(CommandBackendTest, MegabytesOnStdoutAndStderrDoNotDeadlock) {
  // stderr first: reading stdout to EOF before stderr would block forever on this one.
  std::string big = "head -c 1048576 /dev/zero | tr '\\0' e >&2; head -c 1048576 /dev/zero | tr '\\0' o; ";
  auto ok = MakeBackend({{"timeout", 30000}, {"start", big + "echo; echo w-big"}});
  ASSERT_TRUE(ok);
  auto name = ok->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "w-big");

  auto failing = MakeBackend({{"timeout", 30000}, {"start", big + "exit 4"}});
  ASSERT_TRUE(failing);
  auto err = failing->Create(Request(), Far());
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), StatusCode::kUnknown);
  EXPECT_NE(err.status().message().find("start failed (exit 4): "), std::string::npos);
  EXPECT_NE(err.status().message().find("eeee"), std::string::npos);
  EXPECT_LT(err.status().message().size(), 1200u);  // the tail, not the megabyte
}

TEST_F(CommandBackendTest, ListOfAThousandWorkersIsReadWhole) {
  auto b = MakeBackend({{"list", "for i in $(seq 1 1000); do echo \"w-$i running zone-a\"; done"}});
  ASSERT_TRUE(b);
  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  ASSERT_EQ(listed->size(), 1000u);
  EXPECT_EQ(listed->back().name, "w-1000");
}

TEST_F(CommandBackendTest, StartSeesServerPoolSlotsAndDataDir) {
  auto b = MakeBackend({{"start", "echo \"$TIDEPOOL_SERVER|$TIDEPOOL_POOL|$TIDEPOOL_SLOTS|$TIDEPOOL_DATA_DIR\""}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "10.0.0.2:7443|gpu-pool|4|" + ctx_.data_dir);
}

TEST_F(CommandBackendTest, StartCanAskForAWorkerToken) {
  auto b = MakeBackend({{"start", "set -e; tok=$($TIDEPOOL_WORKER_TOKEN_FOR w-7); echo \"w-7 $tok\""}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "w-7 token-for-w-7@" + ctx_.data_dir);

  auto shape = MakeBackend({{"start", "echo \"$TIDEPOOL_WORKER_TOKEN_FOR\""}});
  ASSERT_TRUE(shape);
  auto cmd = shape->Create(Request(), Far());
  ASSERT_TRUE(cmd.ok()) << cmd.status().message();
  EXPECT_EQ(*cmd, ctx_.agent_binary + " worker-token");

  // The core may hand its own token command; it wins over the default.
  CreateRequest req = Request();
  req.token_command = "echo custom-token-for";
  auto custom = MakeBackend({{"start", "echo $($TIDEPOOL_WORKER_TOKEN_FOR w-8)"}});
  ASSERT_TRUE(custom);
  auto tok = custom->Create(req, Far());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ(*tok, "custom-token-for w-8");
}

TEST_F(CommandBackendTest, StopGetsTheNameAsArgumentAndWorkerName) {
  std::string out = dir_ + "/stopped";
  ::setenv("COMMAND_BACKEND_TEST_MARKER", "from-server", 1);
  auto b = MakeBackend({{"stop",
                         "echo \"$1|$WORKER_NAME|$TIDEPOOL_POOL|$TIDEPOOL_SERVER|$TIDEPOOL_SLOTS|"
                         "${TIDEPOOL_WORKER_TOKEN_FOR-unset}|$COMMAND_BACKEND_TEST_MARKER\" > " + out}});
  ::unsetenv("COMMAND_BACKEND_TEST_MARKER");
  ASSERT_TRUE(b);
  ::setenv("COMMAND_BACKEND_TEST_MARKER", "from-server", 1);
  Status s = b->Delete("w-9", Far());
  ::unsetenv("COMMAND_BACKEND_TEST_MARKER");
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(ReadFileText(out), "w-9|w-9|gpu-pool|10.0.0.1:7000|3|unset|from-server\n");
}

TEST_F(CommandBackendTest, StaleIdentityInServerEnvironmentDoesNotLeak) {
  ::setenv("TIDEPOOL_WORKER_TOKEN", "stale-secret", 1);
  ::setenv("WORKER_NAME", "stale-name", 1);
  auto b = MakeBackend({{"start", "echo \"${TIDEPOOL_WORKER_TOKEN-unset}|${WORKER_NAME-unset}\""}});
  ASSERT_TRUE(b);
  auto name = b->Create(Request(), Far());
  ::unsetenv("TIDEPOOL_WORKER_TOKEN");
  ::unsetenv("WORKER_NAME");
  ASSERT_TRUE(name.ok()) << name.status().message();
  EXPECT_EQ(*name, "unset|unset");
}

TEST_F(CommandBackendTest, VeldaStyleScriptsWithWorkerNameInTheStopText) {
  std::string script = fs::canonical(kDataDir / "provision.sh").string();
  std::string state = "STATE=" + dir_ + "/workers ";
  auto b = MakeBackend({{"start", state + script + " start"},
                        {"stop", state + script + " stop ${WORKER_NAME}"},
                        {"list", state + script + " list"}});
  ASSERT_TRUE(b);
  auto w1 = b->Create(Request(), Far());
  auto w2 = b->Create(Request(), Far());
  ASSERT_TRUE(w1.ok()) << w1.status().message();
  ASSERT_TRUE(w2.ok()) << w2.status().message();
  EXPECT_EQ(w1->rfind("gpu-pool-", 0), 0u) << *w1;
  EXPECT_NE(*w1, *w2);

  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  std::set<std::string> names;
  for (const ListedWorker& w : *listed) names.insert(w.name);
  EXPECT_EQ(names, (std::set<std::string>{*w1, *w2}));

  ASSERT_TRUE(b->Delete(*w1, Far()).ok());
  listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  ASSERT_EQ(listed->size(), 1u);  // w1 is listed as "stopped", which is not a worker
  EXPECT_EQ((*listed)[0].name, *w2);
  EXPECT_EQ((*listed)[0].detail, "running");

  Status s = b->Delete("no-such-worker", Far());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "stop failed (exit 1): stop: no such worker: no-such-worker");
}

TEST_F(CommandBackendTest, ListParsesNamesAndFiltersStatuses) {
  auto b = MakeBackend({{"list", R"(printf '%s\n' \
      'w-1 running' '' '   ' '  w-2' 'w-3 STOPPED' 'w-4 Terminated since 10:00' 'w-5 terminating' \
      'w-6 SusPended' 'w-7 pending zone-a 10.0.0.7' $'w-8\tstarting' 'w-9 stopping')"}});
  ASSERT_TRUE(b);
  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  std::vector<std::pair<std::string, std::string>> got;
  for (const ListedWorker& w : *listed) {
    if (IsWorker(w.state)) got.emplace_back(w.name, w.detail);
  }
  std::vector<std::pair<std::string, std::string>> want = {
      {"w-1", "running"}, {"w-2", ""}, {"w-7", "pending"}, {"w-8", "starting"}, {"w-9", "stopping"}};
  EXPECT_EQ(got, want);
}

TEST_F(CommandBackendTest, ListSeesPoolAndEmptyListIsEmpty) {
  auto b = MakeBackend({{"list", "[ \"$TIDEPOOL_POOL\" = gpu-pool ] || { echo wrong pool >&2; exit 1; }"}});
  ASSERT_TRUE(b);
  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  EXPECT_TRUE(listed->empty());
}

TEST_F(CommandBackendTest, BatchStartGetsCountAndLabel) {
  auto none = MakeBackend({});
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->SupportsBatch());
  EXPECT_EQ(none->CreateBatch(Request(), 2, "t", Far()).status().code(), StatusCode::kUnimplemented);

  auto b = MakeBackend({{"batch_start",
                         "echo \"starting $1\" >&2; [ -n \"$TIDEPOOL_WORKER_TOKEN_FOR\" ] || exit 9; "
                         "for i in $(seq 1 \"$1\"); do echo \"$2-$i\"; echo; done"}});
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->SupportsBatch());
  auto names = b->CreateBatch(Request(), 3, "task-42", Far());
  ASSERT_TRUE(names.ok()) << names.status().message();
  EXPECT_EQ(*names, (std::vector<std::string>{"task-42-1", "task-42-2", "task-42-3"}));
}

TEST_F(CommandBackendTest, BatchStartNameCountMustMatch) {
  auto fewer = MakeBackend({{"batch_start", "echo a; echo b"}});
  ASSERT_TRUE(fewer);
  auto r = fewer->CreateBatch(Request(), 3, "t", Far());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("2 names"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("of 3"), std::string::npos) << r.status().message();

  auto more = MakeBackend({{"batch_start", "seq 5"}});
  ASSERT_TRUE(more);
  r = more->CreateBatch(Request(), 3, "t", Far());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("5 names"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("of 3"), std::string::npos) << r.status().message();

  auto failing = MakeBackend({{"batch_start", "echo 'no capacity' >&2; exit 5"}});
  ASSERT_TRUE(failing);
  r = failing->CreateBatch(Request(), 3, "t", Far());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "batch_start failed (exit 5): no capacity");
}

TEST_F(CommandBackendTest, ConcurrentCallsFromManyThreadsAllSucceed) {
  std::string state = dir_ + "/concurrent";
  fs::create_directories(state);
  auto b = MakeBackend({{"timeout", 60000},
                        {"start", "set -e; n=$(basename \"$(mktemp -p " + state + " w-XXXXXX)\"); head -c 100000 /dev/zero >&2; echo $n"},
                        {"stop", "rm " + state + "/$1"},
                        {"list", "ls " + state}});
  ASSERT_TRUE(b);
  // spdlog's registry is made on first use; the server makes it before any thread (InitLogging),
  // so do the same here rather than let eight threads race to construct it.
  spdlog::default_logger();
  constexpr int kThreads = 8, kPerThread = 5;
  const size_t fds_before = OpenFds();
  std::atomic<int> failures{0};
  std::vector<std::vector<std::string>> names(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto name = b->Create(Request(), Far());
        if (!name.ok() || name->empty()) {
          ++failures;
          continue;
        }
        names[t].push_back(*name);
        if (!b->List(Far()).ok()) ++failures;
        if (i % 2 == 0) {
          if (!b->Delete(*name, Far()).ok()) ++failures;
          names[t].pop_back();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(OpenFds(), fds_before);  // no pipe, memfd or pidfd left behind

  std::set<std::string> kept;
  for (const auto& v : names) kept.insert(v.begin(), v.end());
  EXPECT_EQ(kept.size(), static_cast<size_t>(kThreads * (kPerThread / 2)));
  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  std::set<std::string> seen;
  for (const ListedWorker& w : *listed) seen.insert(w.name);
  EXPECT_EQ(seen, kept);
}

}  // namespace
}  // namespace tidepool::backends

namespace tidepool::backends {
namespace {

TEST_F(CommandBackendTest, AScriptSaysItsFailuresClassOnItsLastStderrLine) {
  struct Case {
    const char* last_line;
    ErrorClass want;
  };
  for (const Case& c : {Case{"out_of_capacity: zone a is full", ErrorClass::kOutOfCapacity},
                        Case{"quota: 24 of 24 vCPUs in use", ErrorClass::kQuota},
                        Case{"auth: token expired", ErrorClass::kAuth},
                        Case{"bad_request: no such image", ErrorClass::kBadRequest},
                        Case{"transient: 503", ErrorClass::kTransient},
                        Case{"quota exceeded, no prefix", ErrorClass::kTransient},
                        Case{"authz: not a class word", ErrorClass::kTransient}}) {
    auto b = MakeBackend({{"start", std::string("echo 'api said no' >&2; echo '") + c.last_line + "' >&2; exit 1"}});
    ASSERT_TRUE(b);
    auto name = b->Create(Request(), Far());
    ASSERT_FALSE(name.ok()) << c.last_line;
    EXPECT_EQ(ClassOf(name.status()), c.want) << c.last_line << " -> " << ErrorClassName(ClassOf(name.status()));
    // The message is the script's own, prefix included.
    EXPECT_EQ(name.status().message(), std::string("start failed (exit 1): api said no\n") + c.last_line);
  }
  // A class claimed on an earlier line does not count: only the last line speaks.
  EXPECT_EQ(CommandBackend::ClassOfStderr("auth: nope\nsomething else"), ErrorClass::kTransient);
}

TEST_F(CommandBackendTest, ListedLinesCarryTheirState) {
  auto b = MakeBackend({{"list", "printf '%s\\n' 'w-1 PENDING' 'w-2 booting' 'w-3 running' 'w-4' 'w-5 stopping'"}});
  ASSERT_TRUE(b);
  auto listed = b->List(Far());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  std::vector<std::pair<std::string, WorkerState>> got;
  for (const ListedWorker& w : *listed) got.emplace_back(w.name, w.state);
  std::vector<std::pair<std::string, WorkerState>> want = {{"w-1", WorkerState::kPending},
                                                           {"w-2", WorkerState::kPending},
                                                           {"w-3", WorkerState::kRunning},
                                                           {"w-4", WorkerState::kRunning},
                                                           {"w-5", WorkerState::kRunning}};
  EXPECT_EQ(got, want);
}

TEST_F(CommandBackendTest, ThePoolsDeadlineCutsACallShorterThanTimeout) {
  auto b = MakeBackend({{"start", "sleep 300"}});  // timeout: the 5 min default
  ASSERT_TRUE(b);
  EXPECT_EQ(b->CallTimeout(), 300000ms);
  auto name = b->Create(Request(), Clock::now() + 300ms);
  ASSERT_FALSE(name.ok());
  EXPECT_EQ(name.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ClassOf(name.status()), ErrorClass::kTransient);
}

}  // namespace
}  // namespace tidepool::backends
