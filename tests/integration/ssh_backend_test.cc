// The ssh backend against real OpenSSH servers on network-namespace hosts that see none of the
// caller's files (ssh_hosts.h): it installs the agent bundle, starts agents detached that dial the
// server over the veth network, and runs vrun, vbatch, shards and gangs there.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <set>

#include "harness.h"
#include "netns.h"
#include "ssh_hosts.h"

namespace tidepool::testing {
namespace {

// Runs a client from "/", a directory every host has (the caller's own is not there).
ProcResult Client(Server& server, const std::string& bin, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinDir() + "/" + bin};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, server.ClientEnv(), "/");
}

int HostOfIp(TestNet& net, const std::string& text) {
  for (int i = 0; i < net.hosts(); ++i) {
    if (text.find(net.ip(i) + "/") != std::string::npos) return i;
  }
  return -1;
}

TEST(SshPool, RunsVrunVbatchShardsAndGangsOnHostsItInstallsTheAgentOn) {
  SSH_HOSTS_OR_SKIP(net, hosts, 2);
  Server server(SshPool(net, hosts, hosts.known_hosts(), 2), {}, net.server_ip() + ":0");
  // vrun: output, exit status, and the host it ran on is one of the pool's.
  ProcResult r = Client(server, "vrun", {"sh", "-c", "ip -o -4 addr show; echo to-stderr >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.err << server.ServerLog();
  int host = HostOfIp(net, r.out);
  ASSERT_GE(host, 0) << "stdout: [" << r.out << "] stderr: [" << r.err << "]\n" << server.ServerLog();
  EXPECT_NE(r.err.find("to-stderr"), std::string::npos) << r.err;
  // The agent was installed there (a link to the bundle of this build), and only there.
  std::string link = hosts.Disk(host) + kAgentPath;
  ASSERT_TRUE(std::filesystem::is_symlink(link));
  std::string version = ReadAll(BinDir() + "/agent-bundle/VERSION");
  EXPECT_NE(std::filesystem::read_symlink(link).string().find(version.substr(0, 64)), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(hosts.Disk(1 - host) + kAgentPath));
  // Its token is in a 0600 file, and no command line on the host shows it.
  ProcResult ps = hosts.Run(host, "ps -eo args");
  EXPECT_NE(ps.out.find("tidepool-agent --env-file"), std::string::npos) << ps.out;
  EXPECT_EQ(ps.out.find("tpw_"), std::string::npos) << ps.out;
  ProcResult mode = hosts.Run(host, "stat -c %a .tidepool/run/hosts/*.env");
  EXPECT_EQ(mode.out, "600\n") << mode.out << mode.err;

  // A gang of two needs both hosts at once: one agent per host (workers_per_host 1).
  ProcResult gang = Client(server, "vbatch", {"-N", "2", "--gang", "sh", "-c", "ip -o -4 addr show; sleep 1"});
  ASSERT_EQ(gang.exit_code, 0) << gang.err;
  std::string id = Lines(gang.out)[0];
  nlohmann::json done = server.WaitTask(id);
  EXPECT_EQ(done["state"], "SUCCESS") << done.dump() << server.ServerLog();
  std::set<int> used;
  for (int shard = 0; shard < 2; ++shard) {
    used.insert(HostOfIp(net, Client(server, "tidepool", {"task", "logs", id + "/" + std::to_string(shard)}).out));
  }
  EXPECT_EQ(used, (std::set<int>{0, 1}));
  // Shards queue on the two workers; each writes on its own host.
  ProcResult shards = Client(server, "vbatch", {"-N", "4", "sh", "-c", "echo $TIDEPOOL_SHARD_ID >> /tmp/shards"});
  ASSERT_EQ(shards.exit_code, 0) << shards.err;
  EXPECT_EQ(server.WaitTask(Lines(shards.out)[0])["state"], "SUCCESS");
  std::multiset<std::string> seen;
  for (int i = 0; i < 2; ++i) {
    for (const auto& l : Lines(ReadAll(hosts.Disk(i) + "/tmp/shards"))) seen.insert(l);
  }
  EXPECT_EQ(seen, (std::multiset<std::string>{"0", "1", "2", "3"}));
  // The pool's workers are exactly the agents running on the hosts.
  nlohmann::json pool = server.Pool("hosts");
  EXPECT_EQ(server.Workers("hosts"), 2) << pool.dump();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(hosts.Run(i, "pgrep -c -f 'tidepool-agent --env-file'").out, "1\n");
  }
}

// The pool's last error or event message once one contains `what`, or "" if none ever does. The
// events are searched too: the last error is the newest one, and a failed list (classless) can
// replace a failed create's within milliseconds (seen in CI).
std::string ErrorSaying(Server& server, const std::string& what) {
  std::string error;
  bool seen = WaitFor([&] {
    nlohmann::json p = server.Pool("hosts");
    std::vector<std::string> said;
    if (p["last_error"].is_string()) said.push_back(p["last_error"].get<std::string>());
    for (auto& e : p["events"]) {
      if (e["message"].is_string()) said.push_back(e["message"].get<std::string>());
    }
    for (const std::string& s : said) {
      if (s.find(what) != std::string::npos) {
        error = s;
        return true;
      }
    }
    return false;
  });
  return seen ? error : "";
}

TEST(SshPool, AWrongHostKeyIsAClearErrorAndNothingIsStarted) {
  SSH_HOSTS_OR_SKIP(net, hosts, 2);
  // A pool of host 0 alone, whose key in known_hosts is host 1's.
  Server server(SshPool(net, hosts, hosts.WrongKnownHosts(0), 1, 1), {}, net.server_ip() + ":0");
  Background waiting({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/");
  std::string error = ErrorSaying(server, "host key");
  ASSERT_FALSE(error.empty()) << server.Pool("hosts").dump() << server.ServerLog();
  EXPECT_NE(error.find(net.ip(0)), std::string::npos) << error;
  EXPECT_NE(error.find("Host key verification failed"), std::string::npos) << error;  // ssh's own words
  EXPECT_TRUE(waiting.Running());  // it waits for a worker that cannot be made
  EXPECT_FALSE(std::filesystem::exists(hosts.Disk(0) + "/opt/tidepool"));
  EXPECT_EQ(hosts.Run(0, "pgrep -f '[t]idepool-agent' || echo none").out, "none\n");
  EXPECT_EQ(server.Workers("hosts"), 0);
}

TEST(SshPool, AHostThatDiesMidTaskLosesItsWorkerAndRejoinsWhenBack) {
  SSH_HOSTS_OR_SKIP(net, hosts, 2);
  Server server(SshPool(net, hosts, hosts.known_hosts(), 2, -1, "      sync_loop_interval: \"1s\"\n      scale_up_error_retry_delay: \"1s\"\n"),
                {"--worker-lost-grace", "1s"}, net.server_ip() + ":0");
  // Two tasks at once: one per host. Each records where it ran, then waits.
  std::vector<std::string> ids;
  for (int k = 0; k < 2; ++k) {
    ProcResult b = Client(server, "vbatch", {"--retries", "1", "sh", "-c",
                                             "ip -o -4 addr show >> /tmp/ran; echo started; sleep 4; echo finished"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    ids.push_back(Lines(b.out)[0]);
  }
  ASSERT_TRUE(WaitFor([&] { return !ReadAll(hosts.Disk(0) + "/tmp/ran").empty() && !ReadAll(hosts.Disk(1) + "/tmp/ran").empty(); }))
      << server.ServerLog();
  hosts.Kill(0);  // sshd, agent and task: the machine is gone
  for (const auto& id : ids) {
    nlohmann::json t = server.WaitTask(id);
    EXPECT_EQ(t["state"], "SUCCESS") << t.dump() << server.ServerLog();
  }
  // The killed host's task ran again elsewhere; its output is whole.
  int retried = 0;
  for (const auto& id : ids) {
    nlohmann::json t = server.Task(id);
    if (t["attempts"] == 2) ++retried;
    EXPECT_EQ(Client(server, "tidepool", {"task", "logs", id}).out.substr(0, 8), "started\n");
  }
  EXPECT_EQ(retried, 1);
  // Back, with its disk but no agent: the pool makes a worker there again when two tasks need it.
  ASSERT_TRUE(hosts.Start(0)) << hosts.error();
  // Listed again, its agent is seen stopped: the pool lets the worker go.
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hosts") == 1; })) << server.Pool("hosts").dump();
  std::vector<Background> runs;
  for (int k = 0; k < 2; ++k) {
    runs.emplace_back(std::vector<std::string>{BinDir() + "/vrun", "sh", "-c", "ip -o -4 addr show; sleep 5"},
                      server.ClientEnv(), "/");
  }
  std::set<int> used;
  for (auto& b : runs) {
    ProcResult r = b.Wait();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    used.insert(HostOfIp(net, r.out));
  }
  EXPECT_EQ(used, (std::set<int>{0, 1})) << server.ServerLog();
}

TEST(SshPool, AnUnknownHostOrARefusedKeyIsShownAndNothingIsStarted) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  {
    // A host name nobody can resolve: a bad request, in ssh's own words.
    std::string config = SshPool(net, hosts, hosts.known_hosts(), 1);
    config.replace(config.find("\"root@" + net.ip(0) + "\""), net.ip(0).size() + 7, "\"root@no-such-host.invalid\"");
    Server server(config, {}, net.server_ip() + ":0");
    Background waiting({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/");
    // The create's error (the list's says "unknown host" too, without a class).
    std::string error = ErrorSaying(server, "bad_request");
    EXPECT_NE(error.find("no-such-host.invalid"), std::string::npos) << error << server.ServerLog();
    EXPECT_NE(error.find("unknown host"), std::string::npos) << error;
    EXPECT_EQ(server.Workers("hosts"), 0);
  }
  {
    // A key the host does not accept: an auth error naming the host; nothing copied or started.
    std::string other = hosts.Disk(0) + "/../other_key";
    ASSERT_EQ(RunProcess({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other}, {}, "/").exit_code, 0);
    std::string config = SshPool(net, hosts, hosts.known_hosts(), 1);
    config.replace(config.find(hosts.client_key()), hosts.client_key().size(), other);
    Server server(config, {}, net.server_ip() + ":0");
    Background waiting({BinDir() + "/vrun", "true"}, server.ClientEnv(), "/");
    std::string error = ErrorSaying(server, "the key was refused");
    EXPECT_NE(error.find(net.ip(0)), std::string::npos) << error << server.ServerLog();
    EXPECT_NE(error.find("Permission denied"), std::string::npos) << error;  // ssh's own words
    bool classed = false;  // the create's failure carries its class
    nlohmann::json pool = server.Pool("hosts");
    for (auto& e : pool["events"]) {
      classed = classed || (e["kind"] == "allocation_error" && e["message"].get<std::string>().find("[auth]") != std::string::npos);
    }
    EXPECT_TRUE(classed) << pool.dump();
    EXPECT_TRUE(waiting.Running());
    EXPECT_FALSE(std::filesystem::exists(hosts.Disk(0) + "/opt/tidepool"));
    EXPECT_EQ(hosts.Run(0, "pgrep -f '[t]idepool-agent' || echo none").out, "none\n");
    EXPECT_EQ(server.Workers("hosts"), 0);
  }
}

TEST(SshPool, AProxyJumpReachesTheHostThroughAnotherWithTheSameChecks) {
  SSH_HOSTS_OR_SKIP(net, hosts, 2);
  // Host 0, reached through host 1 (key and known_hosts checked on both legs).
  std::string log1 = hosts.Disk(1) + "/../sshd.log";
  auto accepted = [&] {
    int n = 0;
    for (const std::string& l : Lines(ReadAll(log1))) n += l.find("Accepted publickey") != std::string::npos;
    return n;
  };
  int before = accepted();
  std::string config = SshPool(net, hosts, hosts.known_hosts(), 1, 1);
  config.replace(config.find("          agent_path:"), 0, "          proxy_jump: root@" + net.ip(1) + "\n");
  Server jumped(config, {}, net.server_ip() + ":0");
  ProcResult r = Client(jumped, "vrun", {"sh", "-c", "ip -o -4 addr show"});
  EXPECT_EQ(r.exit_code, 0) << r.err << jumped.ServerLog();
  EXPECT_EQ(HostOfIp(net, r.out), 0);
  EXPECT_GT(accepted(), before) << ReadAll(log1);  // the jump went through host 1
}

}  // namespace
}  // namespace tidepool::testing
