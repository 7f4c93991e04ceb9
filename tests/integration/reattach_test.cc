// vrun across a server restart (issue 16, item 2): the command runs on, vrun keeps its terminal,
// says so once, reattaches, and its output goes on from where it stopped (nothing lost, nothing
// repeated); it exits with the command's real status, and the record never says CANCELLED for a
// command that ran to its end. Each client: the C vrun (which hands over to tidepool-vrun), the
// C++ fast client, and the full gRPC client (`tidepool run`).
#include <signal.h>

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "harness.h"

namespace tidepool::testing {
namespace {

constexpr char kSaid[] = "server restarting; your command is still running";

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

// Lines 1..n on stdout, and e1..en on stderr, one every `pause` seconds.
std::string Counter(int n, const std::string& pause) {
  return "i=1; while [ $i -le " + std::to_string(n) + " ]; do echo $i; echo e$i >&2; i=$((i+1)); sleep " + pause +
         "; done";
}

// stderr without the lines the client itself said (its own "tidepool: ..." notes).
std::string CommandStderr(const std::string& err) {
  std::string s;
  for (const std::string& line : Lines(err)) {
    if (line.rfind("tidepool: ", 0) != 0) s += line + "\n";
  }
  return s;
}

std::string Numbers(const std::string& prefix, int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) s += prefix + std::to_string(i) + "\n";
  return s;
}

enum class Client { kLite, kFast, kFull };

Background Start(Server& server, Client client, const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  switch (client) {
    case Client::kLite: argv = {BinDir() + "/vrun"}; break;
    case Client::kFast: argv = {BinDir() + "/tidepool-vrun"}; break;
    case Client::kFull: argv = {BinDir() + "/tidepool", "run"}; break;
  }
  if (client == Client::kFast && ::access(argv[0].c_str(), X_OK) != 0) argv = {BinDir() + "/vrun"};  // no musl: vrun is it
  argv.insert(argv.end(), args.begin(), args.end());
  return Background(argv, server.ClientEnv(), server.dir());
}

struct Case {
  Client client;
  int sig;
};

class Reattach : public ::testing::TestWithParam<Case> {};

// The output is printed while the server is down and after it is back: every line once, in order.
TEST_P(Reattach, OutputGoesOnFromWhereItStoppedAndTheExitIsTheCommands) {
  const auto [client, sig] = GetParam();
  Server server("", {"--worker-lost-grace", "30s"});
  const std::string gate = server.dir() + "/gate";
  // 1..5 at once, then waits for the gate (the server is then down and back), then 6..40, exit 7.
  std::string script = Counter(5, "0") + "; while [ ! -e " + gate + " ]; do sleep 0.05; done; i=6; while [ $i -le 40 ];" +
                       " do echo $i; echo e$i >&2; i=$((i+1)); sleep 0.02; done; exit 7";
  Background vrun = Start(server, client, {"--name", "r", "sh", "-c", script});
  ASSERT_TRUE(WaitFor([&] { return vrun.Stdout().find("5\n") != std::string::npos; }));
  // The vrun comes back only after the agent: the agent's output is refused until then (held).
  vrun.Signal(SIGSTOP);
  server.Stop(sig);
  WriteAll(gate, "");  // it prints on while nobody listens: the agent holds the output
  std::this_thread::sleep_for(500ms);
  server.Start();
  ASSERT_TRUE(WaitFor([&] { return Count(server.ServerLog(), "worker_connected") == 2; }));
  std::this_thread::sleep_for(500ms);
  vrun.Signal(SIGCONT);
  ProcResult r = vrun.Wait(120s);
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, Numbers("", 40));
  EXPECT_EQ(CommandStderr(r.err), Numbers("e", 40)) << r.err;
  EXPECT_EQ(Count(r.err, kSaid), 1u) << r.err;
  nlohmann::json t = server.WaitTask("r");
  EXPECT_EQ(t["state"], "FAILURE") << t.dump();
  EXPECT_EQ(t.value("exit_code", -1), 7) << t.dump();
}

// The command ends while the server is down: the vrun still gets its output and its status, and
// the record says how it ended (not CANCELLED).
TEST_P(Reattach, ACommandThatEndsWhileTheServerIsDownIsRecordedAsItEnded) {
  const auto [client, sig] = GetParam();
  Server server("", {"--worker-lost-grace", "30s"});
  const std::string gate = server.dir() + "/gate";
  std::string script = "echo before; while [ ! -e " + gate + " ]; do sleep 0.05; done; echo after; echo gone >&2; exit 0";
  Background vrun = Start(server, client, {"--name", "e", "sh", "-c", script});
  ASSERT_TRUE(WaitFor([&] { return vrun.Stdout() == "before\n"; }));
  vrun.Signal(SIGSTOP);
  server.Stop(sig);
  WriteAll(gate, "");
  std::this_thread::sleep_for(1s);  // it has ended by now, its exit held by its agent
  server.Start();
  // The agent reports the exit to the new server before the vrun is back: it is held for it.
  ASSERT_TRUE(WaitFor([&] { return server.ServerLog().find("its exit waits for its vrun") != std::string::npos; }));
  vrun.Signal(SIGCONT);
  ProcResult r = vrun.Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "before\nafter\n");
  EXPECT_EQ(CommandStderr(r.err), "gone\n") << r.err;
  nlohmann::json t = server.WaitTask("e");
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump();
}

std::string CaseName(const ::testing::TestParamInfo<Case>& i) {
  std::string c = i.param.client == Client::kLite ? "LiteVrun" : i.param.client == Client::kFast ? "FastVrun" : "FullClient";
  return c + (i.param.sig == SIGKILL ? "Sigkill" : "Sigterm");
}

INSTANTIATE_TEST_SUITE_P(Clients, Reattach,
                         ::testing::Values(Case{Client::kLite, SIGKILL}, Case{Client::kLite, SIGTERM},
                                           Case{Client::kFast, SIGKILL}, Case{Client::kFull, SIGTERM}),
                         CaseName);

// A vrun queued at the restart keeps its place and runs once it is back.
TEST(ReattachQueued, AQueuedVrunRunsAfterTheRestart) {
  Server server(OnePool("local", 1));
  const std::string gate = server.dir() + "/gate";
  ProcResult busy = server.Vbatch({"--name", "busy", "sh", "-c", "while [ ! -e " + gate + " ]; do sleep 0.05; done"});
  ASSERT_EQ(busy.exit_code, 0) << busy.err;
  ASSERT_TRUE(WaitFor([&] { return server.Task("busy")["state"] == "RUNNING"; }));
  Background vrun = server.VrunBackground({"--name", "q", "sh", "-c", "echo ran; exit 4"});
  ASSERT_TRUE(WaitFor([&] { return server.Task("q")["state"] == "QUEUEING"; }));
  server.Kill();
  server.Start();
  WriteAll(gate, "");
  ProcResult r = vrun.Wait(120s);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.out, "ran\n");
  EXPECT_EQ(Count(r.err, kSaid), 1u) << r.err;
  EXPECT_EQ(server.WaitTask("q")["state"], "FAILURE");
}

// A server that does not come back within --reattach-for: vrun says what it knows and exits 255;
// the command, left with nobody to see it, is stopped once the server is back and the window has
// passed (as a vrun that went away is), and a later reattach learns how it ended.
TEST(ReattachBound, VrunGivesUpAfterReattachForAndTheRecordSaysWhy) {
  Server server("", {"--worker-lost-grace", "30s"});
  Background vrun = server.VrunBackground({"--name", "b", "--reattach-for", "2s", "sh", "-c", "echo up; sleep 600"});
  ASSERT_TRUE(WaitFor([&] { return vrun.Stdout() == "up\n"; }));
  server.Kill();
  ProcResult r = vrun.Wait(60s);
  EXPECT_EQ(r.exit_code, 255) << r.err;
  EXPECT_NE(r.err.find("did not come back within 2s"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tidepool task get"), std::string::npos) << r.err;
  server.Start();
  nlohmann::json t = server.WaitTask("b", 60s);
  EXPECT_EQ(t["state"], "CANCELLED") << t.dump();
  EXPECT_NE(t.value("reason", "").find("did not come back within 2s"), std::string::npos) << t.dump();
  // Reattaching now tells how it ended.
  std::vector<std::string> argv = {BinDir() + "/tidepool", "run", "--reattach", t["id"].get<std::string>()};
  ProcResult again = RunProcess(argv, server.ClientEnv(), server.dir());
  EXPECT_EQ(again.exit_code, 130) << again.err;
}

// Reattach obeys the usual rules: a task the caller may not see answers as a missing one.
TEST(ReattachBound, ReattachingToAnUnknownTaskIsNotFound) {
  Server server;
  ProcResult r = RunProcess({BinDir() + "/tidepool", "run", "--reattach", "no-such-task"}, server.ClientEnv(), server.dir());
  EXPECT_EQ(r.exit_code, 255) << r.err;
  EXPECT_NE(r.err.find("not found"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidepool::testing
