#include "workspace/scan.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "workspace/hash.h"
#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

using testing::TempDir;
using testing::WriteFile;
using v1::WorkspaceEntry;

// Files younger than this are not remembered by a stat cache (scan.cc: kRacyNs).
void LetTheCacheTrustThem() { std::this_thread::sleep_for(std::chrono::milliseconds(60)); }

const WorkspaceEntry* Find(const v1::WorkspaceRoot& r, const std::string& path) {
  for (const auto& e : r.entries()) {
    if (e.path() == path) return &e;
  }
  return nullptr;
}

TEST(Scan, ReadsEveryKindOfEntryInBytewiseOrder) {
  TempDir t;
  const std::string root = t / "ws";
  std::string binary("\0\x01\xff\n\r\0", 6);
  WriteFile(root + "/bin.dat", binary);
  WriteFile(root + "/run.sh", "#!/bin/sh\n", 0755);
  WriteFile(root + "/empty", "");
  WriteFile(root + "/\xff\xfe.bin", "not utf-8");
  WriteFile(root + "/a/b.txt", "b");
  WriteFile(root + "/a-c", "sorts between a and a/b.txt");
  WriteFile(root + "/.git/HEAD", "ref: refs/heads/main\n");
  WriteFile(root + "/node_modules/x.js", "ignored");
  WriteFile(root + "/.tidepoolignore", "node_modules/\n*.log\n");
  WriteFile(root + "/a/debug.log", "ignored too");
  ASSERT_EQ(::symlink("a/b.txt", (root + "/link").c_str()), 0);
  ASSERT_EQ(::symlink("/nonexistent/target", (root + "/dangling").c_str()), 0);
  ASSERT_EQ(::mkfifo((root + "/fifo").c_str(), 0644), 0);
  ::chmod((root + "/a").c_str(), 0750);

  Result<ScanResult> r = Scan({root}, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->manifest.roots_size(), 1);
  const v1::WorkspaceRoot& m = r->manifest.roots(0);
  EXPECT_EQ(m.path(), root);
  std::vector<std::string> paths;
  for (const auto& e : m.entries()) paths.push_back(e.path());
  std::vector<std::string> want = {"",     ".git",  ".git/HEAD", ".tidepoolignore", "a",       "a-c", "a/b.txt",
                                   "bin.dat", "dangling", "empty", "link", "run.sh", "\xff\xfe.bin"};
  EXPECT_EQ(paths, want);

  EXPECT_EQ(m.entries(0).kind(), WorkspaceEntry::DIR);
  const WorkspaceEntry* bin = Find(m, "bin.dat");
  ASSERT_TRUE(bin);
  EXPECT_EQ(bin->kind(), WorkspaceEntry::FILE);
  EXPECT_EQ(bin->size(), 6u);
  EXPECT_EQ(bin->hash(), Sha256Hex(binary));
  EXPECT_EQ(bin->mode(), 0644u);
  struct stat st;
  ASSERT_EQ(::lstat((root + "/bin.dat").c_str(), &st), 0);
  EXPECT_EQ(bin->mtime_ns(), int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec);
  EXPECT_EQ(Find(m, "run.sh")->mode(), 0755u);
  EXPECT_EQ(Find(m, "a")->mode(), 0750u);
  EXPECT_EQ(Find(m, "a")->kind(), WorkspaceEntry::DIR);
  EXPECT_EQ(Find(m, "empty")->size(), 0u);
  EXPECT_EQ(Find(m, "empty")->hash(), Sha256Hex(""));
  EXPECT_EQ(Find(m, "\xff\xfe.bin")->hash(), Sha256Hex("not utf-8"));
  EXPECT_EQ(Find(m, "link")->kind(), WorkspaceEntry::SYMLINK);
  EXPECT_EQ(Find(m, "link")->target(), "a/b.txt");
  EXPECT_EQ(Find(m, "dangling")->kind(), WorkspaceEntry::SYMLINK);
  EXPECT_EQ(Find(m, "dangling")->target(), "/nonexistent/target");

  EXPECT_EQ(r->files, 8u);
  EXPECT_EQ(r->bytes, r->hashed_bytes);
  EXPECT_EQ(SourcesOf(r->manifest).at(Sha256Hex(binary)), root + "/bin.dat");
  EXPECT_EQ(SourcesOf(r->manifest).at(Sha256Hex("not utf-8")), root + "/\xff\xfe.bin");
}

TEST(Scan, GitignoreCountsOnlyWithTheOptionAndNestedFilesApplyBelowThem) {
  TempDir t;
  WriteFile(t / ".gitignore", "*.pyc\n");
  WriteFile(t / "x.pyc", "1");
  WriteFile(t / "sub/.tidepoolignore", "secret\n!x.pyc\n");
  WriteFile(t / "sub/secret", "s");
  WriteFile(t / "sub/x.pyc", "2");
  WriteFile(t / "secret", "not below sub");
  Result<ScanResult> plain = Scan({t.path()}, {});
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  EXPECT_TRUE(Find(plain->manifest.roots(0), "x.pyc"));
  EXPECT_FALSE(Find(plain->manifest.roots(0), "sub/secret"));
  EXPECT_TRUE(Find(plain->manifest.roots(0), "secret"));
  ScanOptions opt;
  opt.gitignore = true;
  Result<ScanResult> git = Scan({t.path()}, opt);
  ASSERT_TRUE(git.ok()) << git.status().message();
  EXPECT_FALSE(Find(git->manifest.roots(0), "x.pyc"));
  EXPECT_TRUE(Find(git->manifest.roots(0), "sub/x.pyc"));  // re-included by the deeper file
  EXPECT_TRUE(Find(git->manifest.roots(0), ".gitignore"));
}

TEST(Scan, StatCacheMeansAnUnchangedFileIsNotReadAgain) {
  TempDir t;
  WriteFile(t / "ws/a", std::string(1000, 'a'));
  WriteFile(t / "ws/d/b", std::string(2000, 'b'));
  LetTheCacheTrustThem();
  const std::string cache_path = t / "cache/stat";
  StatCache cache = StatCache::Load(cache_path);  // missing: empty
  ScanOptions opt;
  opt.stat_cache = &cache;
  Result<ScanResult> first = Scan({t / "ws"}, opt);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(first->hashed_bytes, 3000u);
  ASSERT_TRUE(cache.Save().ok());

  StatCache loaded = StatCache::Load(cache_path);
  opt.stat_cache = &loaded;
  Result<ScanResult> second = Scan({t / "ws"}, opt);
  ASSERT_TRUE(second.ok()) << second.status().message();
  EXPECT_EQ(second->hashed_bytes, 0u);
  EXPECT_EQ(second->bytes, 3000u);
  EXPECT_EQ(ManifestHash(second->manifest), ManifestHash(first->manifest));

  WriteFile(t / "ws/d/b", std::string(2000, 'c'));  // same size, new content
  Result<ScanResult> third = Scan({t / "ws"}, opt);
  ASSERT_TRUE(third.ok()) << third.status().message();
  EXPECT_EQ(third->hashed_bytes, 2000u);
  EXPECT_EQ(Find(third->manifest.roots(0), "d/b")->hash(), Sha256Hex(std::string(2000, 'c')));
}

TEST(Scan, ADamagedStatCacheIsAnEmptyOne) {
  TempDir t;
  WriteFile(t / "ws/a", "aaa");
  LetTheCacheTrustThem();
  StatCache cache = StatCache::Load(t / "stat");
  ScanOptions opt;
  opt.stat_cache = &cache;
  ASSERT_TRUE(Scan({t / "ws"}, opt).ok());
  ASSERT_TRUE(cache.Save().ok());
  std::string good = testing::ReadAll(t / "stat");
  const std::string h = Sha256Hex("aaa");
  EXPECT_EQ(StatCache::Load(t / "stat").Lookup(t / "ws/a", 3, Find(Scan({t / "ws"}, {})->manifest.roots(0), "a")->mtime_ns(),
                                               0, 0),
            "");  // a different ctime/inode is a miss
  for (std::string bad : {good.substr(0, good.size() / 2), std::string("garbage"), std::string()}) {
    WriteFile(t / "stat", bad);
    StatCache damaged = StatCache::Load(t / "stat");
    opt.stat_cache = &damaged;
    Result<ScanResult> r = Scan({t / "ws"}, opt);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->hashed_bytes, 3u);
  }
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x40;
  WriteFile(t / "stat", flipped);
  StatCache damaged = StatCache::Load(t / "stat");
  opt.stat_cache = &damaged;
  EXPECT_EQ(Scan({t / "ws"}, opt)->hashed_bytes, 3u);
  WriteFile(t / "stat", good);  // and the good one still works
  StatCache restored = StatCache::Load(t / "stat");
  opt.stat_cache = &restored;
  EXPECT_EQ(Scan({t / "ws"}, opt)->hashed_bytes, 0u);
}

TEST(Scan, KnownEntriesWithTheSameSizeAndMtimeAreNotRead) {
  TempDir t;
  WriteFile(t / "a", "content a");
  WriteFile(t / "b", "content b");
  Result<ScanResult> first = Scan({t.path()}, {});
  ASSERT_TRUE(first.ok());
  ScanOptions opt;
  opt.known = &first->manifest;
  Result<ScanResult> second = Scan({t.path()}, opt);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->hashed_bytes, 0u);
  WriteFile(t / "b", "CONTENT B!");  // another size
  Result<ScanResult> third = Scan({t.path()}, opt);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->hashed_bytes, 10u);
  EXPECT_EQ(Find(third->manifest.roots(0), "b")->hash(), Sha256Hex("CONTENT B!"));
  // The known manifest of another root says nothing about this one.
  v1::WorkspaceManifest other = first->manifest;
  other.mutable_roots(0)->set_path("/elsewhere");
  opt.known = &other;
  EXPECT_EQ(Scan({t.path()}, opt)->hashed_bytes, 19u);
}

// Runs `fn` as an unprivileged user when this process is root (root reads everything).
std::string AsUnprivileged(const std::function<std::string()>& fn) {
  if (::geteuid() != 0) return fn();
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string out = (::setgid(65534) == 0 && ::setuid(65534) == 0) ? fn() : "setuid failed";
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  return out;
}

TEST(Scan, UnreadableFilesAndDirectoriesAreListed) {
  TempDir t;
  ::chmod(t.path().c_str(), 0755);
  WriteFile(t / "ok", "fine");
  WriteFile(t / "secret/x", "x");
  WriteFile(t / "d/private.key", "k", 0600);
  ::chmod((t / "secret").c_str(), 0700);
  ::chmod((t / "d/private.key").c_str(), 0000);
  std::string msg = AsUnprivileged([&] {
    Result<ScanResult> r = Scan({t.path()}, {});
    return r.ok() ? std::string("ok") : r.status().message();
  });
  EXPECT_NE(msg.find("cannot read 2 files in the workspace: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("secret (Permission denied)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("d/private.key (Permission denied)"), std::string::npos) << msg;
}

TEST(Scan, ManyUnreadableFilesAreCountedBeyondTwenty) {
  TempDir t;
  ::chmod(t.path().c_str(), 0755);
  for (int i = 0; i < 25; ++i) WriteFile(t / ("f" + std::to_string(100 + i)), "x", 0000);
  std::string msg = AsUnprivileged([&] {
    Result<ScanResult> r = Scan({t.path()}, {});
    return r.ok() ? std::string("ok") : r.status().message();
  });
  EXPECT_NE(msg.find("cannot read 25 files"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f119 (Permission denied) and 5 more"), std::string::npos) << msg;
}

TEST(Scan, OverMaxBytesFailsBeforeReadingNamingTheLargestFolders) {
  TempDir t;
  WriteFile(t / "data/big", std::string(3 << 20, 'd'));
  WriteFile(t / "data/sub/more", std::string(1 << 19, 'd'));
  WriteFile(t / "src/main.c", std::string(200 << 10, 's'));
  WriteFile(t / "top.bin", std::string(10, 't'));
  WriteFile(t / "small/x", "x");
  ScanOptions opt;
  opt.max_bytes = 2 << 20;
  Result<ScanResult> r = Scan({t.path()}, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.status().message(),
            "workspace too large: 3.7 MiB > max_bytes 2 MiB (largest: data/ 3.5 MiB, src/ 200 KiB, top.bin 10 B)");
  opt.max_bytes = 4 << 20;
  EXPECT_TRUE(Scan({t.path()}, opt).ok());
}

TEST(Scan, AFileThatKeepsChangingFailsTheScanNamingIt) {
  TempDir t;
  WriteFile(t / "growing.log", std::string(16 << 20, 'g'));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    int fd = ::open((t / "growing.log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    while (!stop) {
      (void)!::write(fd, "more\n", 5);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ::close(fd);
  });
  Result<ScanResult> r = Scan({t.path()}, {});
  stop = true;
  writer.join();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("growing.log changed while it was read"), std::string::npos)
      << r.status().message();
}

TEST(Scan, RootsMustBeDirectories) {
  TempDir t;
  WriteFile(t / "file", "x");
  Result<ScanResult> missing = Scan({t / "nope"}, {});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(t / "nope"), std::string::npos);
  Result<ScanResult> file = Scan({t / "file"}, {});
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find(t / "file"), std::string::npos);
}

TEST(Scan, SeveralRootsInInputOrder) {
  TempDir t;
  WriteFile(t / "b/x", "x");
  WriteFile(t / "a/y", "y");
  Result<ScanResult> r = Scan({t / "b", t / "a/"}, {});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->manifest.roots_size(), 2);
  EXPECT_EQ(r->manifest.roots(0).path(), t / "b");
  EXPECT_EQ(r->manifest.roots(1).path(), t / "a");
  EXPECT_EQ(r->files, 2u);
}

TEST(Scan, ManifestHashIsStableAndFollowsContent) {
  TempDir t;
  WriteFile(t / "a", "one");
  WriteFile(t / "d/b", "two");
  std::string serialized;
  const std::string h1 = ManifestHash(Scan({t.path()}, {})->manifest, &serialized);
  EXPECT_TRUE(IsHash(h1));
  EXPECT_EQ(h1, Sha256Hex(serialized));
  EXPECT_EQ(ManifestHash(Scan({t.path()}, {})->manifest), h1);
  v1::WorkspaceManifest parsed;
  ASSERT_TRUE(parsed.ParseFromString(serialized));
  EXPECT_EQ(ManifestHash(parsed), h1);
  WriteFile(t / "d/b", "TWO");
  EXPECT_NE(ManifestHash(Scan({t.path()}, {})->manifest), h1);
}

TEST(Scan, WorkspaceRootIsTheEnclosingGitWorkTree) {
  TempDir t;
  WriteFile(t / "repo/.git/HEAD", "x");
  WriteFile(t / "repo/src/deep/f", "x");
  WriteFile(t / "wt/.git", "gitdir: /elsewhere\n");  // a worktree's .git is a file
  WriteFile(t / "wt/sub/f", "x");
  WriteFile(t / "plain/sub/f", "x");
  EXPECT_EQ(WorkspaceRootFor(t / "repo/src/deep"), t / "repo");
  EXPECT_EQ(WorkspaceRootFor(t / "repo"), t / "repo");
  EXPECT_EQ(WorkspaceRootFor(t / "wt/sub/"), t / "wt");
  EXPECT_EQ(WorkspaceRootFor(t / "plain/sub"), t / "plain/sub");
}

}  // namespace
}  // namespace tidepool::workspace

namespace tidepool::workspace {
namespace {

// The client's scan shares the root's folders out among two walkers: the manifest, the totals and
// the ignore rules (the root's own and deeper ones) must be exactly those of one walker.
TEST(Scan, TwoWalkersGiveWhatOneGives) {
  TempDir t;
  const std::string root = t / "ws";
  WriteFile(root + "/.tidepoolignore", "*.log\nbuild/\n");
  WriteFile(root + "/top.txt", "top");
  for (int d = 0; d < 12; ++d) {
    const std::string dir = root + "/d" + std::to_string(d);
    for (int f = 0; f < 20; ++f) WriteFile(dir + "/f" + std::to_string(f), std::to_string(d * 100 + f));
    WriteFile(dir + "/run.log", "ignored by the root's rule");
    WriteFile(dir + "/sub/deep.txt", "deep");
  }
  WriteFile(root + "/d3/.tidepoolignore", "sub/\n");
  WriteFile(root + "/build/out.o", "ignored folder");
  ASSERT_EQ(::symlink("d1", (root + "/link-to-dir").c_str()), 0);
  ScanOptions one, two;
  two.threads = 2;
  auto a = Scan({root, t / "ws/d5"}, one);
  auto b = Scan({root, t / "ws/d5"}, two);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(ManifestHash(a->manifest), ManifestHash(b->manifest));
  EXPECT_EQ(a->files, b->files);
  EXPECT_EQ(a->bytes, b->bytes);
  EXPECT_EQ(Find(b->manifest.roots(0), "d3/sub"), nullptr);     // d3's own rule
  EXPECT_EQ(Find(b->manifest.roots(0), "d4/run.log"), nullptr);  // the root's rule, in a helper's folder
  EXPECT_NE(Find(b->manifest.roots(0), "d4/sub/deep.txt"), nullptr);
}

}  // namespace
}  // namespace tidepool::workspace
