#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <utility>

#include "workspace/manifest_delta.h"
#include "workspace/root_watch.h"
#include "workspace/scan.h"
#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

using testing::TempDir;
using testing::WriteFile;

// Rescan from what a watch saw must give what a whole scan gives.
void ExpectSameAsAScan(const std::string& root, const v1::WorkspaceRoot& state, RootWatch& watch, const ScanOptions& o) {
  watch.Drain();
  ASSERT_FALSE(watch.lost());
  auto re = Rescan(root, state, watch.dirty(), o);
  ASSERT_TRUE(re.ok()) << re.status().message();
  auto whole = Scan({root}, o);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(ManifestHash(re->manifest), ManifestHash(whole->manifest))
      << "rescan:\n" << re->manifest.DebugString() << "scan:\n" << whole->manifest.DebugString();
  EXPECT_EQ(re->files, whole->files);
  EXPECT_EQ(re->bytes, whole->bytes);
  // Its changes are the least delta: what differs between the state and a whole scan, no more.
  auto changes = RescanChanges(root, state, watch.dirty(), o);
  ASSERT_TRUE(changes.ok());
  v1::WorkspaceManifest before;
  *before.add_roots() = state;
  std::string b, n;
  const std::string bh = ManifestHash(before, &b), nh = ManifestHash(whole->manifest, &n);
  auto least = MakeDelta(bh, b, nh, n);
  ASSERT_TRUE(least.ok());
  auto paths = [](const v1::RootDelta& d) {
    std::set<std::string> put, removed;
    for (const auto& e : d.put()) put.insert(e.path());
    removed.insert(d.removed().begin(), d.removed().end());
    return std::make_pair(put, removed);
  };
  EXPECT_EQ(paths(changes->delta), paths(least->roots(0))) << changes->delta.DebugString();
}

TEST(Rescan, WhatATaskChangedIsFoundFromItsWatchAlone) {
  TempDir t;
  const std::string root = t / "ws";
  WriteFile(root + "/.tidepoolignore", "*.log\ncache/\n");
  WriteFile(root + "/train.py", "print(1)\n");
  WriteFile(root + "/data/a.bin", "aaaa");
  WriteFile(root + "/data/b.bin", "bbbb");
  WriteFile(root + "/old/x.txt", "x");
  WriteFile(root + "/old/deep/y.txt", "y");
  WriteFile(root + "/f-then-dir", "file");
  ASSERT_EQ(::symlink("train.py", (root + "/link").c_str()), 0);
  auto watch = RootWatch::Start(root);
  ASSERT_TRUE(watch.ok());
  auto first = Scan({root}, {});
  ASSERT_TRUE(first.ok());
  const v1::WorkspaceRoot state = first->manifest.roots(0);

  // What a task does: writes outputs (some ignored), edits, deletes, re-modes, relinks.
  WriteFile(root + "/out/model.bin", std::string(1000, 'm'));
  WriteFile(root + "/out/sub/metrics.json", "{}");
  WriteFile(root + "/run.log", "ignored");
  WriteFile(root + "/cache/blob", "ignored too");
  WriteFile(root + "/data/a.bin", "AAAA");
  ::unlink((root + "/data/b.bin").c_str());
  std::filesystem::remove_all(root + "/old");
  ::chmod((root + "/train.py").c_str(), 0755);
  ::unlink((root + "/link").c_str());
  ASSERT_EQ(::symlink("data/a.bin", (root + "/link").c_str()), 0);
  ::unlink((root + "/f-then-dir").c_str());
  WriteFile(root + "/f-then-dir/inside", "now a folder");
  ExpectSameAsAScan(root, state, **watch, {});
}

TEST(Rescan, AnUntouchedRootIsItsStateAndAChangedIgnoreFileAsksForAWholeScan) {
  TempDir t;
  const std::string root = t / "ws";
  WriteFile(root + "/a/b.txt", "b");
  auto watch = RootWatch::Start(root);
  ASSERT_TRUE(watch.ok());
  auto first = Scan({root}, {});
  ASSERT_TRUE(first.ok());
  ExpectSameAsAScan(root, first->manifest.roots(0), **watch, {});

  WriteFile(root + "/a/.gitignore", "*.txt\n");
  (*watch)->Drain();
  ScanOptions o;
  o.gitignore = true;
  auto re = Rescan(root, first->manifest.roots(0), (*watch)->dirty(), o);
  ASSERT_FALSE(re.ok());
  EXPECT_EQ(re.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(re.status().message().find("a/.gitignore"), std::string::npos);
}

// The contract, apart from any watch: a folder named dirty that is gone (or is a file now) takes
// everything the state had below it, named or not.
TEST(Rescan, AGoneFolderTakesEverythingBelowIt) {
  TempDir t;
  const std::string root = t / "ws";
  WriteFile(root + "/keep.txt", "k");
  WriteFile(root + "/old/x.txt", "x");
  WriteFile(root + "/old/deep/y.txt", "y");
  WriteFile(root + "/was-dir/z.txt", "z");
  auto first = Scan({root}, {});
  ASSERT_TRUE(first.ok());
  std::filesystem::remove_all(root + "/old");
  std::filesystem::remove_all(root + "/was-dir");
  WriteFile(root + "/was-dir", "a file now");
  auto re = Rescan(root, first->manifest.roots(0), {"old", "was-dir"}, {});
  ASSERT_TRUE(re.ok()) << re.status().message();
  auto whole = Scan({root}, {});
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(ManifestHash(re->manifest), ManifestHash(whole->manifest)) << re->manifest.DebugString();
  auto changes = RescanChanges(root, first->manifest.roots(0), {"old", "was-dir"}, {});
  ASSERT_TRUE(changes.ok());
  EXPECT_EQ(changes->delta.put_size(), 1);  // was-dir, a file now
  std::set<std::string> removed(changes->delta.removed().begin(), changes->delta.removed().end());
  EXPECT_EQ(removed, (std::set<std::string>{"old", "old/deep", "old/deep/y.txt", "old/x.txt", "was-dir/z.txt"}));
}

}  // namespace
}  // namespace tidepool::workspace
