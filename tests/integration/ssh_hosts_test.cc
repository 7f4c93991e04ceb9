// The SSH test hosts themselves (ssh_hosts.h): real sshds on separate network-namespace hosts
// that do not see the caller's files, with host keys that are checked.
#include <gtest/gtest.h>

#include <memory>

#include "harness.h"
#include "netns.h"
#include "ssh_hosts.h"

namespace tidepool::testing {
namespace {

TEST(SshHosts, EachHostIsAMachineOfItsOwnBehindACheckedHostKey) {
  auto net = std::make_unique<TestNet>(2);
  if (!net->error().empty()) GTEST_SKIP() << "network namespaces cannot be made here: " << net->error();
  SshHosts hosts(*net);
  ASSERT_EQ(hosts.error(), "");
  // Logged in over the veth network: the host's own address.
  ProcResult addr = hosts.Run(0, "ip -o -4 addr show");
  EXPECT_NE(addr.out.find(net->ip(0) + "/"), std::string::npos) << addr.out << addr.err;
  // The caller's files are not there; the host's own disk is, and is not the other host's.
  std::string mine = "/tmp/tidepool-ssh-hosts-test-" + std::to_string(getpid());
  WriteAll(mine, "caller");
  EXPECT_NE(hosts.Run(0, "cat " + mine).exit_code, 0);
  EXPECT_NE(hosts.Run(0, "ls " + BinDir()).exit_code, 0);
  EXPECT_EQ(hosts.Run(0, "echo host0 > /opt/mark && cat /opt/mark").out, "host0\n");
  EXPECT_NE(hosts.Run(1, "cat /opt/mark").exit_code, 0);
  EXPECT_EQ(ReadAll(hosts.Disk(0) + "/opt/mark"), "host0\n");
  std::remove(mine.c_str());
  // A detached process outlives its session and dies with its host.
  // Its processes are its own: host 0 does not see host 1's.
  ASSERT_EQ(hosts.Run(1, "echo host1 > /opt/mark; setsid sleep 300 </dev/null >/dev/null 2>&1 &").exit_code, 0);
  EXPECT_EQ(hosts.Run(1, "pgrep -x sleep >/dev/null && echo yes").out, "yes\n");
  EXPECT_EQ(hosts.Run(0, "pgrep -x sleep >/dev/null && echo yes || echo no").out, "no\n");
  hosts.Kill(1);
  EXPECT_NE(hosts.Run(1, "true").exit_code, 0);
  ASSERT_TRUE(hosts.Start(1)) << hosts.error();
  EXPECT_EQ(hosts.Run(1, "pgrep -x sleep >/dev/null && echo yes || echo no").out, "no\n");
  EXPECT_EQ(hosts.Run(1, "cat /opt/mark").out, "host1\n");  // its disk survived
  // A wrong host key is refused by ssh, naming the host.
  std::vector<std::string> argv = hosts.SshArgv(0);
  for (auto& a : argv) {
    if (a == "UserKnownHostsFile=" + hosts.known_hosts()) a = "UserKnownHostsFile=" + hosts.WrongKnownHosts(0);
  }
  argv.push_back("true");
  ProcResult wrong = RunProcess(argv, {{"PATH", "/usr/bin:/bin"}}, "/");
  EXPECT_EQ(wrong.exit_code, 255);
  EXPECT_NE(wrong.err.find("Host key verification failed"), std::string::npos) << wrong.err;
}

// The agent bundle (scripts/agent_bundle.sh) runs on a host that sees nothing of this build:
// copied there as a tar, it loads its libraries from its own lib/ and needs only glibc.
TEST(SshHosts, TheAgentBundleRunsOnAHostWithoutTheBuild) {
  auto net = std::make_unique<TestNet>(1);
  if (!net->error().empty()) GTEST_SKIP() << "network namespaces cannot be made here: " << net->error();
  SshHosts hosts(*net);
  ASSERT_EQ(hosts.error(), "");
  std::string bundle = BinDir() + "/agent-bundle";
  std::vector<std::string> argv = hosts.SshArgv(0);
  argv.push_back("mkdir -p /opt/tp && tar -x -C /opt/tp");
  ProcResult tar = RunProcess({"/bin/tar", "-c", "-C", bundle, "."}, {}, "/");
  ASSERT_EQ(tar.exit_code, 0) << tar.err;
  ProcResult copy = RunProcess(argv, {{"PATH", "/usr/bin:/bin"}}, "/", tar.out);
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  // Its manifest holds on the host, and protobuf, fmt, spdlog and libstdc++ come from the bundle.
  EXPECT_EQ(hosts.Run(0, "cd /opt/tp && sha256sum --quiet -c MANIFEST && echo ok").out, "ok\n");
  ProcResult ldd = hosts.Run(0, "ldd /opt/tp/tidepool-agent");
  for (const char* lib : {"libprotobuf.so", "libfmt.so", "libspdlog.so", "libstdc++.so"}) {
    EXPECT_NE(ldd.out.find(std::string(lib)), std::string::npos) << ldd.out;
    for (const auto& line : Lines(ldd.out)) {
      if (line.find(lib) != std::string::npos) {
        EXPECT_NE(line.find("=> /opt/tp/lib/"), std::string::npos) << line;
      }
    }
  }
  ProcResult help = hosts.Run(0, "/opt/tp/tidepool-agent --help");
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("--env-file"), std::string::npos) << help.out;
  // A bad env file is refused, naming the file and line.
  ProcResult bad = hosts.Run(0, "printf 'TIDEPOOL_POOL=p\\nnonsense\\n' > /tmp/e && /opt/tp/tidepool-agent --env-file /tmp/e");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("/tmp/e:2: expected KEY=VALUE"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace tidepool::testing
