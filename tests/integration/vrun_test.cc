// vrun as a user runs it (cli.md, "vrun").
#include <signal.h>

#include <gtest/gtest.h>

#include <set>

#include "harness.h"

namespace tidepool::testing {
namespace {

class Vrun : public ::testing::Test {
 protected:
  Server server;
};

TEST_F(Vrun, ArgumentsArriveExactly) {
  ProcResult r = server.Vrun({"echo", "a b", "$HOME", ""});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "a b $HOME \n");
}

TEST_F(Vrun, ExitCodesAsInAShell) {
  EXPECT_EQ(server.Vrun({"true"}).exit_code, 0);
  EXPECT_EQ(server.Vrun({"sh", "-c", "exit 7"}).exit_code, 7);
  EXPECT_EQ(server.Vrun({"sh", "-c", "kill -INT $$"}).exit_code, 130);
  EXPECT_EQ(server.Vrun({"sh", "-c", "kill -KILL $$"}).exit_code, 137);
  ProcResult nf = server.Vrun({"no-such-command-anywhere"});
  EXPECT_EQ(nf.exit_code, 127);
  EXPECT_NE(nf.err.find("command not found: no-such-command-anywhere"), std::string::npos) << nf.err;
}

TEST_F(Vrun, StdinIsForwardedUntilEof) {
  ProcResult r = server.Vrun({"cat"}, "hi\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  // A large stdin arrives whole and in order (flow control, many chunks).
  std::string big;
  for (int i = 0; i < 200000; ++i) big += std::to_string(i) + "\n";
  ProcResult w = server.Vrun({"sh", "-c", "cat | md5sum"}, big);
  ProcResult local = RunProcess({"/bin/sh", "-c", "md5sum"}, {}, server.dir(), big);
  EXPECT_EQ(w.out, local.out);
}

TEST_F(Vrun, NoInputGivesDevNull) {
  ProcResult r = server.Vrun({"-I", "sh", "-c", "cat; echo done"}, "should not arrive\n");
  EXPECT_EQ(r.out, "done\n");
}

TEST_F(Vrun, StdoutAndStderrStaySeparateAndOrdered) {
  ProcResult r = server.Vrun({"sh", "-c",
                              "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"});
  ASSERT_EQ(r.exit_code, 0);
  auto out = Lines(r.out), err = Lines(r.err);
  ASSERT_EQ(out.size(), 3000u);
  ASSERT_EQ(err.size(), 3000u);
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(out[i], "out" + std::to_string(i));
    ASSERT_EQ(err[i], "err" + std::to_string(i));
  }
}

TEST_F(Vrun, OutputOrderHoldsUnderLoad) {
  // Four large outputs at once through the same pool: each arrives complete and in order.
  std::vector<Background> runs;
  for (int k = 0; k < 4; ++k) runs.push_back(server.VrunBackground({"seq", "1", "100000"}));
  for (auto& b : runs) {
    ProcResult r = b.Wait();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto lines = Lines(r.out);
    ASSERT_EQ(lines.size(), 100000u);
    for (int i = 0; i < 100000; ++i) ASSERT_EQ(lines[i], std::to_string(i + 1));
  }
}

TEST_F(Vrun, WorkingDirectoryAndEnvironment) {
  ProcResult r = server.Vrun({"-C", "/usr", "-e", "GREETING=hello", "-e", "PATH", "sh", "-c", "pwd; echo $GREETING $PWD"});
  EXPECT_EQ(r.out, "/usr\nhello /usr\n");
  // The caller's directory is the default; local-terminal variables are not sent.
  ProcResult d = server.Vrun({"sh", "-c", "pwd; echo \"[$DISPLAY]\""});
  EXPECT_EQ(Lines(d.out)[0], server.dir());
  EXPECT_EQ(Lines(d.out)[1], "[]");
}

TEST_F(Vrun, TtyModes) {
  EXPECT_EQ(server.Vrun({"--tty", "yes", "sh", "-c", "test -t 0 && test -t 1 && echo tty"}).out.find("tty"), 0u);
  EXPECT_EQ(server.Vrun({"--tty", "no", "sh", "-c", "test -t 1 || echo notty"}).out, "notty\n");
  // auto without a local terminal: no PTY.
  EXPECT_EQ(server.Vrun({"sh", "-c", "test -t 1 || echo notty"}).out, "notty\n");
  ProcResult bad = server.Vrun({"--tty", "maybe", "true"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("invalid tty mode: maybe"), std::string::npos);
}

TEST_F(Vrun, UsageErrorsExitTwo) {
  ProcResult unknown = server.Vrun({"--bogus", "true"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("--bogus"), std::string::npos);
  EXPECT_EQ(server.Vrun({}).exit_code, 2);
  // After `--` everything is the command, even words that look like options.
  EXPECT_EQ(server.Vrun({"--", "echo", "--bogus"}).out, "--bogus\n");
  EXPECT_EQ(server.Vrun({"echo", "-n", "x"}).out, "x");
}

TEST_F(Vrun, UnknownPoolAndUnreachableServer) {
  ProcResult p = server.Vrun({"-P", "nope", "true"});
  EXPECT_EQ(p.exit_code, 255);
  EXPECT_NE(p.err.find("pool not found: nope"), std::string::npos) << p.err;
  ProcResult u = RunProcess({BinDir() + "/vrun", "--server", "127.0.0.1:1", "true"}, {}, server.dir());
  EXPECT_EQ(u.exit_code, 255);
  EXPECT_NE(u.err.find("127.0.0.1:1"), std::string::npos) << u.err;
  EXPECT_EQ(Lines(u.err).size(), 1u) << u.err;
}

TEST_F(Vrun, SignalsAreForwardedToTheRemoteProcess) {
  Background b = server.VrunBackground({"sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_TRUE(WaitFor([&] { return b.Stdout().find("ready") != std::string::npos; }));
  b.Signal(SIGTERM);
  ProcResult r = b.Wait();
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.out.find("got-term"), std::string::npos);
}

TEST_F(Vrun, SecondCtrlCKillsTheRemoteGroup) {
  // The remote survives SIGINT (it only reports it); a second Ctrl-C within a second kills it
  // and vrun exits 130. Signals do not queue, so each Ctrl-C is sent only once the previous one
  // has been seen remotely; on a machine slow enough to stretch that past a second, the next
  // pair still qualifies. Through each of the three clients: the C vrun, the C++ fast client
  // (what it hands --timeout to) and the full client over gRPC.
  const std::vector<std::vector<std::string>> clients = {
      {BinDir() + "/vrun"}, {BinDir() + "/vrun", "--timeout", "1h"}, {BinDir() + "/tidepool", "run"}};
  std::set<std::string> earlier;
  for (const auto& client : clients) {
    SCOPED_TRACE(client.back());
    std::vector<std::string> argv = client;
    for (const char* a : {"sh", "-c", "trap 'echo got-int' INT; echo ready; while :; do sleep 0.05; done"}) argv.push_back(a);
    Background b(argv, server.ClientEnv(), server.dir());
    ASSERT_TRUE(WaitFor([&] { return b.Stdout().find("ready") != std::string::npos; }));
    size_t seen = 0;
    for (int i = 0; i < 10 && b.Running(); ++i) {
      b.Signal(SIGINT);
      WaitFor([&] {
        size_t n = 0;
        for (const auto& line : Lines(b.Stdout())) n += line == "got-int";
        return n > seen || !b.Running();
      }, 30s);
      seen = 0;
      for (const auto& line : Lines(b.Stdout())) seen += line == "got-int";
    }
    ProcResult r = b.Wait();
    EXPECT_EQ(r.exit_code, 130);
    EXPECT_GE(seen, 1u);
    // The remote process group is gone: its task ends (killed) rather than running on.
    std::string id;
    for (auto& t : server.Json({"task", "list"})) {
      if (t["command"][0] == "sh" && !earlier.count(t["id"])) id = t["id"];
    }
    ASSERT_FALSE(id.empty());
    earlier.insert(id);
    nlohmann::json t = server.WaitTask(id);
    EXPECT_EQ(t["signal"], 9);
  }
}

TEST_F(Vrun, TimeoutStopsTheCommand) {
  ProcResult r = server.Vrun({"--timeout", "1s", "sleep", "60"});
  EXPECT_EQ(r.exit_code, 128 + SIGTERM);
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidepool::testing
