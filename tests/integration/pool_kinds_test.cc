// Static and fixed pools, the metrics endpoint, and secrets staying secret.
#include <signal.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <set>
#include <thread>

#include "cloud.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

std::string CloudDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return "/tmp/tidepool-cloud-" + std::to_string(getpid()) + "-" + info->name();
}

TEST(StaticPool, AgentsJoinWithThePoolsJoinTokenOnly) {
  Server server("agent_pools:\n  - name: hand\n    default: true\n");
  ProcResult token = server.Tidepool({"pool", "join-token", "hand", "--data-dir", server.data_dir()});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  std::string join = Lines(token.out)[0];
  EXPECT_EQ(join.rfind("tpj_", 0), 0u);
  // A wrong token is refused; the agent says so and exits.
  ProcResult bad = RunProcess({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "hand",
                               "--name", "box1", "--token", "tpj_wrong"},
                              {}, server.dir(), "", 60s);
  EXPECT_EQ(bad.exit_code, 3);
  // The right one joins; hand-started agents pick their own names.
  Background agent({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "hand", "--name", "box1",
                    "--token", join, "--slots", "2"},
                   {}, server.dir());
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; }));
  ProcResult r = server.Vrun({"sh", "-c", "echo $TIDEPOOL_WORKER_NAME"});
  EXPECT_EQ(r.out, "box1\n");
  nlohmann::json pool = server.Pool("hand");
  EXPECT_EQ(pool["mode"], "static");
  EXPECT_TRUE(pool["backend"].is_null());
  // Nothing scales a static pool: the worker stays, and stopping it is the operator's business.
  ProcResult del = server.Tidepool({"worker", "delete", "box1"});
  EXPECT_NE(del.exit_code, 0);
  agent.Signal(SIGTERM);
  EXPECT_EQ(agent.Wait().exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"lost"}) == 1; }));
}

TEST(FixedPool, CreatesItsCountAtStartReplacesLossAndNeverScales) {
  Cloud cloud(CloudDir());
  Server server("agent_pools:\n  - name: cloud\n    default: true\n    fixed:\n" + cloud.Backend("20s", "      ") +
                "      count: 2\n");
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud", {"idle"}) == 2; }));
  EXPECT_EQ(cloud.Started().size(), 2u);
  EXPECT_EQ(server.Pool("cloud")["mode"], "fixed");
  // Demand beyond its size queues instead of growing it.
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Lines(server.Vbatch({"sleep", "0.3"}).out)[0]);
  for (auto& id : ids) EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  EXPECT_EQ(cloud.Started().size(), 2u);
  // A machine that dies is replaced.
  std::string victim = cloud.Started()[0];
  ::kill(-cloud.VmPid(victim), SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return cloud.Started().size() == 3 && server.Workers("cloud", {"idle"}) == 2; }));
  // Idle for long, it still keeps its size.
  EXPECT_TRUE(cloud.Stopped().empty());
}

TEST(Metrics, EveryPoolMetricIsExported) {
  Cloud cloud(CloudDir());
  std::string config = cloud.Config(2, {"sync_loop_interval: \"1s\"", "max_idle_agents: 2", "idle_decay: \"60s\""});
  Server server("server:\n  metrics_listen: \"127.0.0.1:0\"\n" + config);
  std::string addr = Lines(ReadAll(server.data_dir() + "/metrics.addr"))[0];
  server.Vrun({"true"});
  RunProcess({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "cloud", "--name", "vm-ghost",
              "--token", "tpw_bad"},
             {}, server.dir(), "", 60s);
  httplib::Client http("http://" + addr);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const std::string& m = res->body;
  for (const char* state : {"requested", "starting", "idle", "busy", "draining", "deleting", "lost", "unknown"}) {
    EXPECT_NE(m.find("tidepool_pool_workers{pool=\"cloud\",state=\"" + std::string(state) + "\"}"), std::string::npos) << state;
  }
  EXPECT_NE(m.find("tidepool_pool_workers{pool=\"cloud\",state=\"idle\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("tidepool_pool_slots{kind=\"idle\",pool=\"cloud\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("tidepool_pool_slots{kind=\"requested\",pool=\"cloud\"}"), std::string::npos);
  for (const char* ev : {"scale_up", "scale_down", "allocation_error", "ghost_rejected", "register_timeout"}) {
    EXPECT_NE(m.find("tidepool_pool_last_event_timestamp_seconds{event=\"" + std::string(ev) + "\",pool=\"cloud\"}"),
              std::string::npos) << ev;
  }
  EXPECT_NE(m.find("tidepool_pool_ghosts_total{pool=\"cloud\"} 1"), std::string::npos);
  EXPECT_NE(m.find("tidepool_backend_calls_total{op=\"create\",pool=\"cloud\",result=\"ok\"} 1"), std::string::npos);
  EXPECT_NE(m.find("tidepool_backend_call_seconds_count{op=\"list\",pool=\"cloud\"}"), std::string::npos);
  EXPECT_NE(m.find("tidepool_tasks{pool=\"cloud\",state=\"SUCCESS\"} 1"), std::string::npos);
  EXPECT_NE(m.find("tidepool_task_queue_seconds_count{pool=\"cloud\"} 1"), std::string::npos);
  EXPECT_NE(m.find("tidepool_agents_connected 1"), std::string::npos);
  EXPECT_NE(m.find("process_resident_memory_bytes"), std::string::npos);
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("cloud"), std::string::npos);
}

// The store's commit counter, from /metrics; -1 if it cannot be read.
long StoreCommits(const std::string& metrics_addr) {
  httplib::Client http("http://" + metrics_addr);
  auto res = http.Get("/metrics");
  if (!res || res->status != 200) return -1;
  for (const std::string& line : Lines(res->body)) {
    if (line.rfind("tidepool_store_commits_total ", 0) == 0) return std::stol(line.substr(line.find(' ') + 1));
  }
  return -1;
}

// Once nothing is being written: the commit count stays the same for half a second.
long SettledCommits(const std::string& metrics_addr) {
  long last = StoreCommits(metrics_addr);
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(500ms);
    long now = StoreCommits(metrics_addr);
    if (now == last) return now;
    last = now;
  }
  return last;
}

// A run on an idle worker: its task and its assignment are one commit (the acknowledgement and
// the dispatch both wait for it), its end another. Each commit is an fsync on P1's path.
TEST(Metrics, ARunOnAnIdleWorkerIsOneCommitBeforeItStartsAndOneWhenItEnds) {
  Server server("server:\n  metrics_listen: \"127.0.0.1:0\"\n" + DefaultConfig());
  std::string addr = Lines(ReadAll(server.data_dir() + "/metrics.addr"))[0];
  ASSERT_EQ(server.Vrun({"true"}).exit_code, 0);  // a worker, idle from now on
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 1; }));
  long before = SettledCommits(addr);
  ASSERT_GE(before, 1);
  // Several: without one commit for both, the writer takes the task alone in some runs and not
  // in others (it races the core's next step), so one run proves little.
  constexpr int kRuns = 20;
  for (int i = 0; i < kRuns; ++i) {
    ProcResult r = server.Vrun({"echo", "warm"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(r.out, "warm\n");
    ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 1; }));
  }
  EXPECT_EQ(SettledCommits(addr) - before, 2 * kRuns);
  // The same for batch tasks.
  before = SettledCommits(addr);
  for (int i = 0; i < kRuns; ++i) {
    std::string id = Lines(server.Vbatch({"true"}).out)[0];
    ASSERT_EQ(server.WaitTask(id)["state"], "SUCCESS");
    ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 1; }));
  }
  EXPECT_EQ(SettledCommits(addr) - before, 2 * kRuns);
}

TEST(Secrets, TokensNeverAppearInLogsOrListings) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\""}));
  server.Vrun({"true"});
  std::string vm = cloud.Started()[0];
  std::string token = Lines(server.Tidepool({"worker-token", vm, "--data-dir", server.data_dir()}).out)[0];
  ASSERT_EQ(token.size(), 68u);
  std::string everything = server.ServerLog() + server.Tidepool({"pool", "get", "cloud"}).out +
                           server.Tidepool({"pool", "get", "cloud", "--json"}).out +
                           server.Tidepool({"worker", "list", "--json"}).out +
                           server.Tidepool({"task", "list", "--all", "--json"}).out + ReadAll(cloud.dir() + "/" + vm + ".log");
  EXPECT_EQ(everything.find(token), std::string::npos);
  EXPECT_EQ(everything.find("tpw_"), std::string::npos);
}

}  // namespace
}  // namespace tidepool::testing
