// The slurm backend against a real Slurm cluster (slurm_cluster.h: slurmctld, four slurmd and
// munge from Debian, on this machine): workers are Slurm jobs whose agents dial the server.
// Each test names its jobs with a prefix of its own and compares the pool with `squeue`.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include <httplib.h>

#include "harness.h"
#include "slurm_cluster.h"

namespace tidepool::testing {
namespace {

#define SLURM_OR_SKIP(cluster, ...)                        \
  SlurmCluster cluster{__VA_ARGS__};                       \
  if (!cluster.error().empty()) GTEST_SKIP() << cluster.error()

// Cancels the test's jobs however it ends.
struct Leftovers {
  const SlurmCluster& cluster;
  std::string prefix;
  ~Leftovers() { cluster.CancelAll(prefix); }
};

std::string SlurmPool(const std::string& prefix, const std::string& backend_extra = "",
                      const std::string& pool_extra = "", const std::string& name = "sl") {
  // The test cluster's nodes are this machine: they share the caller's files.
  return "agent_pools:\n  - name: " + name + "\n    default: true\n    workspace: {mode: shared}\n    auto_scaler:\n"
         "      backend:\n        slurm:\n          partition: main\n          job_name_prefix: " + prefix + "\n" +
         backend_extra + "      max_agents: 4\n      max_idle_agents: 4\n      idle_decay: \"60s\"\n"
         "      sync_loop_interval: \"1s\"\n      scale_up_error_retry_delay: \"1s\"\n" + pool_extra;
}

std::set<std::string> WorkerNames(Server& server, const std::string& pool, const std::string& state = "") {
  std::set<std::string> out;
  for (auto& w : server.Json({"worker", "list", "-P", pool})) {
    if (state.empty() || w["state"] == state) out.insert(w["name"].get<std::string>());
  }
  return out;
}

nlohmann::json WorkerJson(Server& server, const std::string& pool, const std::string& name) {
  for (auto& w : server.Json({"worker", "list", "-P", pool})) {
    if (w["name"] == name) return w;
  }
  return nullptr;
}

// "NAME RUNNING" lines of squeue, as the set of names in that state.
std::set<std::string> JobsIn(const SlurmCluster& cluster, const std::string& prefix, const std::string& state) {
  std::set<std::string> out;
  for (const std::string& l : cluster.Jobs(prefix)) {
    size_t sp = l.find(' ');
    if (l.substr(sp + 1) == state) out.insert(l.substr(0, sp));
  }
  return out;
}

// The worker task `id` runs on, once it runs; "" if it never does.
std::string RunningOn(Server& server, const std::string& id) {
  std::string worker;
  WaitFor([&] {
    nlohmann::json t = server.Task(id);
    if (t["state"] != "RUNNING" || !t["worker"].is_string()) return false;
    worker = t["worker"];
    return true;
  });
  return worker;
}

bool EventSaid(Server& server, const std::string& pool, const std::string& kind, const std::string& text = "") {
  nlohmann::json p = server.Pool(pool);  // held: a range over a part of a temporary would dangle
  for (auto& e : p["events"]) {
    if (e["kind"] == kind && e["message"].get<std::string>().find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(SlurmPool, ScalesUpFromZeroAndRunsVrunAndVbatchAsSlurmJobs) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tps")};
  std::map<std::string, std::string> env = cluster.Env();
  env["AWS_SECRET_ACCESS_KEY"] = "server-only-secret";  // the server's own: no job may see it
  Server server(SlurmPool(left.prefix), {}, "", env);
  EXPECT_EQ(server.Workers("sl"), 0);
  EXPECT_TRUE(cluster.Jobs(left.prefix).empty());
  // vrun: output, stderr and exit status, from a worker that is a Slurm job.
  ProcResult r = server.Vrun({"sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.err << server.ServerLog();
  EXPECT_EQ(r.out, "out\n");
  EXPECT_NE(r.err.find("err"), std::string::npos);
  // The pool's workers are exactly its running jobs, by name.
  std::set<std::string> workers = WorkerNames(server, "sl");
  ASSERT_FALSE(workers.empty());
  EXPECT_EQ(JobsIn(cluster, left.prefix, "RUNNING"), workers);
  // The token is in no command line: it travels in the job's environment, which holds what the
  // agent needs and nothing of the server's own.
  ProcResult ps = RunProcess({"ps", "-eo", "args"}, {}, "/");
  EXPECT_EQ(ps.out.find("tpw_"), std::string::npos);
  std::string job = *workers.begin();
  std::string pids = cluster.Sh("scontrol listpids $(squeue -h -n " + job + " -o %i) | awk 'NR > 1 { print $1 }'").out;
  std::string environ;
  for (const std::string& pid : Lines(pids)) environ += ReadAll("/proc/" + pid + "/environ");
  EXPECT_NE(environ.find("TIDEPOOL_WORKER_NAME=" + job), std::string::npos) << pids;
  EXPECT_NE(environ.find("TIDEPOOL_WORKER_TOKEN="), std::string::npos);
  EXPECT_EQ(environ.find("server-only-secret"), std::string::npos);
  // Shards queue on up to four jobs and all succeed.
  ProcResult b = server.Vbatch({"-N", "6", "sh", "-c", "echo shard $TIDEPOOL_SHARD_ID"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string id = Lines(b.out)[0];
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS") << server.ServerLog();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(server.Tidepool({"task", "logs", id + "/" + std::to_string(i)}).out, "shard " + std::to_string(i) + "\n");
  }
  // Once their agents are in, the pool's workers are its running jobs again (at most max_agents).
  EXPECT_TRUE(WaitFor([&] {
    workers = WorkerNames(server, "sl", "idle");
    return workers.size() <= 4 && JobsIn(cluster, left.prefix, "RUNNING") == workers &&
           server.Workers("sl") == static_cast<int>(workers.size());
  })) << server.Pool("sl").dump();
}

TEST(SlurmPool, AGangIsOneAllocationWithOneAgentPerNode) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tpg")};
  Server server(SlurmPool(left.prefix, "", "      mode: MODE_BATCH\n"), {}, "", cluster.Env());
  ProcResult b = server.Vbatch({"-N", "3", "--gang", "sh", "-c", "echo gang $TIDEPOOL_SHARD_ID; sleep 2"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string id = Lines(b.out)[0];
  // While it runs: one job of three nodes, whose three steps are the three workers, a node each.
  std::string steps;
  ASSERT_TRUE(WaitFor([&] {
    steps = cluster.Sh("squeue -h -s -o '%j %N' | grep '^" + left.prefix + "' | sort").out;
    return Lines(steps).size() == 3;
  })) << steps << server.ServerLog();
  std::vector<std::string> jobs = cluster.Jobs(left.prefix);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_NE(jobs[0].find("-x3 RUNNING"), std::string::npos) << jobs[0];
  std::set<std::string> nodes;
  for (const std::string& l : Lines(steps)) nodes.insert(l.substr(l.find(' ') + 1));
  EXPECT_EQ(nodes.size(), 3u) << steps;
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS") << server.ServerLog();
  std::set<std::string> used;
  for (int i = 0; i < 3; ++i) used.insert(server.Task(id + "/" + std::to_string(i))["worker"].get<std::string>());
  std::string job = jobs[0].substr(0, jobs[0].find(' '));
  EXPECT_EQ(used, (std::set<std::string>{job + "-0", job + "-1", job + "-2"}));
  // Used once: the workers go, and with the last of them the job.
  EXPECT_TRUE(WaitFor([&] { return cluster.Jobs(left.prefix).empty() && server.Workers("sl") == 0; }))
      << server.ServerLog();
}

TEST(SlurmPool, AJobCancelledFromOutsideLosesItsWorkerAndItsTaskRunsAgain) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tpx")};
  Server server(SlurmPool(left.prefix), {"--worker-lost-grace", "1s"}, "", cluster.Env());
  ProcResult b = server.Vbatch({"--retries", "1", "sh", "-c", "echo started; sleep 4; echo finished"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string id = Lines(b.out)[0];
  std::string first = RunningOn(server, id);
  ASSERT_FALSE(first.empty()) << server.ServerLog();
  ASSERT_EQ(cluster.Sh("scancel --name=" + first).exit_code, 0);
  nlohmann::json done = server.WaitTask(id);
  EXPECT_EQ(done["state"], "SUCCESS") << done.dump() << server.ServerLog();
  EXPECT_EQ(done["attempts"], 2);
  EXPECT_NE(done["worker"], first);
  EXPECT_NE(server.Tidepool({"task", "logs", id}).out.find("finished"), std::string::npos);
  // The cancelled job's worker is gone from the pool as from squeue.
  EXPECT_TRUE(WaitFor([&] { return !WorkerNames(server, "sl").count(first); })) << server.ServerLog();
  EXPECT_FALSE(JobsIn(cluster, left.prefix, "RUNNING").count(first));
}

TEST(SlurmPool, AJobNearItsWalltimeIsDrainedFirstAndNothingIsKilled) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tpw")};
  // One minute of walltime, drained 48 s before it: a worker takes tasks for its first 12 s.
  Server server(SlurmPool(left.prefix, "          time_limit: \"1\"\n          drain_before: \"48s\"\n"), {}, "",
                cluster.Env());
  ProcResult a = server.Vbatch({"sh", "-c", "sleep 20; echo A-done"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  std::string ida = Lines(a.out)[0];
  std::string first = RunningOn(server, ida);
  ASSERT_FALSE(first.empty()) << server.ServerLog();
  nlohmann::json w = WorkerJson(server, "sl", first);
  ASSERT_TRUE(w.is_object());
  EXPECT_TRUE(w["ends_at"].is_string()) << w.dump();  // the agent learnt its job's end
  // Its drain time comes while A runs: it takes nothing new, and A goes on.
  ASSERT_TRUE(WaitFor([&] {
    nlohmann::json x = WorkerJson(server, "sl", first);
    return x.is_object() && x["state"] == "draining";
  })) << server.ServerLog();
  EXPECT_EQ(server.Task(ida)["state"], "RUNNING");
  EXPECT_TRUE(EventSaid(server, "sl", "draining", "walltime"));
  ProcResult b = server.Vbatch({"sh", "-c", "echo B-done"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  nlohmann::json tb = server.WaitTask(Lines(b.out)[0]);
  EXPECT_EQ(tb["state"], "SUCCESS");
  EXPECT_NE(tb["worker"], first);  // a replacement took it
  nlohmann::json ta = server.WaitTask(ida);
  EXPECT_EQ(ta["state"], "SUCCESS") << ta.dump();
  EXPECT_EQ(ta["attempts"], 1);
  EXPECT_EQ(server.Tidepool({"task", "logs", ida}).out, "A-done\n");
  // Then the drained job is cancelled by the pool, before Slurm's walltime would have ended it.
  EXPECT_TRUE(WaitFor([&] { return !JobsIn(cluster, left.prefix, "RUNNING").count(first); })) << server.ServerLog();
  EXPECT_TRUE(EventSaid(server, "sl", "worker_gone", first));
}

TEST(SlurmPool, SqueueFailingChangesNothing) {
  SLURM_OR_SKIP(cluster, /*exclusive=*/true);
  Leftovers left{cluster, UniqueSlurmPrefix("tpq")};
  Server server(SlurmPool(left.prefix, "", "      min_agents: 1\n"), {}, "", cluster.Env());
  std::set<std::string> idle;
  ASSERT_TRUE(WaitFor([&] { return (idle = WorkerNames(server, "sl", "idle")).size() == 1; })) << server.ServerLog();
  cluster.StopController();
  ASSERT_TRUE(WaitFor([&] { return EventSaid(server, "sl", "list_failed", "slurm_load_jobs error"); })) << server.ServerLog();
  std::string error = server.Pool("sl")["last_error"];
  EXPECT_NE(error.find("slurm"), std::string::npos) << error;  // Slurm's own words
  // Nothing forgotten, nothing made: the worker is there and runs tasks.
  EXPECT_EQ(WorkerNames(server, "sl"), idle);
  ProcResult r = server.Vrun({"echo", "still here"});
  EXPECT_EQ(r.out, "still here\n") << r.err;
  ASSERT_TRUE(cluster.StartController());
  EXPECT_TRUE(WaitFor([&] { return JobsIn(cluster, left.prefix, "RUNNING") == idle; }));
  EXPECT_EQ(WorkerNames(server, "sl"), idle);
  EXPECT_FALSE(EventSaid(server, "sl", "worker_gone"));
}

TEST(SlurmPool, APendingJobShowsSlurmsReasonAndOutlivesTheRegisterTimeout) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tpp")};
  // Every CPU of the partition taken by a job that is not ours.
  ASSERT_EQ(cluster.Sh("sbatch -J " + left.prefix + "-blocker -p main -N " + std::to_string(SlurmCluster::kNodes) +
                       " --exclusive -o /dev/null --wrap 'sleep 300'").exit_code, 0);
  Server server(SlurmPool(left.prefix, "", "      register_timeout: \"2s\"\n"), {}, "", cluster.Env());
  Background waiting(std::vector<std::string>{BinDir() + "/vrun", "echo", "ran"}, server.ClientEnv(), "/");
  std::string name;
  ASSERT_TRUE(WaitFor([&] {
    nlohmann::json p = server.Pool("sl");
    for (auto& w : p["worker_list"]) {
      if (w["detail"].get<std::string>().rfind("pending: ", 0) == 0) name = w["name"];
    }
    return !name.empty();
  })) << server.ServerLog();
  // Held pending for several register timeouts: still the same worker, no timeout fired.
  std::this_thread::sleep_for(6s);
  EXPECT_FALSE(EventSaid(server, "sl", "register_timeout")) << server.ServerLog();
  nlohmann::json w = WorkerJson(server, "sl", name);
  ASSERT_TRUE(w.is_object());
  EXPECT_EQ(w["state"], "starting");
  EXPECT_NE(w["detail"].get<std::string>().find("pending: "), std::string::npos) << w.dump();
  // The waiting vrun says so on its progress line.
  EXPECT_NE(waiting.Stderr().find("1 starting (pending: "), std::string::npos) << waiting.Stderr();
  // When the partition frees up, the job runs and the vrun with it.
  cluster.Sh("scancel --name=" + left.prefix + "-blocker");
  ProcResult r = waiting.Wait();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ran\n");
}

TEST(SlurmPool, SbatchRefusingTheJobIsShownAndLeavesNothingBehind) {
  SLURM_OR_SKIP(cluster);
  Leftovers left{cluster, UniqueSlurmPrefix("tpr")};
  std::string config = SlurmPool(left.prefix);
  config.replace(config.find("partition: main"), 15, "partition: nosuch");
  Server server("server:\n  metrics_listen: \"127.0.0.1:0\"\n" + config, {}, "", cluster.Env());
  Background waiting(std::vector<std::string>{BinDir() + "/vrun", "true"}, server.ClientEnv(), "/");
  std::string error;
  ASSERT_TRUE(WaitFor([&] {
    nlohmann::json p = server.Pool("sl");
    error = p["last_error"].is_string() ? p["last_error"].get<std::string>() : "";
    return error.find("Invalid partition name specified") != std::string::npos;  // sbatch's own words
  })) << server.ServerLog();
  EXPECT_TRUE(waiting.Running());
  // In the metrics too, and to the waiting vrun.
  httplib::Client http("http://" + Lines(ReadAll(server.data_dir() + "/metrics.addr"))[0]);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  size_t info = res->body.find("\ntidepool_pool_last_error_info{");
  ASSERT_NE(info, std::string::npos) << res->body;
  std::string line = res->body.substr(info + 1, res->body.find('\n', info + 1) - info - 1);
  EXPECT_NE(line.find("Invalid partition name specified"), std::string::npos) << line;
  EXPECT_NE(line.find("pool=\"sl\""), std::string::npos) << line;
  EXPECT_TRUE(WaitFor([&] { return waiting.Stderr().find("Invalid partition name specified") != std::string::npos; }))
      << waiting.Stderr();
  EXPECT_TRUE(cluster.Jobs(left.prefix).empty());
  EXPECT_EQ(server.Workers("sl"), 0);
}

// A login node: a real sshd on loopback (this machine is where the cluster is), whose sessions get
// the cluster's SLURM_CONF from sshd itself (SetEnv), as a site's login node has its own.
class LoginNode {
 public:
  LoginNode(const std::string& dir, const SlurmCluster& cluster) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    std::filesystem::create_directories("/run/sshd");
    for (const char* k : {"host_key", "client_key", "other_key"}) {
      RunProcess({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir_ + "/" + k}, {}, dir_);
    }
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::close(fd);
    std::filesystem::copy_file(dir_ + "/client_key.pub", dir_ + "/authorized_keys");
    WriteAll(dir_ + "/sshd_config", "ListenAddress 127.0.0.1:" + std::to_string(port_) + "\nHostKey " + dir_ +
                                        "/host_key\nPidFile " + dir_ + "/sshd.pid\nAuthorizedKeysFile " + dir_ +
                                        "/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                                        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                                        "SetEnv SLURM_CONF=" + cluster.Env().at("SLURM_CONF") + "\n");
    auto known = [&](const std::string& key) {
      std::string pub = ReadAll(dir_ + "/" + key + ".pub");
      return "[127.0.0.1]:" + std::to_string(port_) + " " + pub.substr(0, pub.find(' ', pub.find(' ') + 1)) + "\n";
    };
    WriteAll(dir_ + "/known_hosts", known("host_key"));
    WriteAll(dir_ + "/wrong_known_hosts", known("other_key"));
    sshd_ = std::make_unique<Background>(
        std::vector<std::string>{"/usr/sbin/sshd", "-D", "-e", "-f", dir_ + "/sshd_config"},
        std::map<std::string, std::string>{}, dir_);
    WaitFor([&] {
      return RunProcess({"/usr/bin/ssh", "-i", dir_ + "/client_key", "-o", "UserKnownHostsFile=" + dir_ + "/known_hosts",
                         "-o", "BatchMode=yes", "-p", std::to_string(port_), "root@127.0.0.1", "true"},
                        {}, "/")
                 .exit_code == 0;
    });
  }
  // The slurm block's `login` mapping, and where the agent goes.
  std::string Block(bool right_key) const {
    return "          login: { host: 127.0.0.1, port: " + std::to_string(port_) + ", user: root, identity_file: " +
           dir_ + "/client_key, known_hosts: " + dir_ + (right_key ? "/known_hosts" : "/wrong_known_hosts") + " }\n" +
           "          agent_path: " + AgentPath() + "\n          output_dir: " + dir_ + "/out\n";
  }
  std::string AgentPath() const { return dir_ + "/bin/tidepool-agent"; }

 private:
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Background> sshd_;
};

TEST(SlurmPool, ThroughALoginNodeOverSshWithTheAgentInstalledThere) {
  SLURM_OR_SKIP(cluster);
  if (!std::filesystem::exists("/usr/sbin/sshd")) GTEST_SKIP() << "openssh-server is not installed";
  Leftovers left{cluster, UniqueSlurmPrefix("tpl")};
  LoginNode login("/var/tmp/tidepool-login-" + left.prefix, cluster);
  // The server has no SLURM_CONF of its own: only commands run on the login node can reach Slurm.
  Server server(SlurmPool(left.prefix, login.Block(true)));
  ProcResult r = server.Vrun({"echo", "via login"});
  EXPECT_EQ(r.exit_code, 0) << r.err << server.ServerLog();
  EXPECT_EQ(r.out, "via login\n");
  // The agent bundle was installed there by version, and the job runs it.
  ASSERT_TRUE(std::filesystem::is_symlink(login.AgentPath()));
  std::string version = ReadAll(BinDir() + "/agent-bundle/VERSION");
  EXPECT_NE(std::filesystem::read_symlink(login.AgentPath()).string().find(version.substr(0, 64)), std::string::npos);
  EXPECT_EQ(JobsIn(cluster, left.prefix, "RUNNING"), WorkerNames(server, "sl"));
  std::filesystem::remove_all("/var/tmp/tidepool-login-" + left.prefix);
}

TEST(SlurmPool, ALoginNodeWithTheWrongHostKeyIsAClearErrorAndNothingIsSubmitted) {
  SLURM_OR_SKIP(cluster);
  if (!std::filesystem::exists("/usr/sbin/sshd")) GTEST_SKIP() << "openssh-server is not installed";
  Leftovers left{cluster, UniqueSlurmPrefix("tpk")};
  LoginNode login("/var/tmp/tidepool-login-" + left.prefix, cluster);
  Server server(SlurmPool(left.prefix, login.Block(false)));
  Background waiting(std::vector<std::string>{BinDir() + "/vrun", "true"}, server.ClientEnv(), "/");
  std::string error;
  ASSERT_TRUE(WaitFor([&] {
    nlohmann::json p = server.Pool("sl");
    error = p["last_error"].is_string() ? p["last_error"].get<std::string>() : "";
    return error.find("host key") != std::string::npos;
  })) << server.ServerLog();
  EXPECT_NE(error.find("127.0.0.1"), std::string::npos) << error;
  EXPECT_NE(error.find("Host key verification failed"), std::string::npos) << error;  // ssh's own words
  EXPECT_FALSE(std::filesystem::exists(login.AgentPath()));
  EXPECT_TRUE(cluster.Jobs(left.prefix).empty());
  EXPECT_EQ(server.Workers("sl"), 0);
  std::filesystem::remove_all("/var/tmp/tidepool-login-" + left.prefix);
}

}  // namespace
}  // namespace tidepool::testing
