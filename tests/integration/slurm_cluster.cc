#include "slurm_cluster.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

namespace tidepool::testing {


std::map<std::string, std::string> SlurmCluster::Settings() const {
  return {{"SB_BASE", s_.base},
          {"SB_NODES", std::to_string(kNodes)},
          {"SB_CPUS", std::to_string(kCpus)},
          {"SB_CLOUD_NODES", std::to_string(s_.cloud_nodes)},
          {"SB_BOOT_DELAY", std::to_string(s_.boot_delay)},
          {"SB_CTLD_PORT", std::to_string(s_.ctld_port)},
          {"SB_NODE_PORT_BASE", std::to_string(s_.node_port_base)},
          {"SB_CLOUD_PORT_BASE", std::to_string(s_.cloud_port_base)},
          {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
          {"HOME", "/root"}};
}

SlurmCluster::SlurmCluster(bool exclusive, SlurmSettings settings) : s_(std::move(settings)) {
  for (const char* p : {"/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/sbin/munged"}) {
    if (!std::filesystem::exists(p)) {
      error_ = std::string("Slurm is not installed (no ") + p + "): scripts/setup.sh installs slurm-wlm and munge";
      return;
    }
  }
  if (geteuid() != 0) {
    error_ = "the test Slurm cluster needs root (slurmd, munge)";
    return;
  }
  lock_ = ::open((s_.base + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_ >= 0) ::flock(lock_, LOCK_EX);
  ProcResult r = RunProcess({"/bin/bash", SourceDir() + "/tests/slurm/setup.sh"}, Settings(), "/");
  if (r.exit_code != 0) error_ = "tests/slurm/setup.sh failed: " + r.out + r.err;
  if (lock_ >= 0 && !exclusive) ::flock(lock_, LOCK_SH);
}

SlurmCluster::~SlurmCluster() {
  if (lock_ >= 0) ::close(lock_);
}

std::map<std::string, std::string> SlurmCluster::Env() const {
  return {{"SLURM_CONF", s_.base + "/etc/slurm.conf"}};
}

ProcResult SlurmCluster::Sh(const std::string& script) const {
  std::map<std::string, std::string> env = Settings();
  for (const auto& [k, v] : Env()) env[k] = v;
  return RunProcess({"/bin/sh", "-c", script}, env, "/");
}

std::vector<std::string> SlurmCluster::Jobs(const std::string& prefix) const {
  std::vector<std::string> out;
  for (const std::string& l : Lines(Sh("squeue -h -o '%j %T'").out)) {
    if (l.rfind(prefix, 0) == 0) out.push_back(l);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void SlurmCluster::CancelAll(const std::string& prefix) const {
  Sh("for id in $(squeue -h -o '%i %j' | awk -v p='" + prefix + "' 'index($2, p) == 1 { print $1 }'); do scancel $id; done");
}

void SlurmCluster::StopController() const {
  Sh("kill -TERM $(cat " + s_.base + "/run/slurmctld.pid); while scontrol ping 2>/dev/null | grep -q UP; do sleep 0.1; done");
}

bool SlurmCluster::StartController() const {
  // No -c: it recovers its jobs from the state it saved.
  ProcResult r = Sh("ulimit -n 65536 2>/dev/null; slurmctld -f \"$SLURM_CONF\"");
  if (r.exit_code != 0) return false;
  return WaitFor([&] { return Sh("scontrol ping").out.find("is UP") != std::string::npos; }, 30s);
}

std::string UniqueSlurmPrefix(const std::string& stem) {
  static int made = 0;
  return stem + "-" + std::to_string(getpid()) + "x" + std::to_string(made++);
}

}  // namespace tidepool::testing
