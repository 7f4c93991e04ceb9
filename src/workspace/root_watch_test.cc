#include "workspace/root_watch.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "workspace/scan.h"
#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

using testing::TempDir;
using testing::WriteFile;

// A tree, its watch started before its scan (as the agent does), and the scanned state.
struct Watched {
  explicit Watched(const std::string& root) : root(root) {
    WriteFile(root + "/a.txt", "alpha");
    WriteFile(root + "/src/main.py", "print(1)\n");
    WriteFile(root + "/src/deep/x.bin", std::string("\0\1\2", 3));
    auto w = RootWatch::Start(root);
    EXPECT_TRUE(w.ok()) << w.status().message();
    if (w.ok()) watch = std::move(*w);
    auto s = Scan({root}, {});
    EXPECT_TRUE(s.ok());
    if (s.ok()) state = s->manifest.roots(0);
  }
  // Drains, and says whether the watch still vouches the root is `state`.
  bool Unchanged() {
    watch->Drain();
    return !watch->lost() && StillMatches(root, state, watch->dirty());
  }
  std::string root;
  std::unique_ptr<RootWatch> watch;
  v1::WorkspaceRoot state;
};

TEST(RootWatch, AnUntouchedTreeNeedsNoScanAndAnEditDeepDownIsSeen) {
  TempDir t;
  Watched w(t / "ws");
  ASSERT_TRUE(w.watch);
  EXPECT_TRUE(w.Unchanged());
  EXPECT_TRUE(w.watch->dirty().empty());
  // Read-only use (a task that only reads) leaves it unchanged.
  EXPECT_EQ(testing::ReadAll(w.root + "/src/deep/x.bin").size(), 3u);
  EXPECT_TRUE(w.Unchanged());

  WriteFile(w.root + "/src/deep/x.bin", std::string("\0\1\3", 3));  // same size, new content
  EXPECT_FALSE(w.Unchanged());
  EXPECT_TRUE(w.watch->dirty().count("src/deep/x.bin"));
  EXPECT_FALSE(w.watch->lost());
}

TEST(RootWatch, FilesInADirectoryMadeAfterTheStartAreSeen) {
  TempDir t;
  Watched w(t / "ws");
  ASSERT_TRUE(w.watch);
  std::filesystem::create_directories(w.root + "/out/logs");
  w.watch->Drain();  // the new directories get watches of their own
  EXPECT_TRUE(w.watch->dirty().count("out"));
  // The state is now what a scan says; later writes inside the new directory are still seen.
  auto s = Scan({w.root}, {});
  ASSERT_TRUE(s.ok());
  w.state = s->manifest.roots(0);
  EXPECT_TRUE(w.Unchanged());
  w.watch->Clear();
  WriteFile(w.root + "/out/logs/run.log", "hello");
  EXPECT_FALSE(w.Unchanged());
  EXPECT_TRUE(w.watch->dirty().count("out/logs/run.log"));
}

TEST(RootWatch, DeletionsModesAndLinksAreChanges) {
  TempDir t;
  {
    Watched w(t / "ws1");
    ::unlink((w.root + "/a.txt").c_str());
    EXPECT_FALSE(w.Unchanged());
  }
  {
    Watched w(t / "ws2");
    ::chmod((w.root + "/src/main.py").c_str(), 0755);
    EXPECT_FALSE(w.Unchanged());
  }
  {
    Watched w(t / "ws3");
    ASSERT_EQ(::symlink("a.txt", (w.root + "/link").c_str()), 0);
    EXPECT_FALSE(w.Unchanged());
  }
  {
    // Two names for one file in the state: a write through one changes both, so a dirty file with
    // a second link is never taken as unchanged, even when its size and mtime are put back.
    Watched w(t / "ws4");
    ASSERT_EQ(::link((w.root + "/a.txt").c_str(), (w.root + "/a2.txt").c_str()), 0);
    auto s = Scan({w.root}, {});
    ASSERT_TRUE(s.ok());
    w.state = s->manifest.roots(0);
    w.watch->Drain();
    w.watch->Clear();
    struct stat st;
    ASSERT_EQ(::stat((w.root + "/a.txt").c_str(), &st), 0);
    WriteFile(w.root + "/a.txt", "ALPHA");
    struct timespec ts[2] = {st.st_mtim, st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, (w.root + "/a.txt").c_str(), ts, 0), 0);
    EXPECT_FALSE(w.Unchanged());
  }
}

TEST(RootWatch, AFileWrittenAndRenamedIntoPlaceAsTheStateSaysIsUnchanged) {
  // What the agent's own Apply does: a temporary name, then a rename, with the entry's mtime.
  TempDir t;
  Watched w(t / "ws");
  ASSERT_TRUE(w.watch);
  struct stat st;
  ASSERT_EQ(::stat((w.root + "/a.txt").c_str(), &st), 0);
  WriteFile(w.root + "/.a.txt.tmp", "alpha");
  struct timespec ts[2] = {st.st_mtim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, (w.root + "/.a.txt.tmp").c_str(), ts, 0), 0);
  ASSERT_EQ(::rename((w.root + "/.a.txt.tmp").c_str(), (w.root + "/a.txt").c_str()), 0);
  EXPECT_TRUE(w.Unchanged());
  EXPECT_TRUE(w.watch->dirty().count("a.txt"));
  EXPECT_TRUE(w.watch->dirty().count(".a.txt.tmp"));
}

TEST(RootWatch, ARenamedDirectoryOrARemovedRootLosesTheWatch) {
  TempDir t;
  {
    Watched w(t / "ws1");
    ASSERT_EQ(::rename((w.root + "/src").c_str(), (w.root + "/lib").c_str()), 0);
    w.watch->Drain();
    EXPECT_TRUE(w.watch->lost());
  }
  {
    Watched w(t / "ws2");
    std::filesystem::remove_all(w.root);
    w.watch->Drain();
    EXPECT_TRUE(w.watch->lost());
  }
}

}  // namespace
}  // namespace tidepool::workspace
