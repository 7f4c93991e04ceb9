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

}  // namespace
}  // namespace tidepool::testing
