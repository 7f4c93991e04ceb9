// `tidepool-agent`: the agent without gRPC, on the fast protocol (P9). Workers run it:
// `tidepool agent` hands over to it when no TLS is asked for; with TLS the full agent stays.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "harness.h"

namespace tidepool::testing {
namespace {

std::string ExeOf(pid_t pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string();
}

// The shared objects a process has mapped.
std::string MappedLibraries(pid_t pid) {
  std::string out;
  for (const std::string& line : Lines(ReadAll("/proc/" + std::to_string(pid) + "/maps"))) {
    auto slash = line.find('/');
    if (slash != std::string::npos && line.find(".so", slash) != std::string::npos) out += line.substr(slash) + "\n";
  }
  return out;
}

TEST(LeanAgent, WorkersRunItAndItHoldsNoGrpcNorTls) {
  Server server;
  ProcResult r = server.Vrun({"echo", "from-a-lean-agent"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "from-a-lean-agent\n");
  std::vector<pid_t> agents = server.AgentPids();
  ASSERT_EQ(agents.size(), 1u);
  // The local backend started `tidepool agent`, which became tidepool-agent (same process).
  EXPECT_EQ(std::filesystem::path(ExeOf(agents[0])).filename(), "tidepool-agent");
  std::string libs = MappedLibraries(agents[0]);
  EXPECT_NE(libs.find("libprotobuf"), std::string::npos) << libs;  // the listing is real
  EXPECT_EQ(libs.find("libgrpc"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("libssl"), std::string::npos) << libs;
  // libcrypto is there since the workspace: the agent hashes files with OpenSSL's SHA-256.
  EXPECT_EQ(libs.find("libsqlite"), std::string::npos) << libs;
}

TEST(LeanAgent, RefusesTlsAndSaysWhatToRunInstead) {
  ProcResult r = RunProcess({BinDir() + "/tidepool-agent", "--pool", "p", "--server", "127.0.0.1:1", "--tls-ca",
                             "/nonexistent/ca.pem"},
                            {{"PATH", "/usr/bin:/bin"}}, "/tmp");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("TLS"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("needs `tidepool agent`"), std::string::npos) << r.err;
  // The same from the environment.
  r = RunProcess({BinDir() + "/tidepool-agent", "--pool", "p", "--server", "127.0.0.1:1"},
                 {{"PATH", "/usr/bin:/bin"}, {"TIDEPOOL_TLS_CA", "/nonexistent/ca.pem"}}, "/tmp");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("needs `tidepool agent`"), std::string::npos) << r.err;
  // And a bad flag is a usage error that names it.
  r = RunProcess({BinDir() + "/tidepool-agent", "--no-such-flag"}, {{"PATH", "/usr/bin:/bin"}}, "/tmp");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
}

TEST(LeanAgent, AWrongTokenIsRefusedOnceAndTheAgentStops) {
  Server server("agent_pools:\n  - name: hand\n    default: true\n");
  ProcResult r = RunProcess({BinDir() + "/tidepool-agent", "--server", server.address(), "--pool", "hand", "--name",
                             "intruder", "--token", "not-the-join-token"},
                            {{"PATH", "/usr/bin:/bin"}}, server.dir(), "", 60s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 3) << r.err;  // refused: final, no retry loop
  EXPECT_NE((r.out + r.err).find("refused this agent"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(server.Workers("hand"), 0);
}

TEST(LeanAgent, AJoinedMachineRunsWorkAndComesBackAfterTheServerRestarts) {
  Server server("agent_pools:\n  - name: hand\n    default: true\n");
  ProcResult t = server.Tidepool({"pool", "join-token", "hand", "--data-dir", server.data_dir()});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  std::string token = t.out.substr(0, t.out.find('\n'));
  // Short keepalive: a restarted server is noticed at once either way (its port resets us).
  Background agent({BinDir() + "/tidepool-agent", "--server", server.address(), "--pool", "hand", "--name", "m1",
                    "--token", token, "--keepalive", "1s"},
                   {{"PATH", "/usr/bin:/bin"}}, server.dir());
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; })) << agent.Stderr();
  ProcResult r = server.Vrun({"-P", "hand", "sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_NE(r.err.find("err\n"), std::string::npos) << r.err;
  server.Stop();
  server.Start();
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; })) << agent.Stderr();
  r = server.Vrun({"-P", "hand", "echo", "again"});
  EXPECT_EQ(r.out, "again\n") << r.err;
  EXPECT_TRUE(agent.Running());
}

}  // namespace
}  // namespace tidepool::testing
