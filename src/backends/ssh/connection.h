// One SSH destination reached with OpenSSH's `ssh`, shared by the backends that run things on
// other machines: the ssh backend (one per host) and the slurm backend (its `login` node).
//
// Connections are reused (ControlMaster, ControlPersist 5 min; sockets in a 0700 folder named by
// a hash of the pool's identity, see ControlDir). Host keys are checked (StrictHostKeyChecking=yes,
// against `known_hosts` when given). No secret is ever on the command line: what is secret goes
// on stdin. ssh's own failures are classed (Failure): a wrong host key and "Permission denied"
// are auth errors, an unknown host name is a bad request, the rest transient.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "backends/ssh/host_list.h"
#include "backends/toolkit/subprocess.h"

namespace tidepool::backends::ssh {

class SshConnection {
 public:
  SshConnection(Host host, std::string known_hosts, std::string proxy_jump, std::string control_dir,
                ProcessGroups* groups);

  // Runs `script` with the remote user's shell, `stdin_data` on its stdin.
  Result<SubprocessResult> Run(const std::string& script, const std::string& stdin_data, Deadline deadline) const;
  // A failed run as a classed error naming the host; `doing` says what was attempted. A script's
  // exit 3 is its own "bad request" (a refusal that can never succeed as configured).
  Status Failure(const SubprocessResult& r, std::string_view doing) const;
  const Host& host() const { return host_; }
  std::vector<std::string> Argv(const std::string& script) const;

  // The folder for a pool's ControlPath sockets (short: socket paths are limited to 108 bytes),
  // made 0700.
  static std::string ControlDir(const std::string& data_dir, const std::string& pool);

 private:
  Host host_;
  std::string known_hosts_, proxy_jump_, control_dir_;
  ProcessGroups* groups_;
};

}  // namespace tidepool::backends::ssh
