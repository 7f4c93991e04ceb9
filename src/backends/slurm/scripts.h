// The POSIX sh scripts the slurm backend runs, where the Slurm commands are: on the server's
// machine, or on the login node over SSH. Values are shell-quoted; tokens never appear in them:
// they arrive on the script's stdin, one per line, and reach the job only through its environment
// (sbatch --export=ALL of the submitting shell's environment, which the backend keeps minimal).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace tidepool::backends::slurm {

struct SubmitArgs {
  std::string job_name;
  int nodes = 1;                       // > 1: a batch; tokens for workers 0..nodes-1 on stdin
  std::vector<std::string> worker_names;  // one per node
  std::vector<std::string> sbatch_args;   // --partition=..., --time=..., the operator's own
  std::map<std::string, std::string> env;  // TIDEPOOL_SERVER, _POOL, _SLOTS, _AGENT_DRAIN_BEFORE
  std::string agent;                   // the agent executable as the compute nodes see it
  std::string output_dir;              // the job's output: <dir>/<job name>-<job id>.log
};

// Prints sbatch's answer ("JOBID" or "JOBID;CLUSTER").
std::string SubmitScript(const SubmitArgs& a);
// The job's own script (sbatch --wrap): learns its end from squeue (the agent's walltime) and
// runs the agent, or one agent per node as job steps named by their workers.
std::string JobScript(const SubmitArgs& a);
// Cancels the job named `job_name` (all of our jobs of that name); prints CANCELLED.
std::string CancelJobScript(const std::string& job_name);
// For a worker of a batch job: cancels its step, or the whole job while it is pending or when
// `whole` (every worker of it deleted); prints CANCELLED.
std::string CancelStepScript(const std::string& job_name, const std::string& worker, bool whole);
// Our jobs, "STEPS", our job steps, "LISTED" (squeue.h formats).
std::string ListScript();

}  // namespace tidepool::backends::slurm
