// Work that spans workers (tasks.md): sharding, gangs, dependencies, nesting, retries, and
// selectors with backup pools, driven as a user would from a plain shell.
#include <signal.h>

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "cloud.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

std::string Id(const ProcResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(r.out);
  return lines.empty() ? "" : lines[0];
}

std::string CloudDir(const std::string& suffix = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return "/tmp/tidepool-cloud-" + std::to_string(getpid()) + "-" + info->name() + suffix;
}

TEST(Work, PipelineScriptWhoseMiddleStepFails) {
  Server server;
  std::string out = server.dir() + "/out";
  WriteAll(server.dir() + "/pipeline.sh",
           "set -e\n"
           "vbatch --name prepare sh -c 'echo prepared > " + out + ".1'\n"
           "vbatch --name train --after-success prepare sh -c 'echo training; exit 3'\n"
           "vbatch --name evaluate --after-success train sh -c 'echo evaluated > " + out + ".3'\n");
  std::string id = Id(server.Vbatch({"--name", "pipe", "sh", server.dir() + "/pipeline.sh"}));
  nlohmann::json pipe = server.WaitTask(id);
  EXPECT_EQ(pipe["state"], "FAILURE");
  EXPECT_NE(pipe["reason"].get<std::string>().find("pipe/train ended FAILURE"), std::string::npos) << pipe.dump();
  EXPECT_EQ(server.Task("pipe/prepare")["state"], "SUCCESS");
  EXPECT_EQ(server.Task("pipe/prepare")["parent"], "pipe");
  nlohmann::json train = server.Task("pipe/train");
  EXPECT_EQ(train["state"], "FAILURE");
  EXPECT_EQ(train["exit_code"], 3);
  EXPECT_EQ(server.Task("pipe/evaluate")["state"], "FAILED_UPSTREAM");
  EXPECT_EQ(ReadAll(out + ".1"), "prepared\n");
  EXPECT_EQ(ReadAll(out + ".3"), "");  // never ran
  EXPECT_EQ(server.Tidepool({"task", "wait", id}).exit_code, 1);
}

TEST(Work, ShardsEachWriteTheirOwnFile) {
  Server server;
  std::string dir = server.dir();
  std::string id = Id(server.Vbatch({"-N", "8", "sh", "-c",
      "echo $TIDEPOOL_SHARD_ID/$TIDEPOOL_TOTAL_SHARDS $VELDA_SHARD_ID/$VELDA_TOTAL_SHARDS > " + dir +
          "/shard-$TIDEPOOL_SHARD_ID"}));
  nlohmann::json parent = server.WaitTask(id);
  EXPECT_EQ(parent["state"], "SUCCESS");
  for (int i = 0; i < 8; ++i) {
    std::string s = std::to_string(i);
    EXPECT_EQ(ReadAll(dir + "/shard-" + s), s + "/8 " + s + "/8\n");
    nlohmann::json shard = server.Task(id + "/" + s);
    EXPECT_EQ(shard["state"], "SUCCESS");
    EXPECT_EQ(shard["parent"], id);
  }
  // One failing shard fails the parent.
  std::string bad = Id(server.Vbatch({"-N", "3", "sh", "-c", "test $TIDEPOOL_SHARD_ID != 1"}));
  nlohmann::json p = server.WaitTask(bad);
  EXPECT_EQ(p["state"], "FAILURE");
  EXPECT_NE(p["reason"].get<std::string>().find(bad + "/1 ended FAILURE"), std::string::npos) << p.dump();
}

// A gang shard that only finishes once every shard of its gang has started: it can only pass
// if the gang really started together.
std::string BarrierShard(const std::string& ledger, const std::string& gang) {
  return "echo start " + gang + " $TIDEPOOL_SHARD_ID >> " + ledger + "; echo $TIDEPOOL_GANG_HOSTS $MASTER_ADDR > " +
         ledger + "." + gang + ".$TIDEPOOL_SHARD_ID; while [ $(grep -c '^start " + gang + " ' " + ledger +
         ") -lt $TIDEPOOL_TOTAL_SHARDS ]; do sleep 0.05; done; sleep 0.3; echo end " + gang + " >> " + ledger;
}

TEST(Work, TwoGangsOfThreeOnAFourWorkerPoolBothFinish) {
  Server server(OnePool("four", 4, {"max_idle_agents: 4", "idle_decay: \"60s\""}));
  std::string ledger = server.dir() + "/ledger";
  std::string a = Id(server.Vbatch({"-N", "3", "--gang", "sh", "-c", BarrierShard(ledger, "A")}));
  std::string b = Id(server.Vbatch({"-N", "3", "--gang", "sh", "-c", BarrierShard(ledger, "B")}));
  EXPECT_EQ(server.WaitTask(a, 120s)["state"], "SUCCESS");
  EXPECT_EQ(server.WaitTask(b, 120s)["state"], "SUCCESS");
  int running = 0, peak = 0;
  for (const auto& line : Lines(ReadAll(ledger))) {
    if (line.rfind("start", 0) == 0) peak = std::max(peak, ++running);
    if (line.rfind("end", 0) == 0) --running;
  }
  EXPECT_LE(peak, 4);  // never both gangs at once
  // Each shard saw its gang's hosts (3, shard 0's first) and MASTER_ADDR.
  for (int i = 0; i < 3; ++i) {
    auto parts = SplitWords(ReadAll(ledger + ".A." + std::to_string(i)));
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(std::count(parts[0].begin(), parts[0].end(), ','), 2);
    EXPECT_EQ(parts[0].substr(0, parts[0].find(',')), parts[1]);
  }
  EXPECT_EQ(server.Workers("four"), 4);  // scaled to make room, within max_agents
}

TEST(Work, GangThatCanNeverFitIsRefusedAtSubmit) {
  Server server(OnePool("four", 4));
  ProcResult r = server.Vbatch({"-N", "5", "--gang", "true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("a gang of 5 can never fit"), std::string::npos) << r.err;
  EXPECT_TRUE(server.Json({"task", "list"}).empty());
}

TEST(Work, AWaitingGangScalesThePoolToMakeRoom) {
  // An empty pool: a gang of 3 is demand for 3 slots, so the pool grows to 3 and it starts.
  Server server(OnePool("grow", 3, {"max_idle_agents: 3", "idle_decay: \"60s\""}));
  std::string ledger = server.dir() + "/ledger";
  std::string g = Id(server.Vbatch({"-N", "3", "--gang", "sh", "-c", BarrierShard(ledger, "G")}));
  EXPECT_EQ(server.WaitTask(g, 120s)["state"], "SUCCESS");
  EXPECT_EQ(server.Workers("grow"), 3);
}

TEST(Work, DependencyRules) {
  Server server;
  std::string ok = Id(server.Vbatch({"--name", "ok", "true"}));
  std::string bad = Id(server.Vbatch({"--name", "bad", "false"}));
  server.WaitTask(ok);
  server.WaitTask(bad);
  // Already final at submit: evaluated at once.
  std::string a = Id(server.Vbatch({"--after-success", "ok", "true"}));
  std::string b = Id(server.Vbatch({"--after-success", "bad", "true"}));
  std::string c = Id(server.Vbatch({"--after-fail", "bad", "true"}));
  std::string d = Id(server.Vbatch({"--after", "bad", "true"}));
  EXPECT_EQ(server.WaitTask(a)["state"], "SUCCESS");
  EXPECT_EQ(server.Task(b)["state"], "FAILED_UPSTREAM");
  EXPECT_EQ(server.WaitTask(c)["state"], "SUCCESS");
  EXPECT_EQ(server.WaitTask(d)["state"], "SUCCESS");
  // A dependency that does not exist is an error at submit.
  ProcResult missing = server.Vbatch({"--after", "no-such-task", "true"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("dependency not found: no-such-task"), std::string::npos) << missing.err;
  // FAILED_UPSTREAM propagates down a chain; pending tasks wait for their dependency.
  std::string gate = server.dir() + "/gate";
  std::string head = Id(server.Vbatch({"--name", "head", "sh", "-c", "while [ ! -e " + gate + " ]; do sleep 0.05; done; exit 1"}));
  std::string mid = Id(server.Vbatch({"--name", "mid", "--after-success", "head", "true"}));
  std::string tail = Id(server.Vbatch({"--name", "tail", "--after-success", "mid", "true"}));
  std::string cleanup = Id(server.Vbatch({"--name", "cleanup", "--after-fail", "head", "true"}));
  EXPECT_EQ(server.Task(mid)["state"], "PENDING");
  EXPECT_EQ(server.Task(tail)["state"], "PENDING");
  WriteAll(gate, "");
  EXPECT_EQ(server.WaitTask(tail)["state"], "FAILED_UPSTREAM");
  EXPECT_EQ(server.Task(mid)["state"], "FAILED_UPSTREAM");
  EXPECT_EQ(server.WaitTask(cleanup)["state"], "SUCCESS");
  EXPECT_EQ(server.Tidepool({"task", "wait", tail}).exit_code, 1);
}

TEST(Work, ParentResolvesOnlyAfterItsChildren) {
  Server server;
  std::string gate = server.dir() + "/gate";
  std::string p = Id(server.Vbatch({"--name", "parent", "sh", "-c",
                                    "vbatch --name slow sh -c 'while [ ! -e " + gate + " ]; do sleep 0.05; done'"}));
  ASSERT_TRUE(WaitFor([&] { return server.Task(p)["state"] == "RUNNING_SUBTASKS"; }));
  EXPECT_EQ(server.Task("parent/slow")["state"], "RUNNING");
  WriteAll(gate, "");
  EXPECT_EQ(server.WaitTask(p)["state"], "SUCCESS");
  // A name used twice among siblings gets a suffix; '/' in a child's name is refused.
  std::string q = Id(server.Vbatch({"--name", "q", "sh", "-c",
                                    "vbatch --name x true && vbatch --name x true && ! vbatch --name a/b true"}));
  EXPECT_EQ(server.WaitTask(q)["state"], "SUCCESS");
  EXPECT_EQ(server.Task("q/x")["state"], "SUCCESS");
  EXPECT_EQ(server.WaitTask("q/x_2")["state"], "SUCCESS");
}

TEST(Work, CancelTakesTheWholeTree) {
  Server server;
  std::string id = Id(server.Vbatch({"-N", "3", "sh", "-c", "sleep 60"}));
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"busy"}) == 3; }));
  ProcResult c = server.Tidepool({"task", "cancel", id});
  EXPECT_EQ(Lines(c.out).size(), 4u) << c.out;
  EXPECT_EQ(server.WaitTask(id)["state"], "CANCELLED");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(server.Task(id + "/" + std::to_string(i))["state"], "CANCELLED");
}

pid_t AgentOf(Server& server, const std::string& worker) { return server.AgentPid("local", worker); }

TEST(Work, RetriesRequeueAfterWorkerLossAndOnFailureWhenAsked) {
  Server server(DefaultConfig(), {"--worker-lost-grace", "1s"});
  std::string runs = server.dir() + "/runs";
  // Attempt 1 waits forever; its worker dies (and the task with it); attempt 2 finishes.
  std::string id = Id(server.Vbatch({"--retries", "1", "sh", "-c",
      "echo attempt >> " + runs + "; echo out-$(wc -l < " + runs + "); [ $(wc -l < " + runs + ") -ge 2 ] || sleep 600"}));
  ASSERT_TRUE(WaitFor([&] { return Lines(ReadAll(runs)).size() == 1; }));
  std::string worker = server.Task(id)["worker"];
  pid_t agent = AgentOf(server, worker);
  ASSERT_GT(agent, 0);
  ::kill(agent, SIGKILL);
  nlohmann::json t = server.WaitTask(id, 120s);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump();
  EXPECT_EQ(t["attempts"], 2);
  EXPECT_EQ(Lines(ReadAll(runs)).size(), 2u);
  // The logs keep both attempts' output, in order.
  EXPECT_EQ(server.Tidepool({"task", "logs", id}).out, "out-1\nout-2\n");
  // Without --retries a lost worker fails the task.
  std::string once = Id(server.Vbatch({"sh", "-c", "echo started > " + runs + ".once; sleep 600"}));
  ASSERT_TRUE(WaitFor([&] { return !ReadAll(runs + ".once").empty(); }));
  ::kill(AgentOf(server, server.Task(once)["worker"]), SIGKILL);
  nlohmann::json lost = server.WaitTask(once, 120s);
  EXPECT_EQ(lost["state"], "FAILURE");
  EXPECT_EQ(lost["reason"], "worker lost");
  // --retry-on-failure retries a non-zero exit; without it, it is final.
  std::string marker = server.dir() + "/marker";
  std::string flaky = Id(server.Vbatch({"--retries", "2", "--retry-on-failure", "sh", "-c",
                                        "test -e " + marker + " || { touch " + marker + "; exit 1; }"}));
  nlohmann::json f = server.WaitTask(flaky);
  EXPECT_EQ(f["state"], "SUCCESS");
  EXPECT_EQ(f["attempts"], 2);
  std::string plain = Id(server.Vbatch({"--retries", "2", "false"}));
  nlohmann::json pf = server.WaitTask(plain);
  EXPECT_EQ(pf["state"], "FAILURE");
  EXPECT_EQ(pf["attempts"], 1);
}

// A stopped agent keeps its TCP connection open, so only the missing heartbeats tell the
// server it is gone: after 3 silent intervals the link is closed and the grace runs out.
TEST(Work, SilentAgentIsCutOffAfterThreeMissedHeartbeats) {
  Server server(DefaultConfig(), {"--worker-lost-grace", "1s", "--heartbeat-interval", "300ms"});
  std::string started = server.dir() + "/started";
  std::string id = Id(server.Vbatch({"sh", "-c", "echo x > " + started + "; sleep 600"}));
  ASSERT_TRUE(WaitFor([&] { return !ReadAll(started).empty(); }));
  pid_t agent = AgentOf(server, server.Task(id)["worker"]);
  ASSERT_GT(agent, 0);
  ::kill(agent, SIGSTOP);
  nlohmann::json t = server.WaitTask(id, 60s);
  ::kill(agent, SIGKILL);
  ::kill(agent, SIGCONT);
  EXPECT_EQ(t["state"], "FAILURE") << t.dump();
  EXPECT_EQ(t["reason"], "worker lost") << t.dump();
  EXPECT_NE(server.ServerLog().find("nothing heard for"), std::string::npos);
}

// With many agents each is told to beat less often, so the server hears at most
// --max-heartbeat-rate heartbeats per second in all; the silence cut-off follows each agent's own
// interval. Rate 1/s: the first agent is welcomed with 1 s and the second with 2 s; then the first
// is told 2 s too (with two connected, 1 s would be twice the rate).
TEST(Work, HeartbeatIntervalGrowsWithTheAgentsConnectedUpToTheRateCap) {
  Server server(OnePool("local", 2, {"min_agents: 2", "idle_decay: \"60s\""}),
                {"--worker-lost-grace", "1s", "--heartbeat-interval", "300ms", "--max-heartbeat-rate", "1"});
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 2; }));
  std::string log = server.ServerLog();
  EXPECT_NE(log.find("heartbeat every 1000 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("heartbeat every 2000 ms"), std::string::npos) << log;
  EXPECT_EQ(log.find("heartbeat every 300 ms"), std::string::npos) << log;
  EXPECT_TRUE(WaitFor([&] { return server.ServerLog().find("heartbeat every 2000 ms from now") != std::string::npos; }))
      << server.ServerLog();
  // Heartbeats at 1-2 s keep both links open well past 3 x 300 ms.
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(server.ServerLog().find("nothing heard for"), std::string::npos);
  EXPECT_EQ(server.Workers("local", {"idle"}), 2);
}

TEST(Work, LostGangShardStopsTheGangAndRequeuesItWhole) {
  Server server(OnePool("local", 4, {"max_idle_agents: 4", "idle_decay: \"60s\""}), {"--worker-lost-grace", "1s"});
  std::string runs = server.dir() + "/runs";
  // First attempt: both shards start, then wait; shard 0's worker dies. Second attempt finishes.
  std::string id = Id(server.Vbatch({"-N", "2", "--gang", "--retries", "1", "sh", "-c",
      "echo $TIDEPOOL_SHARD_ID >> " + runs + "; [ $(wc -l < " + runs + ") -gt 2 ] || sleep 600"}));
  ASSERT_TRUE(WaitFor([&] { return Lines(ReadAll(runs)).size() == 2; }));
  ::kill(AgentOf(server, server.Task(id + "/0")["worker"]), SIGKILL);
  nlohmann::json g = server.WaitTask(id, 120s);
  EXPECT_EQ(g["state"], "SUCCESS") << g.dump();
  EXPECT_EQ(g["attempts"], 2);
  EXPECT_EQ(Lines(ReadAll(runs)).size(), 4u);  // each shard ran once per gang attempt
  EXPECT_EQ(server.Task(id + "/1")["state"], "SUCCESS");
}

// Two pools behind the selector `gpu`: gpu-a (preferred, on cloud `a`, with `extra_a` auto_scaler
// lines) and gpu-b (its backup, on cloud `b`), two workers each at most.
std::string GpuPools(const Cloud& a, const Cloud& b, const std::string& extra_a) {
  return "agent_pools:\n"
         "  - name: gpu-a\n    selectors: [gpu]\n    selector_priority: 0\n    auto_scaler:\n" +
         a.Backend() + "      max_agents: 2\n" + extra_a +
         "  - name: gpu-b\n    selectors: [gpu]\n    selector_priority: 1\n    auto_scaler:\n" + b.Backend() +
         "      max_agents: 2\n";
}

TEST(Selectors, BackupPoolServesWhileThePreferredPoolFailsThenPreferredTakesNewDemand) {
  Cloud a(CloudDir("-a")), b(CloudDir("-b"));
  Server server(GpuPools(a, b, "      scale_up_error_retry_delay: \"2s\"\n"));
  a.Set("fail", "no A100s left in us-west-2a\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(Id(server.Vbatch({"-P", "gpu", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME; echo $TIDEPOOL_POOL"})));
  }
  for (const auto& id : ids) {
    nlohmann::json t = server.WaitTask(id, 120s);
    EXPECT_EQ(t["state"], "SUCCESS");
    EXPECT_EQ(t["pool"], "gpu");
    std::vector<std::string> lines = Lines(server.Tidepool({"task", "logs", id}).out);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[1], "gpu-b");  // the pool it runs on, not the selector it named
    std::string worker = lines[0];
    std::vector<std::string> from_b = b.Started();
    EXPECT_NE(std::find(from_b.begin(), from_b.end(), worker), from_b.end()) << worker << " is not from pool gpu-b";
  }
  EXPECT_GE(a.Count("fail"), 1);
  EXPECT_NE(server.Pool("gpu-a")["last_error"].get<std::string>().find("no A100s"), std::string::npos);
  // Repaired and out of its cooldown, the preferred pool takes new demand again.
  a.Clear("fail");
  ASSERT_TRUE(WaitFor([&] { return server.Pool("gpu-a")["status"] != "cooldown"; }));
  std::string later = Id(server.Vbatch({"-P", "gpu", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME"}));
  EXPECT_EQ(server.WaitTask(later, 120s)["state"], "SUCCESS");
  std::string worker = Lines(server.Tidepool({"task", "logs", later}).out)[0];
  std::vector<std::string> from_a = a.Started();
  EXPECT_NE(std::find(from_a.begin(), from_a.end(), worker), from_a.end()) << worker << " is not from pool gpu-a";
}

// A create that fails out of capacity (the script says so on its last stderr line,
// docs/backends.md) hands the demand to the backup pool at once: the create queued behind it in
// the preferred pool is dropped, not tried against the same empty zone.
TEST(Selectors, OutOfCapacitySendsTheQueuedDemandToTheBackupAtOnce) {
  Cloud a(CloudDir("-a")), b(CloudDir("-b"));
  Server server(GpuPools(a, b,
                         "      max_concurrent_creates: 1\n      create_rate: 1000\n"
                         "      scale_up_error_retry_delay: \"1h\"\n"));
  a.Set("fail", "no A100s left in us-west-2a\nout_of_capacity: us-west-2a\n");
  // Two shards at once: gpu-a plans two creates, launches one and queues the other behind
  // max_concurrent_creates (not behind the rate: a create waiting for a token is already dropped
  // by the planner when its demand moves).
  std::string id = Id(server.Vbatch({"-P", "gpu", "-N", "2", "true"}));
  nlohmann::json g = server.WaitTask(id, 120s);
  EXPECT_EQ(g["state"], "SUCCESS") << g.dump();
  for (const char* shard : {"/0", "/1"}) {
    std::string worker = server.Task(id + shard)["worker"];
    std::vector<std::string> from_b = b.Started();
    EXPECT_NE(std::find(from_b.begin(), from_b.end(), worker), from_b.end()) << worker << " is not from pool gpu-b";
  }
  EXPECT_EQ(a.Count("fail"), 1);  // the queued create was dropped, not run into the same wall
  nlohmann::json pool = server.Pool("gpu-a");
  EXPECT_EQ(pool["last_error"], "create failed: start failed (exit 1): no A100s left in us-west-2a\n"
                                "out_of_capacity: us-west-2a [out_of_capacity]")
      << pool.dump(2);
  EXPECT_EQ(pool["status"], "cooldown");
}

TEST(Selectors, IdleSlotsAnywhereBehindTheSelectorComeFirst) {
  Cloud a(CloudDir("-a")), b(CloudDir("-b"));
  std::string config = "agent_pools:\n"
                       "  - name: first\n    selectors: [dev]\n    auto_scaler:\n" + a.Backend() +
                       "      max_agents: 2\n" +
                       "  - name: second\n    selectors: [dev]\n    selector_priority: 1\n    auto_scaler:\n" +
                       b.Backend() + "      max_agents: 2\n      min_agents: 1\n";
  Server server(config);
  ASSERT_TRUE(WaitFor([&] { return server.Workers("second", {"idle"}) == 1; }));
  std::string id = Id(server.Vbatch({"-P", "dev", "true"}));
  EXPECT_EQ(server.WaitTask(id)["worker"], b.Started()[0]);
  EXPECT_TRUE(a.Started().empty());  // nothing was created in the preferred pool
}

TEST(Selectors, KindsDecideWhichPoolsATaskMayUse) {
  std::string config = "agent_pools:\n"
                       "  - name: shell\n    selectors: [cpu]\n    kinds: [interactive]\n"
                       "    auto_scaler:\n      backend: { local: {} }\n      max_agents: 2\n"
                       "  - name: queue\n    selectors: [cpu]\n    kinds: [batch]\n"
                       "    auto_scaler:\n      backend: { local: {} }\n      max_agents: 2\n";
  Server server(config);
  EXPECT_EQ(server.Vrun({"-P", "cpu", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME"}).out.rfind("shell-", 0), 0u);
  std::string id = Id(server.Vbatch({"-P", "cpu", "true"}));
  EXPECT_EQ(server.WaitTask(id)["worker"].get<std::string>().rfind("queue-", 0), 0u);
  ProcResult r = server.Vrun({"-P", "queue", "true"});
  EXPECT_EQ(r.exit_code, 255);
  EXPECT_NE(r.err.find("pool queue does not accept interactive tasks"), std::string::npos) << r.err;
}

TEST(BatchMode, GangWorkersAreMadeTogetherUsedOnceAndDeleted) {
  Cloud cloud(CloudDir());
  std::string config = "agent_pools:\n  - name: cloud\n    default: true\n    auto_scaler:\n" + cloud.Backend() +
                       "      max_agents: 6\n      mode: MODE_BATCH\n      sync_loop_interval: \"1s\"\n";
  Server server(config);
  std::string ledger = server.dir() + "/ledger";
  std::string g = Id(server.Vbatch({"-N", "3", "--gang", "sh", "-c", BarrierShard(ledger, "G")}));
  EXPECT_EQ(server.WaitTask(g, 120s)["state"], "SUCCESS");
  // One batch call made all three, tagged with the task's batch; each ran exactly one shard.
  ASSERT_EQ(cloud.Count("batch"), 1);
  std::set<std::string> used;
  for (int i = 0; i < 3; ++i) used.insert(server.Task(g + "/" + std::to_string(i))["worker"]);
  std::vector<std::string> made = cloud.Started();
  EXPECT_EQ(used, std::set<std::string>(made.begin(), made.end()));
  // Not reused: deleted after their shard.
  ASSERT_TRUE(WaitFor([&] { return cloud.Stopped().size() == 3; }));
  ASSERT_TRUE(WaitFor([&] { return server.Workers("cloud") == 0; }));
  // A second gang gets new workers from a new batch.
  std::string g2 = Id(server.Vbatch({"-N", "2", "--gang", "true"}));
  EXPECT_EQ(server.WaitTask(g2, 120s)["state"], "SUCCESS");
  EXPECT_EQ(cloud.Count("batch"), 2);
  EXPECT_EQ(cloud.Started().size(), 5u);
}

}  // namespace
}  // namespace tidepool::testing
