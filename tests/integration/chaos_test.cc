// Chaos (issue: survive anything): thousands of short tasks through a pool whose agents are
// SIGKILLed at random, while the server is SIGKILLed and restarted twice. Repeatable from its
// seed (TIDEPOOL_CHAOS_SEED; TIDEPOOL_CHAOS_TASKS sets the size). At the end:
//   - every acknowledged task is final (none lost);
//   - none ran twice (each appends its id to a file);
//   - every worker process the backend started is a connected worker or gone (no orphan).
// The figures of a run go to stdout; docs/reliability.md records them.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "harness.h"

namespace tidepool::testing {
namespace {

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(Chaos, KilledAgentsAndTwoServerCrashesLoseNothingAndRunNothingTwice) {
  const uint64_t seed = EnvOr("TIDEPOOL_CHAOS_SEED", std::random_device{}());
  const int total = static_cast<int>(EnvOr("TIDEPOOL_CHAOS_TASKS", 2000));
  SCOPED_TRACE("TIDEPOOL_CHAOS_SEED=" + std::to_string(seed));
  std::printf("[chaos] seed %llu, %d tasks\n", static_cast<unsigned long long>(seed), total);
  Server server(OnePool("local", 4, {"default_slots_per_agent: 4", "max_idle_agents: 8", "idle_decay: \"1s\"",
                                     "sync_loop_interval: \"1s\""}),
                {"--worker-lost-grace", "1s"});
  const std::string runs = server.dir() + "/runs";
  const auto t0 = std::chrono::steady_clock::now();

  // Submitters: four at a time, each `vbatch` a real process; an id printed = acknowledged.
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::atomic<int> next{0}, refused{0}, acked{0};
  std::atomic<bool> submitting{true};
  auto submitter = [&] {
    while (true) {
      int i = next++;
      if (i >= total) break;
      ProcResult r = RunProcess({BinDir() + "/vbatch", "sh", "-c", "echo $TIDEPOOL_TASK_ID >> " + runs},
                                server.ClientEnv(), server.dir(), "", 60s);
      if (r.exit_code == 0 && !Lines(r.out).empty()) {
        std::lock_guard lock(mu);
        acknowledged.push_back(Lines(r.out)[0]);
        acked++;
      } else {
        // The server was down: not acknowledged, so nothing is owed. A refusal takes milliseconds,
        // so pause as a user would before trying again, or one outage would use up the whole run.
        refused++;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  };
  // Agents die at random while tasks flow.
  std::atomic<int> agent_kills{0};
  std::thread killer([&] {
    std::mt19937_64 rng(seed);
    while (submitting) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 300));
      auto pids = server.AgentPids();
      if (!pids.empty() && ::kill(pids[rng() % pids.size()], SIGKILL) == 0) agent_kills++;
    }
  });
  std::vector<std::thread> submitters;
  for (int k = 0; k < 4; ++k) submitters.emplace_back(submitter);
  // Two server crashes, each followed by a restart, after a number of acknowledged tasks chosen by
  // the seed (counted in acknowledgements, not attempts, so that refusals during the first outage
  // cannot bring the second one forward onto the restart).
  std::mt19937_64 rng(seed + 7);
  for (int crash = 0; crash < 2; ++crash) {
    int at = total * (crash + 1) / 4 + static_cast<int>(rng() % (total / 10 + 1));
    WaitFor([&] { return acked.load() >= at || next.load() >= total; }, 600s);
    server.Kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 800));
    server.Start();
  }
  for (auto& s : submitters) s.join();
  submitting = false;
  killer.join();

  // Every acknowledged task ends.
  std::map<std::string, std::string> outcome;
  std::map<std::string, int> reasons;
  for (const auto& id : acknowledged) {
    nlohmann::json t = server.WaitTask(id, 300s);
    outcome[id] = t.value("state", "");
    if (outcome[id] != "SUCCESS") reasons[outcome[id] + ": " + t["reason"].dump()]++;
  }
  std::map<std::string, int> ran;
  for (const auto& line : Lines(ReadAll(runs))) ran[line]++;
  int succeeded = 0, twice = 0;
  for (const auto& [id, state] : outcome) {
    ASSERT_TRUE(state == "SUCCESS" || state == "FAILURE" || state == "CANCELLED") << id << " is " << state;
    if (state == "SUCCESS") {
      ++succeeded;
      EXPECT_EQ(ran[id], 1) << id;
    } else {
      EXPECT_NE(reasons.size(), 0u);
    }
  }
  for (const auto& [id, n] : ran) twice += n > 1;
  EXPECT_EQ(twice, 0);
  for (const auto& [reason, n] : reasons) {
    EXPECT_NE(reason.find("worker lost"), std::string::npos) << reason << " (" << n << " tasks)";
  }
  // No orphans: the agent processes alive are exactly the workers connected.
  bool settled = WaitFor([&] {
    std::set<pid_t> alive;
    for (pid_t p : server.AgentPids()) alive.insert(p);
    int connected = server.Workers("local", {"idle", "busy"});
    return static_cast<int>(alive.size()) == connected && server.Workers("local", {"starting", "requested", "lost", "unknown", "deleting"}) == 0;
  }, 120s);
  EXPECT_TRUE(settled) << server.Pool("local").dump(2);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[chaos] %zu acknowledged (%d refused while the server was down), %d succeeded, %zu failed "
              "(worker lost), %d agents killed, 2 server crashes, %.0f s; ran twice: %d\n",
              acknowledged.size(), refused.load(), succeeded, acknowledged.size() - succeeded, agent_kills.load(),
              secs, twice);
  for (const auto& [reason, n] : reasons) std::printf("[chaos]   %d x %s\n", n, reason.c_str());
  EXPECT_GT(agent_kills.load(), 0);
  EXPECT_GT(acked.load(), total / 2);
  EXPECT_GT(succeeded, static_cast<int>(acknowledged.size()) / 2);
}

}  // namespace
}  // namespace tidepool::testing
