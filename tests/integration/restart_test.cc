// Nothing acknowledged is lost across server restarts (tasks.md).
#include <signal.h>

#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "harness.h"

namespace tidepool::testing {
namespace {

TEST(Restart, FinishedTaskLogsSurviveARestart) {
  Server server;
  ProcResult r = server.Vbatch({"sh", "-c", "echo kept-out; echo kept-err >&2"});
  std::string id = Lines(r.out)[0];
  server.WaitTask(id);
  server.Stop(SIGTERM);
  server.Start();
  EXPECT_EQ(server.Task(id)["state"], "SUCCESS");
  ProcResult logs = server.Tidepool({"task", "logs", id});
  EXPECT_EQ(logs.out, "kept-out\n");
  EXPECT_EQ(logs.err, "kept-err\n");
}

// The server knows which ids are taken without reading the store for each new task (a filter of
// the stored ids, built at the start): a finished task's name, after a restart, is still taken.
TEST(Restart, AFinishedTasksIdIsNotGivenAgainAfterARestart) {
  Server server;
  ProcResult r = server.Vbatch({"--name", "job", "sh", "-c", "echo first"});
  ASSERT_EQ(Lines(r.out), std::vector<std::string>{"job"}) << r.err;
  server.WaitTask("job");
  server.Stop(SIGTERM);
  server.Start();
  r = server.Vbatch({"--name", "job", "sh", "-c", "echo second"});
  ASSERT_EQ(Lines(r.out), std::vector<std::string>{"job_2"}) << r.err;
  server.WaitTask("job_2");
  EXPECT_EQ(server.Tidepool({"task", "logs", "job"}).out, "first\n");
  EXPECT_EQ(server.Tidepool({"task", "logs", "job_2"}).out, "second\n");
}

TEST(Restart, SigkilledServerLosesNothingWhileBatchTasksRun) {
  Server server;
  std::string runs = server.dir() + "/runs";
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    // Each task records that it ran, then prints numbered lines for a while.
    ProcResult r = server.Vbatch({"sh", "-c",
                                  "echo $TIDEPOOL_TASK_ID >> " + runs +
                                      "; i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); sleep 0.05; done"});
    ids.push_back(Lines(r.out)[0]);
  }
  // Queued but not yet runnable tasks are acknowledged too: they must survive as well.
  ASSERT_TRUE(WaitFor([&] {
    std::string log = ReadAll(runs);
    return Lines(log).size() == 3;
  }));
  server.Kill();
  server.Start();
  for (const auto& id : ids) {
    nlohmann::json t = server.WaitTask(id);
    EXPECT_EQ(t["state"], "SUCCESS") << t.dump();
    auto lines = Lines(server.Tidepool({"task", "logs", id}).out);
    ASSERT_EQ(lines.size(), 40u) << id;
    for (int i = 0; i < 40; ++i) EXPECT_EQ(lines[i], "line" + std::to_string(i));
  }
  // Each task ran exactly once.
  auto ran = Lines(ReadAll(runs));
  EXPECT_EQ(ran.size(), 3u);
  EXPECT_EQ(std::set<std::string>(ran.begin(), ran.end()), std::set<std::string>(ids.begin(), ids.end()));
}

TEST(Restart, TreesDependenciesAndGangsSurviveASigkill) {
  Server server(OnePool("local", 8, {"max_idle_agents: 8", "idle_decay: \"60s\""}));
  std::string gate = server.dir() + "/gate";
  std::string runs = server.dir() + "/runs";
  std::string wait = "while [ ! -e " + gate + " ]; do sleep 0.05; done; echo $TIDEPOOL_TASK_ID >> " + runs;
  std::string shards = Lines(server.Vbatch({"--name", "shards", "-N", "2", "sh", "-c", wait}).out)[0];
  std::string gang = Lines(server.Vbatch({"--name", "gang", "-N", "2", "--gang", "sh", "-c", wait}).out)[0];
  std::string after = Lines(server.Vbatch({"--name", "after", "--after-success", "shards", "sh", "-c", wait}).out)[0];
  std::string parent = Lines(server.Vbatch({"--name", "parent", "sh", "-c", "vbatch --name child sh -c '" + wait + "'"}).out)[0];
  ASSERT_TRUE(WaitFor([&] { return server.Task("parent")["state"] == "RUNNING_SUBTASKS" &&
                                   server.Task("gang/1")["state"] == "RUNNING"; }));
  EXPECT_EQ(server.Task("after")["state"], "PENDING");
  server.Kill();
  server.Start();
  WriteAll(gate, "");
  for (const std::string id : {"shards", "gang", "after", "parent"}) {
    EXPECT_EQ(server.WaitTask(id, 120s)["state"], "SUCCESS") << id;
  }
  // Everything ran exactly once, the dependant after its dependency.
  auto ran = Lines(ReadAll(runs));
  std::multiset<std::string> counted(ran.begin(), ran.end());
  for (const std::string id : {"shards/0", "shards/1", "gang/0", "gang/1", "after", "parent/child"}) {
    EXPECT_EQ(counted.count(id), 1u) << id;
  }
  EXPECT_GT(std::find(ran.begin(), ran.end(), "after") - ran.begin(),
            std::find(ran.begin(), ran.end(), "shards/1") - ran.begin());
}

TEST(Restart, QueuedTasksSurviveARestart) {
  Server server(OnePool("none", 0));
  ProcResult r = server.Vbatch({"echo", "later"});
  std::string id = Lines(r.out)[0];
  server.Kill();
  server.Start();
  EXPECT_EQ(server.Task(id)["state"], "QUEUEING");
}

// A follower of a task restored in the queue ends when the task does without ever running
// (cancelled there): its log is complete, not waited on forever.
TEST(Restart, FollowingARestoredQueuedTaskEndsWhenItIsCancelled) {
  Server server(OnePool("none", 0));
  std::string id = Lines(server.Vbatch({"echo", "never"}).out)[0];
  server.Kill();
  server.Start();
  Background follow({BinDir() + "/tidepool", "task", "logs", "-f", id}, server.ClientEnv(), server.dir());
  std::this_thread::sleep_for(300ms);  // following before the cancel
  ASSERT_EQ(server.Tidepool({"task", "cancel", id}).exit_code, 0);
  ProcResult f = follow.Wait(30s);
  EXPECT_FALSE(f.timed_out) << "task logs -f still waiting on a cancelled task";
  EXPECT_EQ(f.out, "");
}

// Tasks that were queued or waiting on a dependency when the server stopped start only after it
// is back, on agents that reattached: their output is stored like any other task's (issue 16:
// these used to end SUCCESS with empty logs). Both a crash and a graceful stop.
TEST(Restart, TasksThatStartAfterARestartStoreTheirOutput) {
  for (int sig : {SIGKILL, SIGTERM}) {
    SCOPED_TRACE(sig == SIGKILL ? "SIGKILL" : "SIGTERM");
    Server server(OnePool("local", 1, {"max_idle_agents: 1", "idle_decay: \"1h\""}));
    std::string gate = server.dir() + "/gate";
    std::string first = Lines(server.Vbatch({"sh", "-c", "while [ ! -e " + gate + " ]; do sleep 0.05; done; echo first"}).out)[0];
    ASSERT_TRUE(WaitFor([&] { return server.Task(first)["state"] == "RUNNING"; }));
    std::vector<std::string> queued;
    for (int i = 0; i < 3; ++i) {
      std::string n = std::to_string(i);
      queued.push_back(Lines(server.Vbatch({"sh", "-c", "echo out" + n + "; echo err" + n + " >&2"}).out)[0]);
    }
    std::string pending = Lines(server.Vbatch({"--after-success", queued[2], "sh", "-c", "echo dependant; echo dep-err >&2"}).out)[0];
    EXPECT_EQ(server.Task(queued[0])["state"], "QUEUEING");
    EXPECT_EQ(server.Task(pending)["state"], "PENDING");
    server.Stop(sig);
    server.Start();
    WriteAll(gate, "");
    EXPECT_EQ(server.WaitTask(first)["state"], "SUCCESS");
    EXPECT_EQ(server.Tidepool({"task", "logs", first}).out, "first\n");
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(server.WaitTask(queued[i])["state"], "SUCCESS");
      ProcResult logs = server.Tidepool({"task", "logs", queued[i]});
      EXPECT_EQ(logs.out, "out" + std::to_string(i) + "\n") << queued[i];
      EXPECT_EQ(logs.err, "err" + std::to_string(i) + "\n") << queued[i];
    }
    EXPECT_EQ(server.WaitTask(pending)["state"], "SUCCESS");
    ProcResult logs = server.Tidepool({"task", "logs", pending});
    EXPECT_EQ(logs.out, "dependant\n");
    EXPECT_EQ(logs.err, "dep-err\n");
  }
}

// Log files outlive their store when it is reset or restored from an older backup: a new task
// that gets an old id starts with empty logs, and the old bytes are set aside, not deleted.
TEST(Restart, ANewTaskNeverShowsTheLogsOfAnIdTheStoreForgot) {
  Server server;
  ProcResult r = server.Vbatch({"--name", "job", "sh", "-c", "echo old-out; echo old-err >&2"});
  ASSERT_EQ(Lines(r.out), std::vector<std::string>{"job"}) << r.err;
  server.WaitTask("job");
  server.Stop(SIGTERM);
  for (const char* f : {"/tidepool.db", "/tidepool.db-wal", "/tidepool.db-shm"}) ::unlink((server.data_dir() + f).c_str());
  server.Start();
  r = server.Vbatch({"--name", "job", "sh", "-c", "echo new-out"});
  ASSERT_EQ(Lines(r.out), std::vector<std::string>{"job"}) << r.err;  // the store no longer has it
  EXPECT_EQ(server.WaitTask("job")["state"], "SUCCESS");
  ProcResult logs = server.Tidepool({"task", "logs", "job"});
  EXPECT_EQ(logs.out, "new-out\n");
  EXPECT_EQ(logs.err, "");
  // The old output is kept aside.
  ProcResult aside = RunProcess({"sh", "-c", "cat " + server.data_dir() + "/logs/orphaned/job.*.stdout " +
                                                 server.data_dir() + "/logs/orphaned/job.*.stderr"}, {}, server.dir());
  EXPECT_EQ(aside.out, "old-out\nold-err\n");
  EXPECT_NE(server.ServerLog().find("moved to"), std::string::npos);
}

TEST(Restart, GracefulStopLeavesAgentsAndTasksRunning) {
  Server server;
  std::string gate = server.dir() + "/gate";
  ProcResult r = server.Vbatch({"sh", "-c", "echo before; while [ ! -e " + gate + " ]; do sleep 0.05; done; echo after"});
  std::string id = Lines(r.out)[0];
  ASSERT_TRUE(WaitFor([&] { return server.Tidepool({"task", "logs", id}).out == "before\n"; }));
  std::vector<pid_t> agents = server.AgentPids();
  ASSERT_EQ(agents.size(), 1u);
  server.Stop(SIGTERM);
  EXPECT_EQ(server.AgentPids(), agents);  // the agent outlives the server
  WriteAll(gate, "");                      // the task finishes while the server is down
  server.Start();
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS");
  EXPECT_EQ(server.Tidepool({"task", "logs", id}).out, "before\nafter\n");
}

// Its worker died while the server was down: after the restart the backend's list says so at
// once, and a second look confirms it without waiting for the next sync interval (an hour
// here), so the first run after the restart gets a new worker instead of waiting for the old.
TEST(Restart, AWorkerThatDiedWhileTheServerWasDownIsReplacedAtOnce) {
  Server server(OnePool("local", 1, {"sync_loop_interval: \"1h\"", "max_idle_agents: 1", "idle_decay: \"1h\""}));
  ASSERT_EQ(server.Vrun({"true"}).exit_code, 0);
  std::vector<pid_t> agents = server.AgentPids();
  ASSERT_EQ(agents.size(), 1u);
  server.Stop(SIGTERM);
  ::kill(-agents[0], SIGKILL);
  ::kill(agents[0], SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return server.AgentPids().empty(); }));
  server.Start();
  ProcResult r = server.Vrun({"echo", "after-restart"});
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "after-restart\n") << r.err;
  std::vector<pid_t> now = server.AgentPids();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], agents[0]);
}

}  // namespace
}  // namespace tidepool::testing
