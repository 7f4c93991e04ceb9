// Separate hosts on a real network, made for one test: each host is a network namespace joined
// to the root namespace by a veth pair whose root-side end is plugged into a bridge. The bridge
// holds the "server" address; every address is in a private /24 (10.199.N.0/24) that nothing
// on the machine uses when the net is made. Namespaces have no default route: their only
// peers are the bridge and each other.
//
//   root namespace:  bridge tpb<pid>_<k> 10.199.N.1/24
//                      |-- tph<pid>_<g>  <== veth ==>  tpc<pid>_<g> 10.199.N.2/24 in namespace tp<pid>_<g>
//                      `-- tph<pid>_<h>  <== veth ==>  tpc<pid>_<h> 10.199.N.3/24 in namespace tp<pid>_<h>
//
// Unplugging host i's cable is `ip link set link(i) down` in the root namespace. Everything is
// removed again (processes left in the namespaces are killed first) by the destructor; what a
// test process that died left behind is swept by the next one.
#pragma once

#include <string>
#include <vector>

namespace tidepool::testing {

class TestNet {
 public:
  // Makes `hosts` namespaces. When they cannot be made here (not root, no `ip`, the kernel
  // refuses), nothing is left behind and error() says why.
  explicit TestNet(int hosts);
  ~TestNet();
  TestNet(const TestNet&) = delete;
  TestNet& operator=(const TestNet&) = delete;

  const std::string& error() const { return error_; }
  int hosts() const { return static_cast<int>(hosts_.size()); }
  const std::string& server_ip() const { return server_ip_; }  // the bridge's address, in the root namespace
  const std::string& ip(int i) const { return hosts_[i].ip; }  // host i's address, inside its namespace
  const std::string& ns(int i) const { return hosts_[i].ns; }
  const std::string& link(int i) const { return hosts_[i].link; }  // host i's cable, root side
  const std::string& ip_bin() const { return ip_bin_; }
  const std::string& ss_bin() const { return ss_bin_; }

  // Plugs (up) or unplugs (down) host i's cable; false (and a test failure) if `ip` fails.
  bool SetLink(int i, bool up);
  // `argv` run inside host i's namespace (`ip netns exec NS ...`, which execs: same pid).
  std::vector<std::string> In(int i, const std::vector<std::string>& argv) const;
  // pids of the processes in host i's namespace.
  std::vector<int> Pids(int i) const;

 private:
  struct Host {
    std::string ns, link, peer, ip;
  };
  // Runs `ip ARGS`; on failure returns false and sets *why (when given).
  bool Ip(const std::vector<std::string>& args, std::string* why = nullptr, std::string* out = nullptr) const;
  bool Make(int hosts);
  void Teardown();
  void SweepStale();
  bool PickSubnet();

  std::string error_;
  std::string dir_;  // scratch for the `ip` runs' output
  std::string ip_bin_, ss_bin_;
  std::string bridge_;
  std::string subnet_;  // "10.199.N."
  std::string server_ip_;
  bool bridge_made_ = false;
  std::vector<Host> hosts_;
  std::vector<std::string> made_ns_, made_links_;
};

}  // namespace tidepool::testing
