// Task credentials bound to the task (issue 17, item 1): two users' tasks on one worker, each
// trying what the probe of the issue did, and a task token used from outside its task.
//
// The agents here run as root (as CI does), so they isolate owners (agent/task_users.h). A test
// that needs root says so and is skipped without it: it cannot show anything then.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

class Isolation : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "agents isolate owners only when they run as root";
    users_ = "/tmp/tidepool-isolation-users-" + std::to_string(getpid()) + ".yaml";
    // alice could manage the pool with her own token; her tasks' tokens may not.
    WriteAll(users_, "users:\n"
                     "  - { name: alice, token: alice-token-0123456789, roles: { \"*\": manage } }\n"
                     "  - { name: bob, token: bob-token-0123456789, roles: { \"*\": submit } }\n");
    uid_map_ = "/tmp/tidepool-isolation-uids-" + std::to_string(getpid());
    std::filesystem::remove(uid_map_);
    server_ = std::make_unique<Server>(
        "server:\n  auth: { users_file: " + users_ + " }\n" +
            OnePool("local", 1, {"default_slots_per_agent: 4", "max_idle_agents: 1", "idle_decay: \"60s\""}),
        std::vector<std::string>{}, "", std::map<std::string, std::string>{{"TIDEPOOL_TASK_UID_MAP", uid_map_}});
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(users_);
    std::filesystem::remove(uid_map_);
  }
  // Runs a client command with a token (a user's or a task's) and extra environment.
  ProcResult With(const std::string& token, const std::vector<std::string>& args, const std::string& bin = "tidepool",
                  const std::map<std::string, std::string>& extra = {}) {
    std::vector<std::string> argv = {BinDir() + "/" + bin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = server_->ClientEnv();
    env["TIDEPOOL_TOKEN"] = token;
    for (const auto& [k, v] : extra) env[k] = v;
    return RunProcess(argv, env, server_->dir());
  }
  ProcResult As(const std::string& user, const std::vector<std::string>& args, const std::string& bin = "tidepool") {
    return With(user + "-token-0123456789", args, bin);
  }
  nlohmann::json Get(const std::string& user, const std::string& id) {
    ProcResult r = As(user, {"task", "get", id, "--json"});
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json{{"state", "?"}};
  }
  std::string State(const std::string& id, const std::string& user = "alice") {
    return Get(user, id)["state"].get<std::string>();
  }
  nlohmann::json WaitFinal(const std::string& user, const std::string& id) {
    EXPECT_TRUE(WaitFor([&] {
      std::string s = State(id, user);
      return s == "SUCCESS" || s == "FAILURE" || s == "CANCELLED";
    }));
    return Get(user, id);
  }
  std::string users_, uid_map_;
  std::unique_ptr<Server> server_;
};

TEST_F(Isolation, AnotherOwnersTaskCannotReadSignalOrImpersonateIt) {
  // alice's task, findable by its command line (which /proc shows everyone).
  std::string victim = Lines(As("alice", {"bash", "-c", "exec -a alice-victim sleep 300"}, "vbatch").out)[0];
  ASSERT_FALSE(victim.empty());
  ASSERT_TRUE(WaitFor([&] { return State(victim) == "RUNNING"; }));
  std::string worker = nlohmann::json::parse(As("alice", {"task", "get", victim, "--json"}).out)["worker"];
  pid_t agent = server_->AgentPid("local", worker);
  ASSERT_GT(agent, 0);
  // bob's task on the same worker tries what the probe did.
  std::string probe =
      "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
      "case \"$c\" in 'alice-victim '*) v=${p#/proc/};; esac; done\n"
      "echo victim=${v:+found}\n"
      "if tr '\\0' '\\n' < /proc/$v/environ 2>/dev/null | grep -q TIDEPOOL_TOKEN; then echo victim_environ=READ; "
      "else echo victim_environ=denied; fi\n"
      "if kill -0 $v 2>/dev/null; then echo victim_signal=ALLOWED; else echo victim_signal=denied; fi\n"
      "if cat /proc/" + std::to_string(agent) + "/environ >/dev/null 2>&1; then echo agent_environ=READ; "
      "else echo agent_environ=denied; fi\n"
      "if cat " + server_->data_dir() + "/secret.key >/dev/null 2>&1; then echo server_secret=READ; "
      "else echo server_secret=denied; fi\n"
      "echo uid=$(id -u)\n";
  std::string id = Lines(As("bob", {"bash", "-c", probe}, "vbatch").out)[0];
  nlohmann::json done = WaitFinal("bob", id);
  ASSERT_EQ(done["state"], "SUCCESS") << done.dump();
  EXPECT_EQ(done["worker"], worker);  // one worker
  std::string out = As("bob", {"task", "logs", id}).out;
  EXPECT_NE(out.find("victim=found\n"), std::string::npos) << out;  // the probe did find it
  EXPECT_NE(out.find("victim_environ=denied\n"), std::string::npos) << out;
  EXPECT_NE(out.find("victim_signal=denied\n"), std::string::npos) << out;
  EXPECT_NE(out.find("agent_environ=denied\n"), std::string::npos) << out;
  EXPECT_NE(out.find("server_secret=denied\n"), std::string::npos) << out;
  // Each owner has a uid of their own, recorded for the host's agents; neither is root.
  std::string map = ReadAll(uid_map_);
  ASSERT_EQ(Lines(map).size(), 2u) << map;
  std::string bob_uid = SplitWords(Lines(map)[1])[0];
  EXPECT_NE(SplitWords(Lines(map)[0])[0], bob_uid);
  EXPECT_NE(out.find("uid=" + bob_uid + "\n"), std::string::npos) << out << map;
  // alice's task was never touched.
  EXPECT_EQ(State(victim), "RUNNING");
  EXPECT_EQ(As("alice", {"task", "cancel", victim}).exit_code, 0);
}

// A root agent writes workspaces with its own rights: for a task that runs as its owner's user,
// that would let the owner's manifest reach paths the owner cannot. Such tasks are refused,
// saying why (docs/workspace.md), rather than materialized as root.
TEST_F(Isolation, ATaskTokenActsOnlyInItsOwnTreeAndDiesWithItsTask) {
  // Another task of alice's, which her task's token must not reach.
  std::string other = Lines(As("alice", {"sleep", "300"}, "vbatch").out)[0];
  // The task shows its token (to alice, who may read her logs): as if it had been stolen.
  std::string id = Lines(As("alice", {"bash", "-c", "echo \"$TIDEPOOL_TOKEN\"; exec sleep 300"}, "vbatch").out)[0];
  ASSERT_FALSE(id.empty());
  std::string token;
  ASSERT_TRUE(WaitFor([&] {
    token = As("alice", {"task", "logs", id}).out;
    return token.find('\n') != std::string::npos;
  }));
  token = token.substr(0, token.find('\n'));
  ASSERT_EQ(token.rfind("tpt_", 0), 0u);

  // From outside the task (no $TIDEPOOL_TASK_ID): it sees its own task and nothing else of alice's.
  ProcResult list = With(token, {"task", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find(id), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find(other), std::string::npos) << list.out;
  for (const std::vector<std::string>& call : std::vector<std::vector<std::string>>{
           {"task", "get", other}, {"task", "logs", other}, {"task", "cancel", other}}) {
    ProcResult r = With(token, call);
    EXPECT_NE(r.exit_code, 0) << call[1];
    EXPECT_NE(r.err.find("task not found: " + other), std::string::npos) << call[1] << ": " << r.err;
  }
  EXPECT_EQ(State(other), "RUNNING");
  // No top-level task, and no child of a task outside its tree.
  ProcResult top = With(token, {"echo", "top"}, "vbatch");
  EXPECT_NE(top.exit_code, 0);
  EXPECT_NE(top.err.find("submits only into its own task's tree"), std::string::npos) << top.err;
  ProcResult adopt = With(token, {"echo", "adopted"}, "vbatch", {{"TIDEPOOL_TASK_ID", other}});
  EXPECT_NE(adopt.exit_code, 0);
  EXPECT_NE(adopt.err.find("parent task " + other + " is not running"), std::string::npos) << adopt.err;
  // alice's manage role does not come with it.
  std::string worker = nlohmann::json::parse(As("alice", {"task", "get", id, "--json"}).out)["worker"];
  ProcResult drain = With(token, {"worker", "drain", worker});
  EXPECT_NE(drain.err.find("lacks the manage role"), std::string::npos) << drain.err;
  // What the task may do: a child in its own tree, as alice.
  ProcResult kid = With(token, {"--name", "kid", "echo", "kid-ran"}, "vbatch", {{"TIDEPOOL_TASK_ID", id}});
  ASSERT_EQ(kid.exit_code, 0) << kid.err;
  nlohmann::json k = WaitFinal("alice", id + "/kid");
  EXPECT_EQ(k["state"], "SUCCESS");
  EXPECT_EQ(k["owner"], "alice");
  EXPECT_EQ(With(token, {"task", "logs", id + "/kid"}).out, "kid-ran\n");

  // Once its task has ended, the token is nobody.
  ASSERT_EQ(As("alice", {"task", "cancel", id}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return State(id) == "CANCELLED"; }));
  ProcResult after = With(token, {"task", "get", id});
  EXPECT_NE(after.exit_code, 0);
  EXPECT_NE(after.err.find("not accepted"), std::string::npos) << after.err;
  EXPECT_NE(With(token, {"--name", "late", "true"}, "vbatch", {{"TIDEPOOL_TASK_ID", id}}).exit_code, 0);
  EXPECT_EQ(As("alice", {"task", "cancel", other}).exit_code, 0);
}

// The abuse suite (issue 17, item 6): bob, hostile, and his malicious task try every attack of
// the issue and more, against the CLI, the gRPC API and the fast path, from outside and from
// inside a task on alice's worker. Each attempt says whether it got in; none may.
TEST_F(Isolation, TwoUsersAndAMaliciousTaskGetNowhere) {
  const std::string secret_out = "alice-private-output";
  std::string alice = Lines(As("alice", {"bash", "-c", "echo " + secret_out + "; exec -a alice-victim sleep 300"},
                               "vbatch").out)[0];
  ASSERT_TRUE(WaitFor([&] { return State(alice) == "RUNNING"; }));
  std::string worker = Get("alice", alice)["worker"];
  auto hex = [](const std::string& s) {
    std::string out;
    for (unsigned char c : s) out += fmt::format("{:02x}", c);
    return out;
  };
  // A token of bob's own task, for replays and re-labelling.
  std::string bob_task = Lines(As("bob", {"bash", "-c", "echo \"$TIDEPOOL_TOKEN\"; sleep 1"}, "vbatch").out)[0];
  ASSERT_EQ(WaitFinal("bob", bob_task)["state"], "SUCCESS");
  std::string bob_token = Lines(As("bob", {"task", "logs", bob_task}).out)[0];
  ASSERT_EQ(bob_token.rfind("tpt_", 0), 0u);
  std::string bob_mac = bob_token.substr(bob_token.rfind('_') + 1);
  std::string data = server_->data_dir();
  std::string worker_token = Lines(server_->Tidepool({"worker-token", worker, "--data-dir", data}).out)[0];
  std::string join_token = Lines(server_->Tidepool({"pool", "join-token", "local", "--data-dir", data}).out)[0];
  pid_t agent = server_->AgentPid("local", worker);

  // Each attempt: a name and whether it got in.
  std::vector<std::pair<std::string, bool>> attempts;
  auto outside = [&](const std::string& what, const std::string& token, const std::vector<std::string>& args,
                     const std::string& bin = "tidepool", const std::map<std::string, std::string>& extra = {}) {
    ProcResult r = With(token, args, bin, extra);
    bool in = r.exit_code == 0 || (r.out + r.err).find(secret_out) != std::string::npos;
    attempts.emplace_back(what, in);
  };
  outside("no token: task list", "", {"task", "list"});
  outside("no token: vbatch", "", {"true"}, "vbatch");
  outside("forged task token (zero MAC)", "tpt_" + hex(alice) + "_" + std::string(64, '0'), {"task", "get", alice});
  outside("bob's task MAC relabelled to alice's task", "tpt_" + hex(alice) + "_" + bob_mac, {"task", "logs", alice});
  outside("bob's task token replayed after its task ended", bob_token, {"task", "list"});
  outside("replayed task token, fast path", bob_token, {"true"}, "vbatch", {{"TIDEPOOL_TASK_ID", bob_task}});
  outside("a worker's token as a client's", worker_token, {"task", "list"});
  outside("the pool's join token as a client's", join_token, {"pool", "list"});
  for (const char* call : {"get", "logs", "cancel", "wait"}) {
    outside(std::string("bob: task ") + call + " of alice's task", "bob-token-0123456789", {"task", call, alice});
  }
  outside("bob: --after-success alice's task", "bob-token-0123456789", {"--after-success", alice, "true"}, "vbatch");
  outside("bob: --after alice's task (gRPC)", "bob-token-0123456789", {"batch", "--after", alice, "--", "true"});
  outside("bob: a child of alice's task", "bob-token-0123456789", {"true"}, "vbatch", {{"TIDEPOOL_TASK_ID", alice}});
  outside("bob: reattach to alice's task", "bob-token-0123456789",
          {"--reattach", alice, "--reattach-offsets", "0,0"}, "tidepool-vrun");
  for (std::string path : {"../data/secret.key", "../../../../etc/passwd", "..", "%2e%2e/secret.key"}) {
    outside("bob: task logs " + path, "bob-token-0123456789", {"task", "logs", path});
  }
  outside("bob: drain alice's worker", "bob-token-0123456789", {"worker", "drain", worker});
  // A second agent presenting that worker's token under another name, and one under its name
  // with the join token of a pool that takes no joins.
  for (const auto& [name, token] : std::vector<std::pair<std::string, std::string>>{
           {"impostor", worker_token}, {worker, join_token}}) {
    ProcResult r = RunProcess({BinDir() + "/tidepool-agent", "--server", server_->address(), "--pool", "local", "--name",
                               name, "--token", token},
                              {{"PATH", "/usr/bin:/bin"}}, server_->dir(), "", 60s);
    attempts.emplace_back("agent " + name + " with " + (token == worker_token ? "another worker's token" : "a join token"),
                          r.timed_out || r.exit_code != 3);
  }

  // From inside bob's task on alice's worker.
  std::string probe =
      "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
      "case \"$c\" in 'alice-victim '*) v=${p#/proc/};; esac; done\n"
      "t() { if eval \"$2\" >/dev/null 2>&1; then echo \"$1=IN\"; else echo \"$1=out\"; fi; }\n"
      "t victim_environ \"cat /proc/$v/environ\"\n"
      "t victim_signal \"kill -0 $v\"\n"
      "t victim_maps \"cat /proc/$v/maps\"\n"
      "t agent_environ \"cat /proc/" + std::to_string(agent) + "/environ\"\n"
      "t server_secret \"cat " + data + "/secret.key\"\n"
      "t alice_log_file \"cat " + data + "/logs/*\"\n"
      "t store \"cat " + data + "/tidepool.db\"\n"
      "t own_token_on_alice \"" + BinDir() + "/tidepool task get " + alice + "\"\n"
      "t own_token_top_level \"env -u TIDEPOOL_TASK_ID " + BinDir() + "/vbatch --name escape true\"\n"
      "echo victim=${v:+found}\n";
  std::string id = Lines(As("bob", {"bash", "-c", probe}, "vbatch").out)[0];
  ASSERT_EQ(WaitFinal("bob", id)["worker"], worker);
  std::string out = As("bob", {"task", "logs", id}).out;
  ASSERT_NE(out.find("victim=found"), std::string::npos) << out;
  for (const auto& line : Lines(out)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos || line.compare(0, eq, "victim") == 0) continue;
    attempts.emplace_back("bob's task: " + line.substr(0, eq), line.substr(eq + 1) != "out");
  }
  EXPECT_EQ(State(alice), "RUNNING");  // untouched
  EXPECT_EQ(As("alice", {"task", "logs", alice}).out, secret_out + "\n");

  int in = 0;
  for (const auto& [what, got_in] : attempts) {
    if (got_in) ++in;
    EXPECT_FALSE(got_in) << what;
  }
  // The figure docs/reliability.md quotes.
  std::printf("abuse: %zu attempts, %d got in\n", attempts.size(), in);
  EXPECT_GE(attempts.size(), 30u);
  EXPECT_EQ(As("alice", {"task", "cancel", alice}).exit_code, 0);
}

TEST(IsolationNotRoot, AnAgentThatCannotSwitchUsersSaysSoAndStillHidesItsOwnToken) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start an agent as another user";
  std::string users = "/tmp/tidepool-isolation-users-nr-" + std::to_string(getpid()) + ".yaml";
  WriteAll(users, "users:\n  - { name: bob, token: bob-token-0123456789, roles: { \"*\": submit } }\n");
  Server server("server:\n  auth: { users_file: " + users + " }\nagent_pools:\n  - name: hand\n    default: true\n");
  ProcResult t = server.Tidepool({"pool", "join-token", "hand", "--data-dir", server.data_dir()});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  std::string token = t.out.substr(0, t.out.find('\n'));
  // Asked to isolate without root, an agent refuses to start rather than pretend.
  ProcResult refused = RunProcess({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   BinDir() + "/tidepool-agent", "--pool", "hand", "--run-tasks-as", "owner"},
                                  {{"PATH", "/usr/bin:/bin"}, {"TIDEPOOL_SERVER", server.address()}}, server.dir());
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("needs an agent running as root"), std::string::npos) << refused.err;
  // An agent running as nobody: its token in its environment, as the backends pass it.
  Background agent({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    BinDir() + "/tidepool-agent", "--pool", "hand", "--name", "m-nobody"},
                   {{"PATH", "/usr/bin:/bin"}, {"TIDEPOOL_SERVER", server.address()}, {"TIDEPOOL_WORKER_TOKEN", token}},
                   server.dir());
  std::map<std::string, std::string> env = server.ClientEnv();
  env["TIDEPOOL_TOKEN"] = "bob-token-0123456789";
  ASSERT_TRUE(WaitFor([&] {
    ProcResult w = RunProcess({BinDir() + "/tidepool", "worker", "list", "--json"}, env, server.dir());
    return w.out.find("\"idle\"") != std::string::npos;
  })) << agent.Stderr();
  EXPECT_NE(server.ServerLog().find("worker m-nobody: its agent runs every task as one Unix user"), std::string::npos);
  // A task runs as the agent's user, yet cannot read the agent's environment (PR_SET_DUMPABLE).
  ProcResult r = RunProcess({BinDir() + "/vrun", "-P", "hand", "bash", "-c",
                             "echo uid=$(id -u); if grep -q TIDEPOOL_WORKER_TOKEN /proc/" + std::to_string(agent.pid()) +
                                 "/environ 2>/dev/null; then echo agent_environ=READ; else echo agent_environ=denied; fi"},
                            env, server.dir());
  EXPECT_EQ(r.out, "uid=65534\nagent_environ=denied\n") << r.err;
  std::filesystem::remove(users);
}

}  // namespace
}  // namespace tidepool::testing
