// The `slurm` backend: workers are Slurm jobs on an existing cluster (backends.md, `slurm`).
//
//   Create  `sbatch` of a one-node job whose script runs the agent. The worker's name is the job's
//           name ("<job_name_prefix>-<8 hex>", squeue.h); the server address, name and token
//           travel in the job's environment (the token through the submitting script's stdin and
//           `--export`, never a command line). The agent learns its job's end from squeue and
//           tells the server, which drains it `drain_before` ahead (autoscaler/walltime.h).
//   CreateBatch  one `--nodes=N` allocation for a gang, one agent per node, each a job step named
//           by its worker.
//   Delete  `scancel` of the job (Slurm sends TERM, then KILL after its KillWait); a batch worker's
//           step alone while others of its job still run. Waits for a create of the same name.
//   List    `squeue` for our jobs and steps, by name prefix. PENDING is pending and shown with
//           Slurm's reason ("pending: Resources"); the pool's register_timeout does not fire
//           while a job is pending. Finished jobs are not workers.
//
// The Slurm commands run on the server's machine, or with `login` on a login node over SSH
// (ssh/connection.h), where the agent bundle is installed by version at `agent_path` in the
// login user's home (which the compute nodes are expected to share).
//
// sbatch's refusals are classed: a bad partition, account, QOS, time limit or node request is a
// bad request; a submit limit is quota; an unreachable controller transient.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/ssh/connection.h"
#include "backends/ssh/installer.h"
#include "backends/toolkit/name_locks.h"
#include "backends/toolkit/subprocess.h"

namespace tidepool::backends::slurm {

// How a refusal of sbatch (its stderr) counts for the pool.
ErrorClass ClassifySlurmError(std::string_view said);

class SlurmBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> Make(const config::BackendConfig& cfg, const BackendContext& ctx);

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override;
  Status Delete(const std::string& name, Deadline deadline) override;
  Result<std::vector<ListedWorker>> List(Deadline deadline) override;
  std::chrono::milliseconds CallTimeout() const override { return std::chrono::minutes(2); }
  void Abandon() override { groups_.Abandon(); }
  bool SupportsBatch() const override { return true; }
  Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count, const std::string& label,
                                               Deadline deadline) override;

  // A running batch job's worker whose step has not appeared this long after the job started is gone.
  static constexpr int64_t kStepGraceSeconds = 60;

 private:
  struct Options {
    std::vector<std::string> sbatch_args;  // from partition, account, ..., then sbatch_args
    std::string prefix;
    int64_t drain_before_ms = 600000;
    std::string agent_path;
    std::string output_dir;
    std::optional<ssh::Host> login;
    std::string known_hosts, proxy_jump;
  };
  SlurmBackend(BackendContext ctx, Options opts, std::optional<ssh::Bundle> bundle);

  // Runs a script where the Slurm commands are.
  Result<SubprocessResult> Run(const std::string& script, const std::string& stdin_data, Deadline deadline);
  Status Failure(const SubprocessResult& r, std::string_view doing) const;
  // sbatch of `names` (one, or a batch) as job `job_name`; cancels it again if that fails.
  Status Submit(const std::string& job_name, const std::vector<std::string>& names, const CreateRequest& request,
                Deadline deadline);
  std::string NewStem();

  const BackendContext ctx_;
  const Options opts_;
  ProcessGroups groups_;
  NameLocks name_locks_;
  std::optional<ssh::SshConnection> login_;
  std::unique_ptr<ssh::Installer> installer_;  // with login: the bundle for the login node
  std::mutex install_mu_;
  bool installed_ = false;  // guarded by install_mu_

  std::mutex mu_;
  std::set<std::string> deleted_;                                   // guarded by mu_: batch workers deleted
};

}  // namespace tidepool::backends::slurm
