// A full data disk loses nothing (issue 16): the server refuses what it cannot store, the agent
// holds it and offers it again, and once space returns every byte is on file before the task is
// recorded as ended. The logs live on a small tmpfs of the test's own, grown when it is full.
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

// A tmpfs mounted on `dir` for the test's life (lazily unmounted: the server may hold files).
class SmallDisk {
 public:
  SmallDisk(std::string dir, const std::string& size) : dir_(std::move(dir)) {
    RunProcess({"mkdir", "-p", dir_}, {}, "/");
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  bool Grow(const std::string& size) {
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
};

TEST(DiskFull, OutputRefusedByAFullDiskIsStoredOnceSpaceReturns) {
  Server server;
  SmallDisk disk(server.data_dir() + "/logs", "1m");
  if (!disk.mounted()) GTEST_SKIP() << "needs root to mount a tmpfs";
  // About 3.4 MB on stdout and a line on stderr at the end; the disk takes 1 MB.
  const std::string script = "seq 1 500000; echo done >&2";
  ProcResult expected = RunProcess({"sh", "-c", script}, {}, "/");
  ASSERT_GT(expected.out.size(), 3'000'000u);
  ProcResult r = server.Vbatch({"sh", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = Lines(r.out)[0];
  // The disk fills; the server says so and the task is not recorded as ended.
  ASSERT_TRUE(WaitFor([&] { return server.ServerLog().find("No space left on device") != std::string::npos; }));
  ASSERT_TRUE(WaitFor([&] { return server.ServerLog().find("its exit waits for its output") != std::string::npos; }));
  EXPECT_EQ(server.Task(id)["state"], "RUNNING");
  ASSERT_TRUE(disk.Grow("64m"));
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS") << t.dump();
  ProcResult logs = server.Tidepool({"task", "logs", id});
  EXPECT_EQ(logs.out.size(), expected.out.size());
  EXPECT_TRUE(logs.out == expected.out) << "stdout differs from the task's output";
  EXPECT_EQ(logs.err, "done\n");
}

}  // namespace
}  // namespace tidepool::testing
