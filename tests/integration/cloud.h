// The fake cloud of cloud.sh, seen from a test: its knobs, its ledger, and its VMs.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace tidepool::testing {

class Cloud {
 public:
  explicit Cloud(const std::string& dir);
  ~Cloud();  // kills every VM still up

  const std::string& dir() const { return dir_; }
  // The `backend:` block of a pool using this cloud (indented for auto_scaler or fixed).
  std::string Backend(const std::string& timeout = "20s", const std::string& indent = "      ") const;
  // A whole config: one default pool `cloud` on this cloud, with extra auto_scaler lines.
  std::string Config(int max_agents, const std::vector<std::string>& extra, const std::string& timeout = "20s") const;

  void Set(const std::string& knob, const std::string& content = "") const;
  void Clear(const std::string& knob) const;

  std::vector<std::string> Ledger() const;
  int Count(const std::string& verb) const;            // ledger lines starting with verb
  std::vector<std::string> Started() const;            // names, in order
  std::vector<std::string> Stopped() const;            // names, each once, in order of first stop
  bool Alive(const std::string& name) const;           // the VM's wrapper process exists
  std::vector<std::string> AliveVms() const;
  pid_t VmPid(const std::string& name) const;
  pid_t AgentPid(const std::string& name) const;       // the agent inside the VM, or -1
  // Makes a VM without an agent, as if someone started it by hand.
  void BootStray(const std::string& name) const;

 private:
  std::string dir_;
};

}  // namespace tidepool::testing
