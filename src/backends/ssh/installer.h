// Puts the agent bundle (scripts/agent_bundle.sh: the agent and the libraries it needs, beside
// the server's binary in agent-bundle/) on a host over SSH, by VERSION: used by the ssh backend
// on each host and by the slurm backend on its login node (whose home the compute nodes share).
#pragma once

#include <mutex>
#include <string>

#include "backends/ssh/connection.h"
#include "backends/ssh/remote.h"

namespace tidepool::backends::ssh {

// The bundle beside `agent_binary`, or FAILED_PRECONDITION naming where it was looked for;
// `who` starts the message ("ssh backend").
Result<Bundle> LoadBundle(const std::string& agent_binary, std::string_view who);

class Installer {
 public:
  explicit Installer(Bundle bundle) : bundle_(std::move(bundle)) {}
  const Bundle& bundle() const { return bundle_; }

  // Unpacks the bundle on c's host and points `agent_path` at it (InstallScript). The caller
  // serialises installs per host.
  Status Install(const SshConnection& c, const std::string& agent_path, Deadline deadline);
  // Installs unless that VERSION is already there (InstalledScript).
  Status Ensure(const SshConnection& c, const std::string& agent_path, Deadline deadline);

 private:
  Result<std::string> Tar(Deadline deadline);

  const Bundle bundle_;
  std::mutex mu_;
  std::string tar_;  // guarded by mu_: the bundle as a tar, made once
};

}  // namespace tidepool::backends::ssh
