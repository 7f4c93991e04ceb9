// A full data disk loses nothing (issue 16): the server refuses what it cannot store, the agent
// holds it and offers it again, and once space returns every byte is on file before the task is
// recorded as ended. The logs live on a small tmpfs of the test's own, grown when it is full.
#include <gtest/gtest.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

TEST(DiskFull, OutputRefusedByAFullDiskIsStoredOnceSpaceReturns) {
  Server server;
  TmpfsMount disk;
  if (!disk.Mount(server.data_dir() + "/logs", "1m")) GTEST_SKIP() << "needs root to mount a tmpfs";
  // About 3.4 MB on stdout and a line on stderr at the end; the disk takes 1 MB.
  const std::string script = "seq 1 500000; echo done >&2";
  ProcResult expected = RunProcess({"sh", "-c", script}, {}, server.dir());
  ASSERT_GT(expected.out.size(), 3'000'000u);
  ProcResult r = server.Vbatch({"sh", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = Lines(r.out)[0];
  // The disk fills; the server says so and the task is not recorded as ended.
  ASSERT_TRUE(WaitFor([&] { return server.ServerLog().find("No space left on device") != std::string::npos; }));
  ASSERT_TRUE(WaitFor([&] { return server.ServerLog().find("its exit waits for its output") != std::string::npos; }));
  EXPECT_EQ(server.Task(id)["state"], "RUNNING");
  ASSERT_TRUE(disk.Resize("64m"));
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump();
  ProcResult logs = server.Tidepool({"task", "logs", id});
  EXPECT_EQ(logs.out.size(), expected.out.size());
  EXPECT_TRUE(logs.out == expected.out) << "stdout differs from the task's output";
  EXPECT_EQ(logs.err, "done\n");
}

}  // namespace
}  // namespace tidepool::testing
