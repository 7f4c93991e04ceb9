#include "backends/slurm/squeue.h"

#include <gtest/gtest.h>

#include "backends/slurm/slurm_backend.h"

namespace tidepool::backends::slurm {
namespace {

TEST(Squeue, JobsAreReadWithTheNameLastAndOddLinesSkipped) {
  auto jobs = ParseJobs(
      "17|PENDING|Resources|0:00|tp-gpu-0a1b2c3d\n"
      "squeue: warning: something\n"
      "18|RUNNING|None|1-02:03:04|a|name|with|bars\n");
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].id, "17");
  EXPECT_EQ(jobs[0].reason, "Resources");
  EXPECT_EQ(jobs[1].elapsed_s, 86400 + 2 * 3600 + 3 * 60 + 4);
  EXPECT_EQ(jobs[1].name, "a|name|with|bars");
  EXPECT_EQ(ParseElapsed("5:07"), 307);
  EXPECT_EQ(ParseElapsed("INVALID"), 0);
}

TEST(Squeue, OnlyOurNamesAreOurs) {
  EXPECT_EQ(ParseJobName("tp-gpu-0a1b2c3d", "tp-gpu").count, 1);
  EXPECT_EQ(ParseJobName("tp-gpu-0a1b2c3d-x3", "tp-gpu").count, 3);
  EXPECT_EQ(ParseJobName("tp-gpu-0a1b2c3d-x3", "tp-gpu").stem, "tp-gpu-0a1b2c3d");
  EXPECT_EQ(ParseJobName("tp-gpu-big-0a1b2c3d", "tp-gpu").count, 0);  // another pool's prefix
  EXPECT_EQ(ParseJobName("tp-gpux0a1b2c3d", "tp-gpu").count, 0);
  EXPECT_EQ(ParseJobName("tp-gpu-0A1B2C3D", "tp-gpu").count, 0);
  EXPECT_EQ(ParseJobName("tp-gpu-0a1b2c3d-y", "tp-gpu").count, 0);
  EXPECT_EQ(ParseJobName("tp-gpu-0a1b2c3d-x0", "tp-gpu").count, 0);
  EXPECT_EQ(ParseJobName("other", "tp-gpu").count, 0);
}

TEST(Squeue, PendingJobsAreWorkersWithSlurmsReasonAndFinishedOnesAreNot) {
  std::vector<Job> jobs = {{"1", "PENDING", "Resources", 0, "p-00000001"},
                           {"2", "RUNNING", "None", 10, "p-00000002"},
                           {"3", "COMPLETING", "None", 10, "p-00000003"},
                           {"4", "CANCELLED", "None", 10, "p-00000004"},
                           {"5", "RUNNING", "None", 10, "someone-elses"},
                           {"6", "CONFIGURING", "None", 0, "p-00000006"}};
  auto w = WorkersOf(jobs, {}, "p", {}, 60);
  ASSERT_EQ(w.size(), 5u);
  EXPECT_EQ(w[0].name, "p-00000001");
  EXPECT_EQ(w[0].state, WorkerState::kPending);
  EXPECT_EQ(w[0].detail, "pending: Resources");
  EXPECT_EQ(w[1].state, WorkerState::kRunning);
  EXPECT_EQ(w[1].detail, "");
  EXPECT_EQ(w[2].state, WorkerState::kStopping);
  EXPECT_EQ(w[3].state, WorkerState::kStopped);
  EXPECT_EQ(w[4].state, WorkerState::kPending);
  EXPECT_EQ(w[4].detail, "configuring");
}

TEST(Squeue, ABatchJobListsOneWorkerPerNodeByItsStep) {
  std::vector<Job> jobs = {{"7", "RUNNING", "None", 5, "p-0000000a-x3"}};
  std::vector<Step> steps = {{"7.0", "p-0000000a-x3-0"}, {"7.batch", "batch"}};
  // Young job: a worker without its step yet is starting; one the backend deleted is going.
  auto w = WorkersOf(jobs, steps, "p", {"p-0000000a-x3-2"}, 60);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].name, "p-0000000a-x3-0");
  EXPECT_EQ(w[0].state, WorkerState::kRunning);
  EXPECT_EQ(w[1].state, WorkerState::kPending);
  EXPECT_EQ(w[2].state, WorkerState::kStopped);
  // Older than the grace: a worker whose step is not there has ended.
  jobs[0].elapsed_s = 61;
  w = WorkersOf(jobs, steps, "p", {}, 60);
  EXPECT_EQ(w[1].state, WorkerState::kStopped);
  // Pending: every worker of the allocation is pending, with the reason.
  jobs[0].state = "PENDING";
  jobs[0].reason = "Priority";
  w = WorkersOf(jobs, {}, "p", {}, 60);
  for (const auto& x : w) EXPECT_EQ(x.detail, "pending: Priority");
}

TEST(Squeue, SbatchsRefusalsAreClassed) {
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Invalid partition name specified"),
            ErrorClass::kBadRequest);
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Invalid account or account/partition "
                               "combination specified"),
            ErrorClass::kBadRequest);
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Requested time limit is invalid "
                               "(missing or exceeds some limit)"),
            ErrorClass::kBadRequest);
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
                               "(job submit limit, user's size and/or time limits)"),
            ErrorClass::kQuota);
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
                               "(connect failure)"),
            ErrorClass::kTransient);
  EXPECT_EQ(ClassifySlurmError("sbatch: error: Batch job submission failed: Access/permission denied"),
            ErrorClass::kAuth);
}

}  // namespace
}  // namespace tidepool::backends::slurm
