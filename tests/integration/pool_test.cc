// The local pool scaling as pools.md says, observed from outside.
#include <signal.h>

#include <gtest/gtest.h>

#include <set>

#include "harness.h"

namespace tidepool::testing {
namespace {

TEST(Pool, ScalesFromZeroOnFirstVrunAndBackToZeroAfterIdleDecay) {
  Server server(OnePool("local", 2, {"max_idle_agents: 2", "idle_decay: \"2s\""}));
  EXPECT_EQ(server.Workers("local"), 0);
  ProcResult r = server.Vrun({"echo", "hi"});
  EXPECT_EQ(r.out, "hi\n");
  // The worker stays for idle_decay (a second vrun reuses it), then goes.
  EXPECT_EQ(server.Workers("local", {"idle"}), 1);
  ProcResult again = server.Vrun({"sh", "-c", "echo $TIDEPOOL_WORKER_NAME"});
  nlohmann::json workers = server.Json({"worker", "list"});
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(Lines(again.out)[0], workers[0]["name"]);
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local") == 0; }, 60s)) << server.Pool("local").dump(2);
  // The agent process is really gone, and the pool's record says why.
  EXPECT_TRUE(server.AgentPids().empty());
  nlohmann::json pool = server.Json({"pool", "get", "local"});
  std::set<std::string> kinds;
  for (auto& e : pool["events"]) kinds.insert(e["kind"]);
  EXPECT_TRUE(kinds.count("scale_up"));
  EXPECT_TRUE(kinds.count("scale_down"));
}

TEST(Pool, MaxAgentsBoundsConcurrentWorkersWhileTasksQueue) {
  Server server(OnePool("local", 2, {"max_idle_agents: 2", "idle_decay: \"60s\""}));
  std::string ledger = server.dir() + "/ledger";
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    // Each task records its start and end; the file's order is the order things happened.
    ProcResult r = server.Vbatch({"sh", "-c",
                                  "echo start $TIDEPOOL_WORKER_NAME >> " + ledger + "; sleep 0.5; echo end >> " + ledger});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ids.push_back(Lines(r.out)[0]);
  }
  // While they run, the pool never has more than 2 workers and the rest wait in the queue.
  bool saw_queue = false;
  int max_workers = 0;
  WaitFor([&] {
    nlohmann::json p = server.Pool("local");
    int n = 0;
    for (auto& [state, count] : p["workers"].items()) {
      if (state != "deleting") n += count.get<int>();
    }
    max_workers = std::max(max_workers, n);
    if (p["queued"].get<int>() > 0) saw_queue = true;
    return server.Task(ids.back())["state"] == "SUCCESS";
  }, 120s);
  for (auto& id : ids) EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  EXPECT_LE(max_workers, 2);
  EXPECT_TRUE(saw_queue);
  int running = 0, peak = 0;
  std::set<std::string> names;
  for (const auto& line : Lines(ReadAll(ledger))) {
    if (line.rfind("start", 0) == 0) {
      peak = std::max(peak, ++running);
      names.insert(line.substr(6));
    } else {
      --running;
    }
  }
  EXPECT_EQ(peak, 2);
  EXPECT_EQ(names.size(), 2u);  // workers are reused, not replaced per task
}

TEST(Pool, MaxAgentsZeroNeverCreatesAndTasksWaitUntilCancelled) {
  Server server(OnePool("none", 0));
  ProcResult r = server.Vbatch({"true"});
  std::string id = Lines(r.out)[0];
  ASSERT_TRUE(WaitFor([&] { return server.Pool("none")["queued"] == 1; }));
  EXPECT_EQ(server.Workers("none"), 0);
  EXPECT_EQ(server.Task(id)["state"], "QUEUEING");
  ProcResult c = server.Tidepool({"task", "cancel", id});
  EXPECT_EQ(c.exit_code, 0);
  EXPECT_EQ(server.WaitTask(id)["state"], "CANCELLED");
  EXPECT_EQ(server.Tidepool({"task", "wait", id}).exit_code, 1);
}

TEST(Pool, CtrlCWhileQueuedCancels) {
  Server server(OnePool("none", 0));
  Background b = server.VrunBackground({"true"});
  ASSERT_TRUE(WaitFor([&] { return server.Pool("none")["queued"] == 1; }));
  b.Signal(SIGINT);
  ProcResult r = b.Wait();
  EXPECT_EQ(r.exit_code, 130);
  ASSERT_TRUE(WaitFor([&] { return server.Pool("none")["queued"] == 0; }));
  nlohmann::json tasks = server.Json({"task", "list"});
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0]["state"], "CANCELLED");
}

TEST(Pool, ProgressLineWhileWaitingForAWorker) {
  // A worker that takes 3 s to "boot": vrun says what it is waiting for.
  Server server(OnePool("slow", 1, {}, "{ boot_delay: \"3s\" }"));
  ProcResult r = server.Vrun({"echo", "booted"});
  EXPECT_EQ(r.out, "booted\n");
  EXPECT_NE(r.err.find("waiting for a worker in pool slow: 1 starting, 0 idle, position 1 in queue"), std::string::npos)
      << r.err;
  ProcResult q = server.Vrun({"-q", "true"});
  EXPECT_EQ(q.err, "");
}

// A waiting vrun is told its place among everything queued, batch tasks included, and told
// again when it moves up.
TEST(Pool, AWaitingVrunIsToldItsPlaceBehindBatchTasks) {
  Server server(OnePool("none", 0));
  auto queued = [&](int n) { return WaitFor([&] { return server.Pool("none")["queued"] == n; }); };
  ASSERT_EQ(server.Vbatch({"true"}).exit_code, 0);
  Background first = server.VrunBackground({"true"});
  ASSERT_TRUE(queued(2));
  ASSERT_EQ(server.Vbatch({"true"}).exit_code, 0);
  Background second = server.VrunBackground({"true"});
  ASSERT_TRUE(queued(4));
  ASSERT_TRUE(WaitFor([&] { return second.Stderr().find("position 4 in queue") != std::string::npos; }))
      << second.Stderr();
  first.Signal(SIGINT);
  ProcResult r = first.Wait();
  EXPECT_EQ(r.exit_code, 130);
  EXPECT_NE(r.err.find("position 2 in queue"), std::string::npos) << r.err;
  ASSERT_TRUE(WaitFor([&] { return second.Stderr().find("position 3 in queue") != std::string::npos; }))
      << second.Stderr();
  second.Signal(SIGINT);
  EXPECT_EQ(second.Wait().exit_code, 130);
}

TEST(Pool, ListingsAsTablesAndJson) {
  Server server;
  server.Vrun({"true"});
  nlohmann::json pools = server.Json({"pool", "list"});
  ASSERT_EQ(pools.size(), 1u);
  EXPECT_EQ(pools[0]["name"], "local");
  EXPECT_EQ(pools[0]["default"], true);
  EXPECT_EQ(pools[0]["backend"], "local");
  EXPECT_EQ(pools[0]["max_agents"], 4);
  for (const char* s : {"requested", "starting", "idle", "busy", "draining", "deleting", "lost", "unknown"}) {
    EXPECT_TRUE(pools[0]["workers"].contains(s)) << s;
  }
  nlohmann::json workers = server.Json({"worker", "list"});
  ASSERT_EQ(workers.size(), 1u);
  for (const char* f : {"name", "pool", "state", "slots", "used_slots", "labels", "created_at", "last_seen"}) {
    EXPECT_TRUE(workers[0].contains(f)) << f;
  }
  ProcResult table = server.Tidepool({"pool", "list"});
  EXPECT_EQ(Lines(table.out)[0].rfind("NAME", 0), 0u);
  EXPECT_NE(table.out.find("WORKERS(idle/busy/starting/unknown)"), std::string::npos);
  ProcResult wl = server.Tidepool({"worker", "list"});
  EXPECT_NE(wl.out.find("SLOTS"), std::string::npos);
  ProcResult missing = server.Tidepool({"pool", "get", "zzz"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("pool not found: zzz"), std::string::npos);
}

// The agent connects (its name came with its token) and finishes its task before the create
// call has answered; the pool, with no idle capacity wanted, picks it for deletion at once.
// That delete waits for the create's answer: asked before it, the backend knew no such worker,
// said "done", and the worker stayed "deleting" with its agent up (seen in the P4/P5 benchmark).
TEST(Pool, WorkerIdleBeforeItsCreateAnsweredIsDeletedOnceItHas) {
  Server server(OnePool("slow", 1, {"max_idle_agents: 0", "sync_loop_interval: \"1h\""}, "{ api_delay: \"2s\" }"));
  ProcResult r = server.Vrun({"echo", "early"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "early\n");
  // A sync interval of an hour: only the delete itself can make the worker go.
  ASSERT_TRUE(WaitFor([&] { return server.Workers("slow") == 0; }, 30s)) << server.Pool("slow").dump(2);
  EXPECT_TRUE(server.AgentPids().empty());
}

TEST(Pool, SlotsLetOneWorkerRunSeveralTasks) {
  Server server(OnePool("wide", 1, {"default_slots_per_agent: 3", "max_idle_agents: 3", "idle_decay: \"60s\""}));
  std::string marker = server.dir() + "/concurrent";
  std::vector<Background> runs;
  // Three tasks that each wait until all three have started: only possible with 3 slots at once.
  for (int i = 0; i < 3; ++i) {
    runs.push_back(server.VrunBackground({"sh", "-c",
        "echo x >> " + marker + "; while [ $(wc -l < " + marker + ") -lt 3 ]; do sleep 0.05; done; echo $TIDEPOOL_WORKER_NAME"}));
  }
  std::set<std::string> workers;
  for (auto& b : runs) {
    ProcResult r = b.Wait(120s);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    workers.insert(r.out);
  }
  EXPECT_EQ(workers.size(), 1u);
}

TEST(Pool, ForgedWorkerIdentityIsRefused) {
  Server server;
  ProcResult r = RunProcess({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "local", "--name",
                      "local-forged", "--token", "tpw_not-a-real-token"},
                     {}, server.dir(), "", 60s);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("refused"), std::string::npos) << r.err;
  // Even the right token for a name the pool never created is refused.
  ProcResult token = server.Tidepool({"worker-token", "local-unexpected", "--data-dir", server.data_dir()});
  ASSERT_EQ(token.exit_code, 0);
  ProcResult r2 = RunProcess({BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "local", "--name",
                       "local-unexpected", "--token", Lines(token.out)[0]},
                      {}, server.dir(), "", 60s);
  EXPECT_EQ(r2.exit_code, 3);
  EXPECT_EQ(server.Workers("local"), 0);
  // Tokens never appear in the server's log.
  EXPECT_EQ(server.ServerLog().find(Lines(token.out)[0]), std::string::npos);
}

}  // namespace
}  // namespace tidepool::testing
