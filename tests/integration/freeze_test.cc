// A frozen server (SIGSTOP here; a stalled disk or a paused VM alike) must not blame the agents
// for its own silence: when it runs again it reads what is waiting before judging anyone silent
// (server/silence.h), so no worker is lost, none is replaced, and the pool never has more than
// max_agents workers; a vbatch sent while it was frozen waits for it on its open connection and
// gets its id, and the task runs once; so does a `tidepool batch` (cli/unanswered.h, fastclient
// lite_await / AwaitAnswer).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

TEST(Freeze, AFrozenServerBlamesNoAgentAndLosesNoRequest) {
  // Heartbeats every second: three silent intervals are 3 s, and the freeze below lasts at least
  // the 10 s after which the client says the server has not answered.
  Server server(OnePool("local", 4, {"min_agents: 4", "max_idle_agents: 4", "idle_decay: \"60s\""}),
                {"--heartbeat-interval", "1s"});
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 4; }, 120s)) << server.Pool("local").dump(2);

  // The backend's own record, sampled throughout: agent processes alive at once, and every one seen.
  std::atomic<bool> sampling{true};
  std::atomic<size_t> most_alive{0};
  std::mutex mu;
  std::set<pid_t> seen;
  std::thread sampler([&] {
    while (sampling) {
      std::vector<pid_t> pids = server.AgentPids();
      size_t n = pids.size();
      size_t m = most_alive.load();
      while (n > m && !most_alive.compare_exchange_weak(m, n)) {
      }
      {
        std::lock_guard lock(mu);
        seen.insert(pids.begin(), pids.end());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  auto count_events = [&](const std::string& kind) {
    int n = 0;
    nlohmann::json pool = server.Pool("local");
    for (const auto& e : pool["events"]) n += e.value("kind", "") == kind;
    return n;
  };
  const int scale_ups_before = count_events("scale_up");

  const std::string runs = server.dir() + "/runs";
  server.Signal(SIGSTOP);
  Background vbatch({BinDir() + "/vbatch", "sh", "-c", "echo run >> " + runs + "; echo frozen-out; echo second-line"},
                    server.ClientEnv(), server.dir());
  // vrun waits for its acceptance the same way.
  Background vrun = server.VrunBackground({"sh", "-c", "echo vrun >> " + runs + "; echo vrun-out"});
  // The full client (`tidepool batch`, gRPC) too.
  Background full({BinDir() + "/tidepool", "batch", "sh", "-c", "echo full >> " + runs + "; echo full-out"},
                  server.ClientEnv(), server.dir());
  // The clients say, once, that the server has not answered, and keep waiting on their connections.
  bool told = WaitFor([&] { return vbatch.Stderr().find("has not answered") != std::string::npos; }, 60s);
  EXPECT_TRUE(told) << vbatch.Stderr();
  EXPECT_TRUE(vbatch.Running()) << "vbatch gave up on a frozen server: " << vbatch.Stderr();
  told = WaitFor([&] { return full.Stderr().find("has not answered") != std::string::npos; }, 60s);
  EXPECT_TRUE(told) << full.Stderr();
  EXPECT_TRUE(full.Running()) << "tidepool vbatch gave up on a frozen server: " << full.Stderr();
  told = WaitFor([&] { return vrun.Stderr().find("has not answered") != std::string::npos; }, 60s);
  EXPECT_TRUE(told) << vrun.Stderr();
  EXPECT_TRUE(vrun.Running()) << "vrun gave up on a frozen server: " << vrun.Stderr();
  server.Signal(SIGCONT);

  ProcResult vr = vrun.Wait(120s);
  EXPECT_EQ(vr.exit_code, 0) << vr.err;
  EXPECT_EQ(vr.out, "vrun-out\n");

  ProcResult fr = full.Wait(120s);
  ASSERT_EQ(fr.exit_code, 0) << fr.err;
  ASSERT_EQ(Lines(fr.out).size(), 1u) << fr.out;
  EXPECT_EQ(server.WaitTask(Lines(fr.out)[0])["state"], "SUCCESS");
  EXPECT_EQ(server.Tidepool({"task", "logs", Lines(fr.out)[0]}).out, "full-out\n");

  ProcResult r = vbatch.Wait(120s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(Lines(r.out).size(), 1u) << r.out;
  const std::string id = Lines(r.out)[0];
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump(2);
  EXPECT_EQ(server.Tidepool({"task", "logs", id}).out, "frozen-out\nsecond-line\n");

  // A task submitted after the resume runs too; by then a sweep that found the agents "silent"
  // would long have cut them (each sweep comes every second).
  ProcResult after = server.Vbatch({"sh", "-c", "echo after"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(server.WaitTask(Lines(after.out).at(0))["state"], "SUCCESS");
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"idle"}) == 4; }, 60s)) << server.Pool("local").dump(2);
  sampling = false;
  sampler.join();

  std::vector<std::string> ran = Lines(ReadAll(runs));
  std::sort(ran.begin(), ran.end());
  EXPECT_EQ(ran, (std::vector<std::string>{"full", "run", "vrun"})) << "a task ran more than once, or not at all";
  nlohmann::json pool = server.Pool("local");
  EXPECT_EQ(count_events("worker_lost"), 0) << pool.dump(2);
  EXPECT_EQ(count_events("scale_up"), scale_ups_before) << "a worker was replaced: " << pool.dump(2);
  EXPECT_EQ(server.Workers("local", {"lost", "requested", "starting", "deleting", "unknown"}), 0) << pool.dump(2);
  EXPECT_LE(most_alive.load(), 4u);
  std::lock_guard lock(mu);
  EXPECT_EQ(seen.size(), 4u) << "agent processes were started beyond the first four";
}

}  // namespace
}  // namespace tidepool::testing
