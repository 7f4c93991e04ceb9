// What the slurm backend reads from Slurm, as pure functions of squeue's text (tested without a
// cluster), and the names it gives jobs.
//
// Names. A worker of a one-node job is named by its job: "<prefix>-<8 hex>". A batch (gang) of N
// is one job "<prefix>-<8 hex>-x<N>" with one agent per node, each its own job step named by its
// worker: "<prefix>-<8 hex>-x<N>-<i>", i = 0..N-1. Jobs with other names are not ours.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"

namespace tidepool::backends::slurm {

// `squeue -h -o '%i|%T|%r|%M|%j'` (the name last: it may hold anything).
struct Job {
  std::string id;
  std::string state;   // PENDING, RUNNING, ... (squeue's long form)
  std::string reason;  // "Resources", "Priority", "None"
  int64_t elapsed_s = 0;
  std::string name;
};
std::vector<Job> ParseJobs(std::string_view text);
// squeue's elapsed time: [D-]HH:MM:SS, MM:SS, or "INVALID"/"0:00" -> seconds (0 if unreadable).
int64_t ParseElapsed(std::string_view text);

// `squeue -h -s -o '%i|%j'`: job steps as "JOBID.STEP" and their names.
struct Step {
  std::string id;
  std::string name;
};
std::vector<Step> ParseSteps(std::string_view text);

// The job name's parts for a name of ours, or count = 0 if it is not ours: count 1 for a one-node
// job, N for a batch job "-x<N>".
struct JobName {
  int count = 0;
  std::string stem;  // "<prefix>-<8 hex>"
};
JobName ParseJobName(std::string_view name, std::string_view prefix);
std::string BatchJobName(const std::string& stem, int count);                     // "<stem>-x<N>"
std::string BatchWorkerName(const std::string& stem, int count, int index);       // "<stem>-x<N>-<i>"

// Our workers as the backend lists them. PENDING and CONFIGURING jobs are pending, shown with
// Slurm's reason ("pending: Resources"); RUNNING (and SUSPENDED, which Slurm resumes) ones are
// running; COMPLETING ones stopping; finished ones stopped. A running batch job's worker is
// running while its step is; before its step appears (the job's first `step_grace_s` seconds)
// it is pending, unless the backend deleted it (`deleted`).
std::vector<ListedWorker> WorkersOf(const std::vector<Job>& jobs, const std::vector<Step>& steps,
                                    std::string_view prefix, const std::set<std::string>& deleted,
                                    int64_t step_grace_s);
WorkerState StateOf(std::string_view squeue_state);

}  // namespace tidepool::backends::slurm
