// The real Slurm cluster the slurm backend's tests run against: tests/slurm/setup.sh (a copy of
// ../shared/bench/slurm: slurmctld, one slurmd per node, munge, all from Debian, all on this
// host), started on first use with its own runtime folder and ports so that it never disturbs a
// benchmark cluster, and kept running for the next test (setup.sh is idempotent; concurrent test
// processes take a lock around it).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "harness.h"

namespace tidepool::testing {

// Which cluster: the tests' (the defaults), or another beside it (the benchmarks').
struct SlurmSettings {
  std::string base = "/tmp/tidepool-slurm-test";
  int ctld_port = 17817;
  int node_port_base = 17900;
  int cloud_port_base = 17950;
  int cloud_nodes = 0;     // powered-down State=CLOUD nodes c1..cN, partition `cloud`
  double boot_delay = 0;   // their simulated boot (cloud_resume.sh)
};

class SlurmCluster {
 public:
  // Starts it if needed; error() says why not. Held for the object's life: shared, or with
  // `exclusive` alone (a test that stops the controller must not break the others' jobs).
  explicit SlurmCluster(bool exclusive = false, SlurmSettings settings = {});
  ~SlurmCluster();
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;
  const std::string& error() const { return error_; }
  // What Slurm's commands (and the server, for its slurm pools) need in their environment.
  std::map<std::string, std::string> Env() const;
  // Runs a Slurm command line (sh -c) against this cluster.
  ProcResult Sh(const std::string& script) const;
  // Our jobs whose name starts with `prefix`: "NAME STATE" lines, sorted.
  std::vector<std::string> Jobs(const std::string& prefix) const;
  // Cancels every job whose name starts with `prefix` (a test's leftovers).
  void CancelAll(const std::string& prefix) const;
  // slurmctld stopped (squeue then fails) and started again with its saved state.
  void StopController() const;
  bool StartController() const;

  static constexpr int kNodes = 4;
  static constexpr int kCpus = 4;

 private:
  std::map<std::string, std::string> Settings() const;

  SlurmSettings s_;
  std::string error_;
  int lock_ = -1;
};

// A job_name_prefix no other test (or earlier run) shares.
std::string UniqueSlurmPrefix(const std::string& stem);

}  // namespace tidepool::testing
