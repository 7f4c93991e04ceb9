// Cold starts on the backends that reach machines people already have (issue 18, item 5), on
// the real things the tests use: SSH hosts in network namespaces (tests/integration/ssh_hosts.h)
// and a Slurm cluster on this machine (tests/integration/slurm_cluster.h). Prints figures;
// asserts none (a run that cannot measure fails). docs/benchmarks.md has the figures and commands.
//
//   BackendBench.ColdVrunOnSsh          `vrun true` on an empty ssh pool whose host already has the
//                                       agent installed: create (one ssh round trip), agent start,
//                                       connect, run
//   BackendBench.ColdVrunOnSlurm        `vrun true` on an empty slurm pool (nodes up), beside
//                                       `srun -N1 -n1 true` and `sbatch` on the same nodes
//   BackendBench.ColdOnPoweredDownNodes `vrun true` on a slurm pool of powered-down cloud nodes,
//                                       beside `srun -p cloud` on them (both pay the boot)
//   BackendBench.HostDeathToWorkerLost  an ssh host dies (sshd, agent, network gone): until its
//                                       worker is `lost`
//   BackendBench.WorkspaceP12           P12: what a workspace of 10,000 files, 50 MB adds to a warm
//                                       `vrun true` on an ssh host, beside `rsync -a` of the tree
//                                       over the same link (first run, unchanged, one file changed)
//
// RUNS (default 10; 3 for the cloud case) sets the samples. Run as root:
//   build/bench/backend_bench [--gtest_filter=BackendBench.ColdVrunOnSlurm]
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "../tests/integration/harness.h"
#include "../tests/integration/netns.h"
#include "../tests/integration/slurm_cluster.h"
#include "../tests/integration/ssh_hosts.h"

namespace tidepool::testing {
namespace {

using Ms = std::chrono::duration<double, std::milli>;

int Runs(int fallback) {
  const char* r = std::getenv("RUNS");
  return r && std::atoi(r) > 0 ? std::atoi(r) : fallback;
}

void Report(const std::string& what, std::vector<double> ms) {
  ASSERT_FALSE(ms.empty()) << what << ": no sample";
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double v : ms) sum += v;
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * (ms.size() - 1) + 0.5))]; };
  std::printf("%-58s n=%zu min=%.0f median=%.0f p90=%.0f max=%.0f mean=%.0f ms\n", what.c_str(), ms.size(), ms.front(),
              at(0.5), at(0.9), ms.back(), sum / ms.size());
  std::fflush(stdout);
}

// Times `fn` (which must succeed) once.
template <typename F>
double Time(F fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return Ms(std::chrono::steady_clock::now() - t0).count();
}

// A pool `hosts` of host 0, with `policy` lines.
std::string SshPool(TestNet& net, const SshHosts& hosts, const std::string& policy) {
  return "agent_pools:\n  - name: hosts\n    default: true\n    auto_scaler:\n      backend:\n        ssh:\n"
         "          hosts: [\"root@" + net.ip(0) + "\"]\n          identity_file: " + hosts.client_key() +
         "\n          known_hosts: " + hosts.known_hosts() + "\n          agent_path: /opt/tidepool/bin/tidepool-agent\n" +
         policy;
}

const char* kPoolPolicy = "      max_agents: 1\n      max_idle_agents: 0\n      sync_loop_interval: \"1s\"\n";

TEST(BackendBench, ColdVrunOnSsh) {
  auto net = std::make_unique<TestNet>(1);
  if (!net->error().empty()) GTEST_SKIP() << net->error();
  SshHosts hosts(*net);
  if (!hosts.error().empty()) GTEST_SKIP() << hosts.error();
  Server server(SshPool(*net, hosts, kPoolPolicy), {}, net->server_ip() + ":0");
  auto idle = [&] {
    return WaitFor([&] {
      return server.Workers("hosts") == 0 && hosts.Run(0, "pgrep -f '[t]idepool-agent' || echo none").out == "none\n";
    });
  };
  ASSERT_EQ(RunProcess({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/").exit_code, 0);  // installs the agent
  std::vector<double> ms;
  for (int i = 0; i < Runs(10); ++i) {
    ASSERT_TRUE(idle());
    ms.push_back(Time([&] { ASSERT_EQ(RunProcess({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/").exit_code, 0); }));
  }
  Report("ssh pool, cold `vrun true` (agent installed)", ms);
}

void SlurmColdVrun(const SlurmCluster& cluster, const std::string& partition, const std::string& what, int runs) {
  std::string prefix = UniqueSlurmPrefix("tpb");
  Server server("agent_pools:\n  - name: sl\n    default: true\n    auto_scaler:\n      backend:\n        slurm:\n"
                "          partition: " + partition + "\n          job_name_prefix: " + prefix + "\n" + kPoolPolicy,
                {}, "", cluster.Env());
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    ASSERT_TRUE(WaitFor([&] { return server.Workers("sl") == 0 && cluster.Jobs(prefix).empty(); }, 120s));
    if (partition == "cloud") {  // every cloud node powered down again (idle~): a cold boot each time
      ASSERT_TRUE(WaitFor([&] {
        std::string s = cluster.Sh("sinfo -h -p cloud -o %T").out;
        return !s.empty() && s.find("idle~") != std::string::npos && s.find("idle%") == std::string::npos &&
               Lines(s).size() == 1;
      }, 120s)) << cluster.Sh("sinfo -p cloud").out;
    }
    ms.push_back(Time([&] {
      ProcResult r = RunProcess({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/", "", 300s);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }));
  }
  Report(what, ms);
  cluster.CancelAll(prefix);
}

void SrunCold(const SlurmCluster& cluster, const std::string& partition, const std::string& what, int runs) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    if (partition == "cloud") {
      ASSERT_TRUE(WaitFor([&] {
        std::string s = cluster.Sh("sinfo -h -p cloud -o %T").out;
        return s.find("idle~") != std::string::npos && Lines(s).size() == 1;
      }, 120s));
    }
    ms.push_back(Time([&] {
      ProcResult r = cluster.Sh("srun -p " + partition + " -N1 -n1 true");
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }));
  }
  Report(what, ms);
}

TEST(BackendBench, ColdVrunOnSlurm) {
  SlurmCluster cluster;
  if (!cluster.error().empty()) GTEST_SKIP() << cluster.error();
  int runs = Runs(10);
  SlurmColdVrun(cluster, "main", "slurm pool (nodes up), cold `vrun true`", runs);
  SrunCold(cluster, "main", "srun -N1 -n1 true (same nodes)", runs);
  // sbatch from submit until its script runs (`sbatch --wait` polls on a 2 s period of its own, so
  // the script writes the time it started instead).
  std::vector<double> ms;
  const std::string mark = "/tmp/tidepool-bench-sbatch-" + std::to_string(::getpid());
  for (int i = 0; i < runs; ++i) {
    std::remove(mark.c_str());
    ProcResult r = cluster.Sh("date +%s.%N; sbatch -o /dev/null -p main --wrap 'date +%s.%N > " + mark + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(WaitFor([&] { return !ReadAll(mark).empty(); }));
    ms.push_back((std::stod(ReadAll(mark)) - std::stod(Lines(r.out)[0])) * 1000);
  }
  std::remove(mark.c_str());
  Report("sbatch, submit -> its script running (same nodes)", ms);
}

TEST(BackendBench, ColdOnPoweredDownNodes) {
  SlurmSettings s;
  s.base = "/tmp/tidepool-slurm-bench";
  s.ctld_port = 18817;
  s.node_port_base = 18900;
  s.cloud_port_base = 18950;
  s.cloud_nodes = 2;
  s.boot_delay = 2;
  SlurmCluster cluster(true, s);
  if (!cluster.error().empty()) GTEST_SKIP() << cluster.error();
  int runs = Runs(3);
  SrunCold(cluster, "cloud", "srun -p cloud -N1 true, powered-down node (2 s boot)", runs);
  SlurmColdVrun(cluster, "cloud", "slurm pool on powered-down nodes (2 s boot), cold `vrun true`", runs);
}

TEST(BackendBench, HostDeathToWorkerLost) {
  auto net = std::make_unique<TestNet>(1);
  if (!net->error().empty()) GTEST_SKIP() << net->error();
  SshHosts hosts(*net);
  if (!hosts.error().empty()) GTEST_SKIP() << hosts.error();
  Server server(SshPool(*net, hosts, "      min_agents: 1\n      max_agents: 1\n      sync_loop_interval: \"1s\"\n"), {},
                net->server_ip() + ":0");
  // Killed: its processes die and its kernel closes their connections (FIN/RST reach the server).
  std::vector<double> ms;
  for (int i = 0; i < Runs(5); ++i) {
    ASSERT_TRUE(WaitFor([&] { return server.Workers("hosts", {"idle"}) == 1; }, 120s)) << server.ServerLog();
    auto t0 = std::chrono::steady_clock::now();
    hosts.Kill(0);
    ASSERT_TRUE(WaitFor([&] { return server.Workers("hosts", {"lost"}) == 1; }, 300s)) << server.ServerLog();
    ms.push_back(Ms(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(hosts.Start(0)) << hosts.error();
  }
  Report("ssh host's processes killed -> its worker lost", ms);
  // Cut off: its cable pulled (as a power loss or a dead switch looks): nothing more is heard
  // from it; the server's heartbeat rule (three missed intervals, 5 s each) finds it.
  ms.clear();
  for (int i = 0; i < Runs(5); ++i) {
    ASSERT_TRUE(WaitFor([&] { return server.Workers("hosts", {"idle"}) == 1; }, 120s)) << server.ServerLog();
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(net->SetLink(0, false));
    ASSERT_TRUE(WaitFor([&] { return server.Workers("hosts", {"lost"}) == 1; }, 300s)) << server.ServerLog();
    ms.push_back(Ms(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(net->SetLink(0, true));
  }
  Report("ssh host's link cut -> its worker lost", ms);
}

// A tree of 10,000 files in 100 folders, 50 MB, content of its own (`seed`): what P12 moves.
void MakeP12Tree(const std::string& dir, unsigned seed) {
  std::string content(5243, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int d = 0; d < 100; ++d) {
    std::string sub = dir + "/d" + std::to_string(d);
    ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0) << sub;
    for (int f = 0; f < 100; ++f) {
      for (auto& c : content) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c = static_cast<char>(x);
      }
      WriteAll(sub + "/f" + std::to_string(f), content);
    }
  }
}

TEST(BackendBench, WorkspaceP12) {
  auto net = std::make_unique<TestNet>(1);
  if (!net->error().empty()) GTEST_SKIP() << net->error();
  SshHosts hosts(*net);
  if (!hosts.error().empty()) GTEST_SKIP() << hosts.error();
  Server server(SshPool(*net, hosts, "      max_agents: 1\n      max_idle_agents: 1\n      idle_decay: \"1h\"\n"), {},
                net->server_ip() + ":0");
  auto env = server.ClientEnv();
  env["HOME"] = server.dir();  // the client's stat cache
  if (const char* t = std::getenv("TIDEPOOL_CLIENT_TRACE")) env["TIDEPOOL_CLIENT_TRACE"] = t;
  auto no_daemon = env;
  no_daemon["TIDEPOOL_WORKSPACE_DAEMON"] = "0";  // the full client's own walk of the tree (cli/workspace_daemon.h)
  auto vrun_true = [&](const std::string& cwd, bool daemon = true) {
    ProcResult r = RunProcess({BinDir() + "/vrun", "true"}, daemon ? env : no_daemon, cwd);
    ASSERT_EQ(r.exit_code, 0) << r.err << server.ServerLog();
    if (env.count("TIDEPOOL_CLIENT_TRACE")) std::fprintf(stderr, "%s", r.err.c_str());
  };
  vrun_true("/");  // the worker is up and warm
  std::vector<double> bare, full_client, rsync_first, rsync_again, first, unchanged, one_changed, unchanged_full,
      one_changed_full;
  const std::string ssh = "ssh -i " + hosts.client_key() + " -o UserKnownHostsFile=" + hosts.known_hosts() +
                          " -o BatchMode=yes";
  for (int i = 0; i < Runs(3); ++i) {
    char tmpl[] = "/tmp/tidepool-p12-XXXXXX";
    std::string tree = ::mkdtemp(tmpl);
    MakeP12Tree(tree, static_cast<unsigned>(::getpid() * 100 + i));  // new content: a true first run
    bare.push_back(Time([&] { vrun_true("/"); }));
    full_client.push_back(Time([&] {
      ProcResult r = RunProcess({BinDir() + "/tidepool", "run", "true"}, env, "/");
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }));
    // rsync of the same tree over the same link, to a place the host does not have yet.
    std::string target = "root@" + net->ip(0) + ":/tmp/rsync-" + std::to_string(i) + "/";
    auto rsync = [&] {
      ProcResult r = RunProcess({"rsync", "-a", "-e", ssh, tree + "/", target}, {{"PATH", "/usr/bin:/bin"}}, "/");
      ASSERT_EQ(r.exit_code, 0) << r.err;
    };
    rsync_first.push_back(Time(rsync));
    rsync_again.push_back(Time(rsync));
    first.push_back(Time([&] { vrun_true(tree); }));
    unchanged.push_back(Time([&] { vrun_true(tree); }));
    WriteAll(tree + "/d7/f7", "one file changed " + std::to_string(i));
    one_changed.push_back(Time([&] { vrun_true(tree); }));
    unchanged_full.push_back(Time([&] { vrun_true(tree, false); }));
    WriteAll(tree + "/d8/f8", "one file changed " + std::to_string(i));
    one_changed_full.push_back(Time([&] { vrun_true(tree, false); }));
    std::filesystem::remove_all(tree);
  }
  if (env.count("TIDEPOOL_CLIENT_TRACE")) {
    ProcResult r = RunProcess({"sh", "-c", ssh + " root@" + net->ip(0) + " 'tail -n 60 .tidepool/run/*/*.log'"},
                              {{"PATH", "/usr/bin:/bin"}}, "/");
    std::fprintf(stderr, "the agent's log:\n%s\n", r.out.c_str());
    std::fprintf(stderr, "the workspace daemon's log:\n%s\n",
                 ReadAll(server.dir() + "/.cache/tidepool/workspace-daemon.log").c_str());
    std::fprintf(stderr, "the server's manifests made from deltas:\n");
    for (const std::string& line : Lines(server.ServerLog())) {
      if (line.find("from a delta with") != std::string::npos) std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
  Report("warm `vrun true` from / (no workspace)", bare);
  Report("warm `tidepool run true` from / (the full client)", full_client);
  Report("rsync -a of the tree (first)", rsync_first);
  Report("rsync -a of the tree (nothing changed)", rsync_again);
  Report("warm `vrun true` in the tree: first", first);
  Report("warm `vrun true` in the tree: unchanged", unchanged);
  Report("warm `vrun true` in the tree: one file changed", one_changed);
  Report("... without the workspace daemon: unchanged", unchanged_full);
  Report("... without the workspace daemon: one file changed", one_changed_full);
}

}  // namespace
}  // namespace tidepool::testing
