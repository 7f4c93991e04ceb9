// The `ssh` backend: a pool made of hosts people already have, reached with OpenSSH's `ssh`.
//
//   Create  picks a free place (a host with fewer than `workers_per_host` of the pool's agents; the
//           worker's name is "<pool>-<host>[-p<port>]-<k>"), installs the agent bundle there when
//           it is absent or another VERSION, and starts the agent detached, handing it the server
//           address, name and token in a 0600 env file written from ssh's stdin (never on a
//           command line). A host that cannot be reached is skipped for the next one; only when
//           none can take the worker does Create fail (out of capacity when every place is taken).
//   Delete  stops exactly that agent (TERM, then KILL: its tasks go with it); waits for a create
//           of the same name still running.
//   List    one round trip per host, all hosts at once, over connections kept open (ssh's
//           ControlMaster, ControlPersist 5 min). A host that does not answer lists the workers
//           it was last seen with as running, "host unreachable: <ssh's words>": the pool never
//           forgets a worker its backend has not seen gone; its agent's silence makes the worker
//           lost and its tasks follow the loss rules; when the host answers again its agent
//           (which kept running) reconnects. Only when no host answers does List fail.
//
// Host keys are checked against `known_hosts` (StrictHostKeyChecking=yes): a mismatch is an auth
// error naming the host, and nothing is started there. ssh's own failures are classed: host key
// and "Permission denied" are auth, an unknown host name is a bad request, the rest transient.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/ssh/connection.h"
#include "backends/ssh/host_list.h"
#include "backends/ssh/installer.h"
#include "backends/ssh/remote.h"
#include "backends/toolkit/name_locks.h"
#include "backends/toolkit/subprocess.h"

namespace tidepool::backends::ssh {

class SshBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> Make(const config::BackendConfig& cfg, const BackendContext& ctx);

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override;
  Status Delete(const std::string& name, Deadline deadline) override;
  Result<std::vector<ListedWorker>> List(Deadline deadline) override;
  std::chrono::milliseconds CallTimeout() const override { return std::chrono::minutes(2); }
  void Abandon() override { groups_.Abandon(); }

  static constexpr const char* kDefaultAgentPath = ".tidepool/bin/tidepool-agent";
  static constexpr int kStopGraceSeconds = 15;

 private:
  struct Options {
    std::vector<Host> hosts;
    std::string known_hosts, proxy_jump, agent_path;
    int workers_per_host = 1;
  };
  SshBackend(BackendContext ctx, Options opts, Bundle bundle);

  // Starts worker `name` on host i (installing first if needed).
  Status StartOn(size_t i, const std::string& name, const CreateRequest& request, Deadline deadline);
  // The host a worker name belongs to, by its stem; -1 if none.
  int HostOf(const std::string& name) const;

  const BackendContext ctx_;
  const Options opts_;
  ProcessGroups groups_;
  NameLocks name_locks_;
  std::vector<SshConnection> hosts_;  // by index of opts_.hosts
  Installer installer_;
  std::vector<std::unique_ptr<std::mutex>> install_mu_;  // per host: one install at a time

  std::mutex mu_;
  std::map<std::string, size_t> where_;  // guarded by mu_: workers last seen running (or made)
  std::set<std::string> creating_;       // guarded by mu_: names whose create runs
  std::map<size_t, Clock::time_point> unreachable_until_;          // guarded by mu_
};

}  // namespace tidepool::backends::ssh
