// Real OpenSSH servers for the tests: one sshd per host of a TestNet (netns.h), each host a
// machine of its own.
//
// Host i's sshd runs in its network namespace, in a pid namespace of its own (it is the host's
// init; `ps` there shows the host's processes only) and in a mount namespace of its own, where the
// caller's files are not there: /work, /tmp, /root and /home are the host's own (directories
// under the scratch folder, bind-mounted, so they survive the host's sshd being killed and
// started again, as a disk survives a reboot), and so are /opt, /var/cache/tidepool (agents'
// workspace caches) and /var/lib/tidepool (where
// agents are installed and record their task uids). Everything the host runs (sessions, the
// agents they start detached) stays in those namespaces. Logins are as root with a key made for
// the test; host keys are made per host and written to a known_hosts file.
//
// The scratch folder is under /var/tmp (visible to hosts, unlike /tmp): it holds the hosts'
// keys and their disks. Everything is removed by the destructor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "netns.h"

namespace tidepool::testing {

class SshHosts {
 public:
  // Starts an sshd on every host of `net`. When sshd is not installed or cannot start, error()
  // says why (tests then skip).
  explicit SshHosts(TestNet& net);
  ~SshHosts();
  SshHosts(const SshHosts&) = delete;
  SshHosts& operator=(const SshHosts&) = delete;

  const std::string& error() const { return error_; }
  const std::string& client_key() const { return client_key_; }    // the private key that logs in
  const std::string& known_hosts() const { return known_hosts_; }  // every host's key, by address
  // A known_hosts where host i's key is another's: a test's "wrong host key".
  std::string WrongKnownHosts(int i) const;
  // The root of host i's own disk as the caller sees it (e.g. Disk(0) + "/opt/...").
  std::string Disk(int i) const;

  // Kills everything in host i's namespace (sshd, agents, tasks), as a machine dying would.
  void Kill(int i);
  // Starts host i's sshd again (after Kill); false and error() when it does not come up.
  bool Start(int i);
  // Runs `command` on host i over ssh as root (for assertions: ps, files).
  ProcResult Run(int i, const std::string& command) const;
  // ssh's argv for host i with the test's key and known_hosts, without the command.
  std::vector<std::string> SshArgv(int i) const;

 private:
  bool Prepare(int i);
  bool WaitListening(int i);

  TestNet& net_;
  std::string error_;
  std::string dir_;
  std::string client_key_, known_hosts_;
  std::vector<std::string> host_keys_;  // public key lines, per host
};

// Makes `net` (n hosts) and `hosts`, or skips the test saying why.
#define SSH_HOSTS_OR_SKIP(net, hosts, n)                                                             \
  auto net##_holder = std::make_unique<TestNet>(n);                                                 \
  if (!net##_holder->error().empty()) GTEST_SKIP() << "no network namespaces: " << net##_holder->error(); \
  TestNet& net = *net##_holder;                                                                      \
  SshHosts hosts(net);                                                                               \
  if (!hosts.error().empty()) GTEST_SKIP() << hosts.error()

inline const std::string kAgentPath = "/opt/tidepool/bin/tidepool-agent";

// An ssh pool of the first `only` hosts of `net` (all when -1), agents installed at kAgentPath;
// `extra` is appended to its auto_scaler block.
inline std::string SshPool(TestNet& net, const SshHosts& hosts, const std::string& known_hosts, int max_agents,
                    int only = -1, const std::string& extra = "") {
  std::string list;
  for (int i = 0; i < (only > 0 ? only : net.hosts()); ++i) list += (i ? ", " : "") + std::string("\"root@") + net.ip(i) + "\"";
  return "agent_pools:\n  - name: hosts\n    default: true\n    auto_scaler:\n"
         "      backend:\n        ssh:\n          hosts: [" + list + "]\n"
         "          identity_file: " + hosts.client_key() + "\n"
         "          known_hosts: " + known_hosts + "\n"
         "          agent_path: " + kAgentPath + "\n"
         "      max_agents: " + std::to_string(max_agents) + "\n      max_idle_agents: " + std::to_string(max_agents) +
         "\n      idle_decay: \"60s\"\n" + extra;
}

}  // namespace tidepool::testing
