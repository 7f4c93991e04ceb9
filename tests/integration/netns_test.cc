// Real separate hosts: agents in their own network namespaces reach the server over veth links
// on a bridge (netns.h), in a private subnet made for the test. A link is cut mid-task and
// restored; gangs learn the hosts' real addresses. Skipped, saying why, where namespaces cannot
// be made (not root, no iproute2, a kernel that refuses).
#include <gtest/gtest.h>

#include <memory>
#include <set>

#include "harness.h"
#include "netns.h"

namespace tidepool::testing {
namespace {

// A TestNet of `hosts` hosts named `net`, or the test is skipped with the reason.
#define NETNS_OR_SKIP(net, hosts)                                                               \
  auto net##_holder = std::make_unique<TestNet>(hosts);                                          \
  if (!net##_holder->error().empty()) {                                                          \
    GTEST_SKIP() << "network namespaces cannot be made here: " << net##_holder->error();          \
  }                                                                                              \
  TestNet& net = *net##_holder

const char* kPool = "hosts";
const std::string kConfig = "agent_pools:\n  - name: hosts\n    default: true\n";

std::string Id(const ProcResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(r.out);
  return lines.empty() ? "" : lines[0];
}

std::string JoinToken(Server& server) {
  ProcResult t = server.Tidepool({"pool", "join-token", kPool, "--data-dir", server.data_dir()});
  EXPECT_EQ(t.exit_code, 0) << t.err;
  auto lines = Lines(t.out);
  return lines.empty() ? "" : lines[0];
}

// The agent of host i, started inside its namespace: it dials the server over its cable and
// reports its namespace address (what gangs are told).
Background StartAgent(TestNet& net, int i, Server& server, const std::string& token, const std::string& name) {
  return Background(net.In(i, {BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", kPool, "--name",
                               name, "--token", token, "--keepalive", "1s", "--log-level", "debug"}),
                    {{"TIDEPOOL_AGENT_ADDRESS", net.ip(i)}}, server.dir());
}

nlohmann::json Worker(Server& server, const std::string& name) {
  nlohmann::json all = server.Json({"worker", "list"});
  if (all.is_array()) {
    for (const auto& w : all) {
      if (w.value("name", "") == name) return w;
    }
  }
  return nlohmann::json::object();
}

std::string WorkerState(Server& server, const std::string& name) { return Worker(server, name).value("state", ""); }

// The IPv4 addresses `ip -o -4 addr` printed, without their prefix lengths.
std::set<std::string> Inet(const std::string& ip_output) {
  std::set<std::string> out;
  for (const auto& line : Lines(ip_output)) {
    auto w = SplitWords(line);
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      if (w[i] == "inet") out.insert(w[i + 1].substr(0, w[i + 1].find('/')));
    }
  }
  return out;
}

// "[::ffff:10.1.2.3]:80" -> "10.1.2.3:80"
std::string PlainEndpoint(std::string e) {
  for (const std::string& junk : {std::string("[::ffff:"), std::string("]")}) {
    for (size_t p; (p = e.find(junk)) != std::string::npos;) e.erase(p, junk.size());
  }
  return e;
}

std::string Dump(const std::vector<Background*>& agents) {
  std::string s;
  for (size_t i = 0; i < agents.size(); ++i) s += "--- agent " + std::to_string(i) + " log:\n" + agents[i]->Stderr();
  return s;
}

TEST(Netns, AgentInItsOwnNamespaceRunsTasksOverTheLink) {
  NETNS_OR_SKIP(net, 1);
  Server server(kConfig, {}, net.server_ip() + ":0");
  ASSERT_EQ(server.address().rfind(net.server_ip() + ":", 0), 0u) << server.address();
  Background agent = StartAgent(net, 0, server, JoinToken(server), "host0");
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "host0") == "idle"; }, 60s)) << Dump({&agent});
  EXPECT_EQ(Worker(server, "host0")["address"], net.ip(0));

  ProcResult r = server.Vrun({"-P", kPool, "sh", "-c",
                              net.ip_bin() + " -o -4 addr show; echo ---; " + net.ss_bin() + " -Htn state established"});
  ASSERT_EQ(r.exit_code, 0) << r.err << Dump({&agent});
  std::string addrs = r.out.substr(0, r.out.find("---\n"));
  std::string conns = r.out.find("---\n") == std::string::npos ? "" : r.out.substr(r.out.find("---\n") + 4);
  // It ran in the namespace: the host's own address and loopback, nothing of the root's.
  EXPECT_EQ(Inet(addrs), (std::set<std::string>{"127.0.0.1", net.ip(0)})) << r.out;
  // And the agent there holds a TCP connection from that address to the server's.
  bool linked = false;
  for (const auto& line : Lines(conns)) {
    std::vector<std::string> ends;
    for (const auto& w : SplitWords(line)) {
      if (w.find(':') != std::string::npos) ends.push_back(PlainEndpoint(w));
    }
    if (ends.size() == 2 && ends[0].rfind(net.ip(0) + ":", 0) == 0 && ends[1] == server.address()) linked = true;
  }
  EXPECT_TRUE(linked) << "no connection from " << net.ip(0) << " to " << server.address() << " in:\n" << conns;
}

TEST(Netns, LinkCutMidTaskTheAgentReconnectsAndTheTaskCompletesOnce) {
  NETNS_OR_SKIP(net, 1);
  // The task must outlive the outage: its worker is lost for a while, not for good.
  Server server(kConfig, {"--worker-lost-grace", "120s"}, net.server_ip() + ":0");
  Background agent = StartAgent(net, 0, server, JoinToken(server), "host0");
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "host0") == "idle"; }, 60s)) << Dump({&agent});

  // Numbered lines until the gate opens (and at least 50), the count so far in a side file,
  // then the task's id appended once to `done`.
  std::string dir = server.dir();
  std::string gate = dir + "/gate", count = dir + "/count", done = dir + "/done";
  std::string script = "i=0; while [ $i -lt 50 ] || [ ! -e " + gate +
                       " ]; do i=$((i+1)); printf 'line %06d the quick brown fox jumps over the lazy dog\\n' $i; "
                       "echo $i > " + count + "; sleep 0.1; done; echo \"$TIDEPOOL_TASK_ID $i\" >> " + done;
  std::string id = Id(server.Vbatch({"-P", kPool, "sh", "-c", script}));
  ASSERT_FALSE(id.empty());
  auto counted = [&] {
    auto w = SplitWords(ReadAll(count));
    return w.empty() ? 0 : std::stoi(w[0]);
  };
  // Running, with output reaching the server over the link.
  ASSERT_TRUE(WaitFor([&] {
    return server.Tidepool({"task", "logs", id}).out.find("line 000010 ") != std::string::npos;
  }, 60s)) << server.Task(id).dump() << Dump({&agent});
  EXPECT_EQ(WorkerState(server, "host0"), "busy");

  // Cut the cable; the server notices the agent is gone.
  ASSERT_TRUE(net.SetLink(0, false));
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "host0") == "lost"; }, 120s))
      << Worker(server, "host0").dump() << Dump({&agent});
  // The task goes on printing on its host meanwhile, and the server keeps it (grace).
  int at_lost = 0;
  ASSERT_TRUE(WaitFor([&] { return (at_lost = counted()) > 0; }));  // not caught mid-rewrite
  ASSERT_TRUE(WaitFor([&] { return counted() >= at_lost + 20; }, 60s));
  nlohmann::json during = server.Task(id);
  EXPECT_EQ(during["state"], "RUNNING") << during.dump();
  EXPECT_EQ(during["attempts"], 1) << during.dump();
  EXPECT_TRUE(ReadAll(done).empty());

  // Plug it back in: the agent reconnects with its task still running.
  ASSERT_TRUE(net.SetLink(0, true));
  auto ended = [&] {
    std::string s = server.Task(id).value("state", "");
    return s != "RUNNING" && s != "QUEUEING";
  };
  ASSERT_TRUE(WaitFor([&] { return WorkerState(server, "host0") == "busy" || ended(); }, 120s))
      << Worker(server, "host0").dump() << Dump({&agent});
  ASSERT_FALSE(ended()) << "the task did not survive the outage: " << server.Task(id).dump() << Dump({&agent});
  WriteAll(gate, "");
  nlohmann::json t = server.WaitTask(id, 120s);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump() << Dump({&agent});
  EXPECT_EQ(t["attempts"], 1) << t.dump();

  // Appended exactly once, by this task, which printed n lines.
  auto finished = Lines(ReadAll(done));
  ASSERT_EQ(finished.size(), 1u) << ReadAll(done);
  auto parts = SplitWords(finished[0]);
  ASSERT_EQ(parts.size(), 2u) << finished[0];
  EXPECT_EQ(parts[0], id);
  int n = std::stoi(parts[1]);
  EXPECT_GT(n, at_lost + 20);
  // Every line in the logs exactly once, in order: nothing lost or doubled across the outage.
  std::string expected;
  for (int i = 1; i <= n; ++i) {
    char line[96];
    std::snprintf(line, sizeof(line), "line %06d the quick brown fox jumps over the lazy dog\n", i);
    expected += line;
  }
  ProcResult logs = server.Tidepool({"task", "logs", id});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_TRUE(logs.out == expected) << "logs (" << Lines(logs.out).size() << " lines) differ from lines 1.." << n
                                    << ":\n" << logs.out;
  EXPECT_TRUE(WaitFor([&] { return WorkerState(server, "host0") == "idle"; }, 60s)) << Worker(server, "host0").dump();
}

TEST(Netns, GangOnTwoHostsLearnsTheirAddresses) {
  NETNS_OR_SKIP(net, 2);
  Server server(kConfig, {}, net.server_ip() + ":0");
  std::string token = JoinToken(server);
  Background a0 = StartAgent(net, 0, server, token, "host0");
  Background a1 = StartAgent(net, 1, server, token, "host1");
  ASSERT_TRUE(WaitFor([&] { return server.Workers(kPool, {"idle"}) == 2; }, 60s)) << Dump({&a0, &a1});

  // Each shard records what it was told and where it runs, then waits for the other (a gang
  // starts together).
  std::string dir = server.dir();
  std::string script = "echo $TIDEPOOL_GANG_HOSTS $MASTER_ADDR > " + dir + "/told.$TIDEPOOL_SHARD_ID; " +
                       net.ip_bin() + " -o -4 addr show > " + dir + "/addr.$TIDEPOOL_SHARD_ID; touch " + dir +
                       "/up.$TIDEPOOL_SHARD_ID; while [ ! -e " + dir + "/up.0 ] || [ ! -e " + dir +
                       "/up.1 ]; do sleep 0.05; done";
  std::string id = Id(server.Vbatch({"-N", "2", "--gang", "-P", kPool, "sh", "-c", script}));
  nlohmann::json g = server.WaitTask(id, 120s);
  ASSERT_EQ(g["state"], "SUCCESS") << g.dump() << Dump({&a0, &a1});

  // Where each shard ran: the one address of its namespace besides loopback.
  std::vector<std::string> ran;
  for (int i = 0; i < 2; ++i) {
    std::set<std::string> a = Inet(ReadAll(dir + "/addr." + std::to_string(i)));
    a.erase("127.0.0.1");
    ASSERT_EQ(a.size(), 1u) << ReadAll(dir + "/addr." + std::to_string(i));
    ran.push_back(*a.begin());
  }
  EXPECT_EQ(std::set<std::string>(ran.begin(), ran.end()), (std::set<std::string>{net.ip(0), net.ip(1)}));
  for (int i = 0; i < 2; ++i) {
    auto told = SplitWords(ReadAll(dir + "/told." + std::to_string(i)));
    ASSERT_EQ(told.size(), 2u) << "shard " << i << " was told: " << ReadAll(dir + "/told." + std::to_string(i));
    // The hosts, in shard order, are the namespaces' addresses; MASTER_ADDR is shard 0's.
    EXPECT_EQ(told[0], ran[0] + "," + ran[1]) << "shard " << i;
    EXPECT_EQ(told[1], ran[0]) << "shard " << i;
  }
}

}  // namespace
}  // namespace tidepool::testing
