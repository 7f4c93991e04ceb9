// Pools that look after themselves (pools.md: drift, failures, identity), observed through a
// command backend whose scripts start real agents and keep a ledger of every call.
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "cloud.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

std::string CloudDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return "/tmp/tidepool-cloud-" + std::to_string(getpid()) + "-" + info->name();
}

int EventCount(Server& server, const std::string& kind) {
  int n = 0;
  nlohmann::json pool = server.Pool("cloud");  // bound first: a range-for over a temporary's member dangles
  for (auto& e : pool["events"]) n += e["kind"] == kind;
  return n;
}

std::string WorkerState(Server& server, const std::string& name) {
  for (auto& w : server.Json({"worker", "list"})) {
    if (w["name"] == name) return w["state"];
  }
  return "";
}

TEST(Drift, CommandBackendCreatesUsesAndDeletesWorkers) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(2, {"max_idle_agents: 2", "idle_decay: \"1s\"", "sync_loop_interval: \"1s\""}));
  ProcResult r = server.Vrun({"sh", "-c", "echo on $TIDEPOOL_WORKER_NAME"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(cloud.Started().size(), 1u);
  std::string vm = cloud.Started()[0];
  EXPECT_EQ(r.out, "on " + vm + "\n");  // the name the start script printed is the worker's name
  // Idle for idle_decay: stop is called with that name ($1 and ${WORKER_NAME}), the VM goes,
  // and the worker leaves the books once the list confirms it.
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 0; })) << server.Pool("cloud").dump(2);
  EXPECT_EQ(cloud.Stopped(), std::vector<std::string>{vm});
  EXPECT_FALSE(cloud.Alive(vm));
}

// A machine whose create call has not answered yet is listed (an unknown worker), its agent
// connects and takes a task; the create's placeholder is cancelled as surplus. When the create
// answers with that machine's name, the two records are one worker: the machine, busy, is kept
// and its task finishes (before, the placeholder took the name and deleted the machine under it).
TEST(Drift, MachineSeenBeforeItsCreateAnsweredIsOneWorkerAndKeepsItsWork) {
  Cloud cloud(CloudDir());
  cloud.Set("slow_return", "3");
  Server server(cloud.Config(1, {"max_idle_agents: 0", "sync_loop_interval: \"1s\""}));
  ProcResult b = server.Vbatch({"sh", "-c", "sleep 4; echo finished"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string id = Lines(b.out)[0];
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump(2);
  EXPECT_EQ(t["attempts"], 1) << t.dump(2);
  EXPECT_EQ(server.Tidepool({"task", "logs", id}).out, "finished\n");
  ASSERT_EQ(cloud.Started().size(), 1u);
  std::string vm = cloud.Started()[0];
  std::vector<std::string> ledger = cloud.Ledger();
  auto returned = std::find(ledger.begin(), ledger.end(), "returned " + vm);
  ASSERT_NE(returned, ledger.end());
  EXPECT_EQ(std::find(ledger.begin(), returned, "stop " + vm), returned) << "deleted before its create answered";
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 0; })) << server.Pool("cloud").dump(2);
  EXPECT_FALSE(cloud.Alive(vm));
}

// A delete the backend acknowledged but did not carry out: the next lists still show the
// machine, so the pool asks again (reconcile, don't assume) instead of waiting forever.
TEST(Drift, DeleteThatDidNotTakeIsIssuedAgain) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"max_idle_agents: 0", "sync_loop_interval: \"1s\""}));
  cloud.Set("stop_ignored");
  ProcResult r = server.Vrun({"true"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(cloud.Started().size(), 1u);
  std::string vm = cloud.Started()[0];
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 0; })) << server.Pool("cloud").dump(2);
  EXPECT_EQ(cloud.Count("stop-ignored"), 1);
  EXPECT_EQ(cloud.Stopped(), std::vector<std::string>{vm});
  EXPECT_FALSE(cloud.Alive(vm));
}

// The backend deletes the machine and lists it gone while its agent is still connected (a VM
// that vanished without closing its TCP connection). The worker stays "deleting" while
// connected; when the connection ends it goes at once, not at the next sync interval (before,
// it held the pool's only place for that interval: seen once in ~400 runs of the P4/P5
// benchmark, where the disconnect came after the delete's confirming list).
TEST(Drift, DeletedWorkerGoesWhenItsLastConnectionEnds) {
  Cloud cloud(CloudDir());
  cloud.Set("stop_keeps_agent");
  Server server(cloud.Config(1, {"max_idle_agents: 0", "sync_loop_interval: \"1h\""}));
  ProcResult r = server.Vrun({"true"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(cloud.Started().size(), 1u);
  std::string vm = cloud.Started()[0];
  pid_t agent = -1;
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& l : cloud.Ledger()) {
      if (l.rfind("stop-kept-agent " + vm + " ", 0) == 0) agent = std::atoi(l.substr(l.rfind(' ') + 1).c_str());
    }
    return agent > 0;
  })) << "the VM was not stopped";
  // The stop SIGKILLs the VM and logs; on a busy machine the VM may not have died yet.
  EXPECT_TRUE(WaitFor([&] { return !cloud.Alive(vm); }));
  EXPECT_EQ(WorkerState(server, vm), "deleting") << server.Pool("cloud").dump(2);  // connected: not forgotten on the list's word
  ::kill(agent, SIGKILL);
  // An hour's sync interval: only the end of the connection can make the worker go.
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 0; }, 30s)) << server.Pool("cloud").dump(2);
}

TEST(Drift, ZombieBecomesUnknownAndIsKilledAfterKillUnknownAfter) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(2, {"sync_loop_interval: \"1s\"", "kill_unknown_after: \"2s\""}));
  cloud.BootStray("vm-zombie");
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "vm-zombie") == "unknown"; }));
  EXPECT_GE(EventCount(server, "unknown_worker"), 1);
  ASSERT_TRUE(WaitFor([&] { return !cloud.Alive("vm-zombie"); }));
  EXPECT_EQ(cloud.Stopped(), std::vector<std::string>{"vm-zombie"});
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "vm-zombie").empty(); }));
}

TEST(Drift, LostAgentIsReplacedAndItsMachineDeletedAfterKillUnknownAfter) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(2, {"min_agents: 1", "sync_loop_interval: \"1s\"", "kill_unknown_after: \"2s\""}));
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud", {"idle"}) == 1; }));
  std::string first = cloud.Started()[0];
  pid_t agent = cloud.AgentPid(first);
  ASSERT_GT(agent, 0);
  ::kill(agent, SIGKILL);  // the agent dies; its machine stays up
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, first) == "lost" || WorkerState(server, first) == "deleting"; }));
  // A replacement comes up to keep min_agents...
  ASSERT_TRUE(WaitFor([&] { return cloud.Started().size() == 2 && server.Workers("cloud", {"idle"}) == 1; }));
  // ...and the lost machine is deleted after kill_unknown_after.
  ASSERT_TRUE(WaitFor([&] { return !cloud.Alive(first); }));
  EXPECT_EQ(cloud.Stopped(), std::vector<std::string>{first});
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 1; }));
}

TEST(Drift, FailingStartCoolsDownIsShownOnceAndRecoversWhenRepaired) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\"", "scale_up_error_retry_delay: \"1s\""}));
  cloud.Set("fail", "quota exceeded for instance type x9.huge\n");
  Background run = server.VrunBackground({"echo", "finally"});
  // The pool retries by itself, backing off; the error is in pool get and the metrics.
  ASSERT_TRUE(WaitFor([&] { return cloud.Count("fail") >= 2; }));
  nlohmann::json pool = server.Pool("cloud");
  EXPECT_NE(pool["last_error"].get<std::string>().find("quota exceeded"), std::string::npos) << pool.dump(2);
  EXPECT_GE(EventCount(server, "allocation_error"), 2);
  cloud.Clear("fail");
  ProcResult r = run.Wait();
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "finally\n");
  // The waiting vrun was told, once per distinct error.
  size_t first = r.err.find("quota exceeded");
  ASSERT_NE(first, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("quota exceeded", first + 1), std::string::npos) << r.err;
  // A worker connecting clears the error.
  EXPECT_TRUE(server.Pool("cloud")["last_error"].is_null());
}

TEST(Drift, BackoffDoublesBetweenFailedCreates) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"scale_up_error_retry_delay: \"1s\""}));
  cloud.Set("fail", "no capacity\n");
  server.Vbatch({"true"});
  ASSERT_TRUE(WaitFor([&] { return cloud.Count("fail") >= 3; }, 60s));
  // The events say how long each cooldown is: 1s, then 2s, then 4s.
  std::vector<std::string> delays;
  nlohmann::json pool = server.Pool("cloud");
  for (auto& e : pool["events"]) {
    if (e["kind"] != "allocation_error") continue;
    std::string m = e["message"];
    delays.push_back(m.substr(m.rfind("retry in ") + 9));
  }
  ASSERT_GE(delays.size(), 3u);
  EXPECT_EQ(delays[0], "1s)");
  EXPECT_EQ(delays[1], "2s)");
  EXPECT_EQ(delays[2], "4s)");
}

TEST(Drift, HangingStartIsCutOffByTheTimeoutAndLeavesNothingBehind) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\"", "scale_up_error_retry_delay: \"1s\""}, "2s"));
  cloud.Set("hang");
  Background run = server.VrunBackground({"echo", "after-hang"});
  ASSERT_TRUE(WaitFor([&] {
    auto e = server.Pool("cloud")["last_error"];
    return e.is_string() && e.get<std::string>().find("timed out after 2s") != std::string::npos;
  })) << server.Pool("cloud").dump(2);
  cloud.Clear("hang");
  ProcResult r = run.Wait();
  EXPECT_EQ(r.out, "after-hang\n");
  // The hung script was killed with its process group (the script leads it; the ledger has its
  // pid): nothing of it survives, its `sleep 100000` included. Only this test's own group is
  // looked at: other tests running beside it may have hung scripts of their own.
  int hangs = 0;
  for (const auto& line : cloud.Ledger()) {
    if (line.rfind("hang ", 0) != 0) continue;
    ++hangs;
    ProcResult ps = RunProcess({"/bin/sh", "-c", "pgrep -g " + line.substr(5) + " | wc -l"}, {}, server.dir());
    EXPECT_EQ(ps.out, "0\n") << "process group " << line.substr(5);
  }
  EXPECT_GE(hangs, 1);
}

TEST(Drift, WorkerThatNeverConnectsIsDeletedAfterRegisterTimeoutAndReplaced) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\"", "register_timeout: \"2s\""}));
  cloud.Set("no_agent");
  ProcResult b = server.Vbatch({"echo", "eventually"});
  std::string id = Lines(b.out)[0];
  ASSERT_TRUE(WaitFor([&] { return cloud.Stopped().size() >= 1; }));
  EXPECT_GE(EventCount(server, "register_timeout"), 1);
  std::string dead = cloud.Stopped()[0];
  // The stop script records the stop before its SIGKILL lands: wait for the VM to die.
  EXPECT_TRUE(WaitFor([&] { return !cloud.Alive(dead); })) << dead;
  cloud.Clear("no_agent");
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  EXPECT_GE(cloud.Started().size(), 2u);  // replaced
}

TEST(Drift, WorkerMissingFromTwoListsIsForgotten) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\"", "register_timeout: \"10m\""}));
  cloud.Set("no_agent");
  server.Vbatch({"true"});
  ASSERT_TRUE(WaitFor([&] { return cloud.Started().size() == 1 && server.Workers("cloud", {"starting"}) == 1; }));
  std::string vm = cloud.Started()[0];
  ::kill(-cloud.VmPid(vm), SIGKILL);  // the machine vanishes behind the pool's back
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, vm).empty(); }));
  EXPECT_TRUE(cloud.Stopped().empty());  // forgotten, not deleted: there was nothing to delete
  EXPECT_GE(EventCount(server, "worker_gone"), 1);
}

TEST(Drift, ListErrorChangesNothing) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"min_agents: 1", "sync_loop_interval: \"1s\""}));
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud", {"idle"}) == 1; }));
  std::string vm = cloud.Started()[0];
  cloud.Set("list_fail");
  ASSERT_TRUE(WaitFor([&] { return EventCount(server, "list_failed") >= 2; }));
  EXPECT_EQ(WorkerState(server, vm), "idle");
  EXPECT_EQ(cloud.Started().size(), 1u);  // nothing created on the list's account
  EXPECT_TRUE(cloud.Stopped().empty());   // nothing deleted either
  EXPECT_NE(server.Pool("cloud")["last_error"].get<std::string>().find("cloud API is down"), std::string::npos);
  cloud.Clear("list_fail");
}

TEST(Drift, NoScaleUpWhileUnknownWorkersExistUntilInitialDelay) {
  Cloud cloud(CloudDir());
  cloud.BootStray("vm-stray");
  Server server(cloud.Config(2, {"sync_loop_interval: \"1s\"", "initial_delay: \"4s\"", "kill_unknown_after: \"1h\""}));
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "vm-stray") == "unknown"; }));
  ProcResult b = server.Vbatch({"true"});
  std::string id = Lines(b.out)[0];
  // While held, the pool says so and the cloud has seen no create.
  ASSERT_TRUE(WaitFor([&] { return server.Pool("cloud")["status"] == "held"; }));
  EXPECT_EQ(cloud.Started(), std::vector<std::string>{"vm-stray"});
  // Once initial_delay has passed since start, demand is served despite the unknown worker.
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  EXPECT_EQ(cloud.Started().size(), 2u);
}

TEST(Drift, ForgedAgentIsRefusedCountedAndShown) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(1, {"sync_loop_interval: \"1s\""}));
  ProcResult r = RunProcess({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "cloud",
                             "--name", "vm-forged", "--token", "tpw_0000"},
                            {}, server.dir(), "", 60s);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(server.Pool("cloud")["workers"]["idle"], 0);
  EXPECT_EQ(EventCount(server, "ghost_rejected"), 1);
  EXPECT_EQ(server.Workers("cloud"), 0);
}

TEST(Drift, BoundedConcurrentCreatesAndCreateRate) {
  Cloud cloud(CloudDir());
  Server server(cloud.Config(6, {"max_concurrent_creates: 2", "create_rate: \"2/s\"", "sync_loop_interval: \"1s\""}));
  cloud.Set("concurrency");
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Lines(server.Vbatch({"sleep", "1"}).out)[0]);
  for (auto& id : ids) server.WaitTask(id);
  int running = 0, peak = 0;
  for (const auto& l : cloud.Ledger()) {
    if (l == "begin") peak = std::max(peak, ++running);
    if (l == "end") --running;
  }
  // Never more than two create calls at once (the pool may reuse early workers instead of
  // creating all six; how fast it creates is the token bucket's, unit-tested on its own).
  EXPECT_GE(cloud.Count("begin"), 2);
  EXPECT_EQ(peak, 2);
}

// Workers queued behind max_concurrent_creates that are no longer wanted are dropped before
// their create; the one whose create hangs is cut off by the timeout. None stays "deleting".
TEST(Drift, CancelledDemandDropsQueuedCreates) {
  Cloud cloud(CloudDir());
  // The hanging create is cut off after 8 s: the three cancels must land before that, which takes
  // a few seconds of CLI start-ups under the sanitizers.
  Server server(cloud.Config(4, {"max_concurrent_creates: 1", "sync_loop_interval: \"1s\""}, "8s"));
  cloud.Set("hang");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Lines(server.Vbatch({"sleep", "1"}).out)[0]);
  ASSERT_TRUE(WaitFor([&] { return cloud.Count("hang") == 1; }));
  EXPECT_EQ(server.Workers("cloud", {"requested"}), 3);
  for (const auto& id : ids) server.Tidepool({"task", "cancel", id});
  cloud.Clear("hang");
  EXPECT_TRUE(WaitFor([&] {
    return server.Workers("cloud", {"requested", "starting", "deleting", "idle", "busy", "lost", "unknown"}) == 0;
  })) << server.Pool("cloud").dump(2);
  // Only the launched create ever reached the cloud.
  EXPECT_EQ(cloud.Count("hang"), 1);
}

}  // namespace
}  // namespace tidepool::testing
