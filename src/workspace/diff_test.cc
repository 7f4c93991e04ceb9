#include "workspace/diff.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "workspace/hash.h"
#include "workspace/scan.h"
#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

using testing::ReadAll;
using testing::TempDir;
using testing::WriteFile;
using v1::WorkspaceEntry;

WorkspaceEntry Dir(const std::string& path, uint32_t mode = 0755) {
  WorkspaceEntry e;
  e.set_path(path);
  e.set_kind(WorkspaceEntry::DIR);
  e.set_mode(mode);
  return e;
}

WorkspaceEntry File(const std::string& path, const std::string& content, int64_t mtime = 1) {
  WorkspaceEntry e;
  e.set_path(path);
  e.set_kind(WorkspaceEntry::FILE);
  e.set_mode(0644);
  e.set_size(content.size());
  e.set_hash(Sha256Hex(content));
  e.set_mtime_ns(mtime);
  return e;
}

v1::WorkspaceManifest Manifest(const std::string& root, const std::vector<WorkspaceEntry>& entries) {
  v1::WorkspaceManifest m;
  auto* r = m.add_roots();
  r->set_path(root);
  for (const auto& e : entries) *r->add_entries() = e;
  return m;
}

std::vector<std::string> Paths(const std::vector<Change>& changes) {
  std::vector<std::string> out;
  for (const Change& c : changes) out.push_back(c.path + (c.after ? "" : " (deleted)"));
  return out;
}

TEST(Diff, OrderCreatesParentsFirstAndDeletesContentsFirst) {
  auto before = Manifest("/w", {Dir(""), Dir("d"), File("d/x", "x"), File("f", "1"), Dir("k"), File("k/y", "y"),
                                File("same", "s", 1), File("touched", "t", 1)});
  auto after = Manifest("/w", {Dir("", 0700), File("f", "2"), File("k", "now a file"), Dir("n"), File("n/z", "z"),
                               File("same", "s", 1), File("touched", "t", 999)});  // mtime alone: no change
  std::vector<Change> changes = Diff(before, after);
  EXPECT_EQ(Paths(changes), (std::vector<std::string>{"k/y (deleted)", "d/x (deleted)", "d (deleted)", "", "f", "k",
                                                      "n", "n/z"}));
  ASSERT_EQ(changes.size(), 8u);
  EXPECT_EQ(changes[0].root, "/w");
  EXPECT_FALSE(changes[6].before.has_value());
  EXPECT_EQ(changes[5].before->kind(), WorkspaceEntry::DIR);
  EXPECT_EQ(changes[5].after->kind(), WorkspaceEntry::FILE);
  EXPECT_TRUE(Diff(before, before).empty());
}

TEST(Diff, RootsOnlyOnOneSideAreAllCreatedOrAllDeleted) {
  auto a = Manifest("/a", {Dir(""), File("f", "f")});
  auto b = Manifest("/b", {Dir(""), Dir("d")});
  std::vector<Change> changes = Diff(a, b);
  ASSERT_EQ(changes.size(), 4u);
  EXPECT_EQ(changes[0].root, "/b");
  EXPECT_EQ(Paths(changes), (std::vector<std::string>{"", "d", "f (deleted)", " (deleted)"}));
}

void SetMtime(const std::string& path, time_t sec) {
  struct timespec ts[2] = {{sec, 0}, {sec, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
}

// A tree with everything Apply has to handle, written at `root`.
void MakeTree(const std::string& root, int version) {
  WriteFile(root + "/same.txt", "unchanged");
  WriteFile(root + "/mod.txt", version == 1 ? "old content" : "new, longer content");
  WriteFile(root + "/tool", "#!/bin/sh\n", version == 1 ? 0644 : 0755);  // a mode change only
  WriteFile(root + "/sub/deep/file", "deep");
  std::filesystem::create_directories(root + "/empty-dir");
  if (version == 1) {
    WriteFile(root + "/gone.txt", "deleted in v2");
    WriteFile(root + "/dir-then-file/x", "x");
    WriteFile(root + "/file-then-dir", "f");
    ::symlink("same.txt", (root + "/link").c_str());
  } else {
    WriteFile(root + "/new/nested/\xff\xfe.bin", std::string("\0\1\2", 3));
    WriteFile(root + "/dir-then-file", "now a file");
    WriteFile(root + "/file-then-dir/y", "y");
    ::symlink("mod.txt", (root + "/link").c_str());
    ::symlink("/nowhere", (root + "/dangling").c_str());
    WriteFile(root + "/empty", "");
  }
  // The same old mtime everywhere, but for mod.txt (mtime alone is no change: see Diff).
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    if (e.is_regular_file() && !e.is_symlink()) SetMtime(e.path(), 1'600'000'000);
  }
  SetMtime(root + "/mod.txt", 1'600'000'000 + version);
}

struct Fixture {
  TempDir t;
  std::string v1 = t / "v1", v2 = t / "v2";
  BlobDir blobs = *BlobDir::Open(t / "blobs");
  v1::WorkspaceManifest m1, m2;  // m2 rewritten to v1's root

  Fixture() {
    MakeTree(v1, 1);
    MakeTree(v2, 2);
    m1 = ScanInto(v1);
    m2 = ScanInto(v2);
    m2.mutable_roots(0)->set_path(v1);
  }
  v1::WorkspaceManifest ScanInto(const std::string& root) {
    Result<ScanResult> r = Scan({root}, {});
    EXPECT_TRUE(r.ok()) << r.status().message();
    for (const auto& [hash, path] : SourcesOf(r->manifest)) EXPECT_TRUE(blobs.PutFile(hash, path).ok());
    return r->manifest;
  }
  std::string Now() { return ManifestHash(Scan({v1}, {})->manifest); }
};

TEST(Apply, MakesTheTreeMatchTheNewManifest) {
  Fixture f;
  std::vector<Change> changes = Diff(f.m1, f.m2);
  Result<ApplyResult> r = Apply(changes, f.blobs, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->conflicts.empty());
  EXPECT_EQ(r->deleted, 2u);  // gone.txt, dir-then-file/x (dir-then-file itself is replaced: written)
  EXPECT_EQ(r->written, changes.size() - 2);
  Result<ScanResult> now = Scan({f.v1}, {});
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->manifest.DebugString(), f.m2.DebugString());  // modes, mtimes, links, names: all of it
  EXPECT_EQ(ReadAll(f.v1 + "/new/nested/\xff\xfe.bin"), std::string("\0\1\2", 3));
  // Nothing temporary is left behind.
  for (const auto& e : std::filesystem::recursive_directory_iterator(f.v1)) {
    EXPECT_EQ(e.path().filename().string().find(".tidepool-tmp"), std::string::npos) << e.path();
  }
  // Applying again: everything is already there, nothing is a conflict.
  Result<ApplyResult> again = Apply(Diff(f.m1, f.m2), f.blobs, {});
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_TRUE(again->conflicts.empty());
  EXPECT_EQ(again->written + again->deleted, 0u);
}

TEST(Apply, ConflictsWithStopChangeNothing) {
  Fixture f;
  WriteFile(f.v1 + "/mod.txt", "the caller's edit");
  WriteFile(f.v1 + "/dir-then-file/mine", "the caller's new file");
  const std::string before = f.Now();
  Result<ApplyResult> r = Apply(Diff(f.m1, f.m2), f.blobs, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->conflicts, (std::vector<std::string>{f.v1 + "/dir-then-file", f.v1 + "/mod.txt"}));
  EXPECT_EQ(r->written + r->deleted, 0u);
  EXPECT_EQ(f.Now(), before);
}

TEST(Apply, TheirsTakesTheChangesAndOursKeepsTheCallersFiles) {
  {
    Fixture f;
    WriteFile(f.v1 + "/mod.txt", "the caller's edit");
    ApplyOptions theirs;
    theirs.on_conflict = OnConflict::kTheirs;
    Result<ApplyResult> r = Apply(Diff(f.m1, f.m2), f.blobs, theirs);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->conflicts, std::vector<std::string>{f.v1 + "/mod.txt"});
    EXPECT_EQ(ReadAll(f.v1 + "/mod.txt"), "new, longer content");
    EXPECT_EQ(Scan({f.v1}, {})->manifest.DebugString(), f.m2.DebugString());
  }
  {
    Fixture f;
    WriteFile(f.v1 + "/mod.txt", "the caller's edit");
    WriteFile(f.v1 + "/gone.txt", "the caller changed it; the task deleted it");
    ApplyOptions ours;
    ours.on_conflict = OnConflict::kOurs;
    Result<ApplyResult> r = Apply(Diff(f.m1, f.m2), f.blobs, ours);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->conflicts.size(), 2u);
    EXPECT_EQ(ReadAll(f.v1 + "/mod.txt"), "the caller's edit");
    EXPECT_EQ(ReadAll(f.v1 + "/gone.txt"), "the caller changed it; the task deleted it");
    EXPECT_EQ(ReadAll(f.v1 + "/new/nested/\xff\xfe.bin"), std::string("\0\1\2", 3));  // the rest is applied
    EXPECT_EQ(ReadAll(f.v1 + "/dir-then-file"), "now a file");
  }
}

TEST(Apply, AMissingBlobIsAnErrorBeforeAnythingChanges) {
  Fixture f;
  BlobDir empty = *BlobDir::Open(f.t / "empty-blobs");
  const std::string before = f.Now();
  Result<ApplyResult> r = Apply(Diff(f.m1, f.m2), empty, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(" for " + f.v1 + "/"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("is not in " + empty.dir()), std::string::npos) << r.status().message();
  EXPECT_EQ(f.Now(), before);
}

TEST(Apply, ModeOnlyChangesNeedNoBlob) {
  Fixture f;
  auto after = f.m1;
  for (auto& e : *after.mutable_roots(0)->mutable_entries()) {
    if (e.path() == "tool") e.set_mode(0700);
  }
  BlobDir empty = *BlobDir::Open(f.t / "empty-blobs");
  Result<ApplyResult> r = Apply(Diff(f.m1, after), empty, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  struct stat st;
  ASSERT_EQ(::stat((f.v1 + "/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST(Apply, NeverWritesOutsideTheRoot) {
  TempDir t;
  BlobDir blobs = *BlobDir::Open(t / "blobs");
  ASSERT_TRUE(blobs.Append(Sha256Hex("evil"), 0, "evil", true).ok());
  std::filesystem::create_directories(t / "root");
  std::filesystem::create_directories(t / "outside");
  ::symlink((t / "outside").c_str(), (t / "root/link").c_str());
  ApplyOptions agent;
  agent.check_current = false;
  Result<ApplyResult> dotdot = Apply({{t / "root", "../outside/x", std::nullopt, File("../outside/x", "evil")}}, blobs, agent);
  EXPECT_EQ(dotdot.status().code(), StatusCode::kInvalidArgument);
  Result<ApplyResult> via_link = Apply({{t / "root", "link/x", std::nullopt, File("link/x", "evil")}}, blobs, agent);
  EXPECT_FALSE(via_link.ok());
  EXPECT_FALSE(std::filesystem::exists(t / "outside/x"));
}

TEST(Apply, RoundTripIntoAnotherRootWhoseParentsDoNotExist) {
  TempDir t;
  MakeTree(t / "a", 2);
  BlobDir blobs = *BlobDir::Open(t / "blobs");
  Result<ScanResult> a = Scan({t / "a"}, {});
  ASSERT_TRUE(a.ok());
  for (const auto& [hash, path] : SourcesOf(a->manifest)) ASSERT_TRUE(blobs.PutFile(hash, path).ok());
  v1::WorkspaceManifest m = a->manifest;
  const std::string b = t / "not/yet/b";
  m.mutable_roots(0)->set_path(b);
  Result<ApplyResult> r = Apply(Diff({}, m), blobs, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->written, static_cast<uint64_t>(m.roots(0).entries_size()));
  Result<ScanResult> scanned = Scan({b}, {});
  ASSERT_TRUE(scanned.ok());
  EXPECT_EQ(scanned->manifest.DebugString(), m.DebugString());
  EXPECT_EQ(ManifestHash(scanned->manifest), ManifestHash(m));
}

TEST(Apply, ChownsWhatItCreatesWhenAsked) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown to another user needs root";
  TempDir t;
  BlobDir blobs = *BlobDir::Open(t / "blobs");
  ASSERT_TRUE(blobs.Append(Sha256Hex("x"), 0, "x", true).ok());
  v1::WorkspaceEntry link;
  link.set_path("d/l");
  link.set_kind(WorkspaceEntry::SYMLINK);
  link.set_target("f");
  auto m = Manifest(t / "r", {Dir(""), Dir("d"), File("d/f", "x"), link});
  ApplyOptions opt;
  opt.uid = 65534;
  opt.gid = 65534;
  ASSERT_TRUE(Apply(Diff({}, m), blobs, opt).ok());
  for (const char* p : {"r", "r/d", "r/d/f", "r/d/l"}) {
    struct stat st;
    ASSERT_EQ(::lstat((t / p).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u) << p;
    EXPECT_EQ(st.st_gid, 65534u) << p;
  }
}

}  // namespace
}  // namespace tidepool::workspace

namespace tidepool::workspace {
namespace {

TEST(Apply, ADeletedDirectoryHoldingTheCallersNewFile) {
  for (OnConflict mode : {OnConflict::kStop, OnConflict::kOurs, OnConflict::kTheirs}) {
    TempDir t;
    WriteFile(t / "r/d/x", "the task deletes this");
    BlobDir blobs = *BlobDir::Open(t / "blobs");
    v1::WorkspaceManifest before = Scan({t / "r"}, {})->manifest;
    v1::WorkspaceManifest after = before;
    after.mutable_roots(0)->mutable_entries()->DeleteSubrange(1, 2);  // "d" and "d/x"
    ASSERT_EQ(after.roots(0).entries_size(), 1);
    WriteFile(t / "r/d/mine", "the caller's new file");
    ApplyOptions opt;
    opt.on_conflict = mode;
    Result<ApplyResult> r = Apply(Diff(before, after), blobs, opt);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->conflicts, std::vector<std::string>{t / "r/d"});
    if (mode == OnConflict::kTheirs) {
      EXPECT_FALSE(std::filesystem::exists(t / "r/d"));
    } else {
      EXPECT_EQ(ReadAll(t / "r/d/mine"), "the caller's new file");
      EXPECT_EQ(std::filesystem::exists(t / "r/d/x"), mode == OnConflict::kStop);
    }
  }
}

}  // namespace
}  // namespace tidepool::workspace

namespace tidepool::workspace {
namespace {

TEST(Apply, OursSkipsWhatTheTaskPutInsideAPathTheCallerTookOver) {
  TempDir t;
  BlobDir blobs = *BlobDir::Open(t / "blobs");
  ASSERT_TRUE(blobs.Append(Sha256Hex("task"), 0, "task", true).ok());
  std::filesystem::create_directories(t / "r");
  auto before = Manifest(t / "r", {Dir("")});
  auto after = Manifest(t / "r", {Dir(""), Dir("n"), File("n/f", "task"), File("other", "task")});
  WriteFile(t / "r/n", "the caller made n a file");
  Result<ApplyResult> stop = Apply(Diff(before, after), blobs, {});
  ASSERT_TRUE(stop.ok());
  EXPECT_EQ(stop->conflicts, std::vector<std::string>{t / "r/n"});
  EXPECT_FALSE(std::filesystem::exists(t / "r/other"));
  ApplyOptions ours;
  ours.on_conflict = OnConflict::kOurs;
  Result<ApplyResult> r = Apply(Diff(before, after), blobs, ours);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(ReadAll(t / "r/n"), "the caller made n a file");
  EXPECT_EQ(ReadAll(t / "r/other"), "task");
}

}  // namespace
}  // namespace tidepool::workspace
