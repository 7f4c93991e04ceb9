// What scan.cc and rescan.cc share: the walk of a directory and the reading of a file. Not an
// interface: only those two include it.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <atomic>
#include <thread>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/status.h"
#include "common/strings.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/hash.h"
#include "workspace/ignore.h"
#include "workspace/scan.h"

namespace tidepool::workspace::internal {

using v1::WorkspaceEntry;

// A file changed this recently (ctime) is not remembered by the stat cache: a change in the same
// tick of the kernel's coarse clock would leave size, mtime and ctime all as they were (git's
// "racily clean" entries).
constexpr int64_t kRacyNs = 50'000'000;
constexpr int kReadAttempts = 4;  // a file changing while it is read: read again up to 3 times
constexpr size_t kMaxListed = 20;

inline int64_t Ns(const struct timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

struct Item {
  std::string path;
  WorkspaceEntry::Kind kind = WorkspaceEntry::KIND_UNSPECIFIED;
  uint32_t mode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
  uint64_t ino = 0;
  std::string target, hash;
};

struct RootWalk {
  std::string root;   // absolute, no trailing '/' (but "/")
  std::string label;  // how errors name its paths: "" for the first root, else root + "/"
  std::vector<Item> items;
  std::map<std::string, uint64_t> top_bytes;  // "dir/" or "file" at the top -> bytes in it
};

inline std::string Join(const std::string& root, const std::string& rel) {
  if (rel.empty()) return root;
  return root == "/" ? "/" + rel : root + "/" + rel;
}

inline Result<std::string> ReadSmallAt(int dirfd, const char* name) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return InvalidArgument(std::strerror(errno));
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return InvalidArgument(std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Lists `rel` of `walk` as unreadable, with why.
inline void Unreadable(const RootWalk& walk, const std::string& rel, int err, std::vector<std::string>* out) {
  out->push_back(fmt::format("{}{} ({})", walk.label, rel.empty() ? walk.root : rel, std::strerror(err)));
}

// The entry for what `st` (an lstat of `name` in `dirfd`: a file, link or directory) says is
// there, a link's target read. 0, or the errno of reading the link (ENOENT or EINVAL: it went, or
// is no longer a link).
inline int FillItem(int dirfd, const char* name, const struct stat& st, Item* item) {
  item->mode = st.st_mode & 07777;
  if (S_ISREG(st.st_mode)) {
    item->kind = WorkspaceEntry::FILE;
    item->size = static_cast<uint64_t>(st.st_size);
    item->mtime_ns = Ns(st.st_mtim);
    item->ctime_ns = Ns(st.st_ctim);
    item->ino = st.st_ino;
  } else if (S_ISLNK(st.st_mode)) {
    item->kind = WorkspaceEntry::SYMLINK;
    std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
    ssize_t n;
    while ((n = ::readlinkat(dirfd, name, target.data(), target.size())) >= 0 && static_cast<size_t>(n) == target.size()) {
      target.resize(target.size() * 2);  // it grew since the lstat
    }
    if (n < 0) return errno;
    target.resize(static_cast<size_t>(n));
    item->target = std::move(target);
  } else {
    item->kind = WorkspaceEntry::DIR;
  }
  return 0;
}

class Walker {
 public:
  Walker(const ScanOptions& options, std::vector<std::string>* unreadable, IgnoreStack ignores = {})
      : opt_(options), unreadable_(unreadable), ignores_(std::move(ignores)) {}

  // A top-level folder left for another walker (Scan with threads): its name, its key, and the
  // ignore rules in force in it.
  struct Deferred {
    std::string name, key;
    IgnoreStack ignores;
  };

  // Walks the directory open as `fd` (taken), at `rel` in `walk`; `top` is the top-level key.
  // With `deferred`, the folders of the root (rel "") are not walked but listed there.
  void WalkDir(int fd, const std::string& rel, const std::string& top, RootWalk* walk,
               std::vector<Deferred>* deferred = nullptr) {
    DIR* d = ::fdopendir(fd);
    if (!d) {
      Unreadable(*walk, rel, errno);
      ::close(fd);
      return;
    }
    std::vector<std::string> names;
    bool has_tpi = false, has_gi = false;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      const char* n = e->d_name;
      if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
      names.emplace_back(n);
      if (std::strcmp(n, ".tidepoolignore") == 0) has_tpi = true;
      if (std::strcmp(n, ".gitignore") == 0) has_gi = true;
    }
    if (errno != 0) Unreadable(*walk, rel, errno);
    const size_t depth = ignores_.depth();
    if (has_gi && opt_.gitignore) PushIgnoreFile(fd, rel, ".gitignore", *walk);
    if (has_tpi) PushIgnoreFile(fd, rel, ".tidepoolignore", *walk);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string child = rel.empty() ? name : rel + "/" + name;
      struct stat st;
      if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) Unreadable(*walk, child, errno);  // gone since readdir: not there
        continue;
      }
      const bool is_dir = S_ISDIR(st.st_mode);
      if (!is_dir && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) continue;  // sockets, FIFOs, devices
      if (ignores_.depth() > 0 && ignores_.Ignored(child, is_dir)) continue;
      Item item;
      if (int err = FillItem(fd, name.c_str(), st, &item); err != 0) {
        if (err != ENOENT && err != EINVAL) Unreadable(*walk, child, err);  // else: gone, or no longer a link
        continue;
      }
      const std::string& key = rel.empty() ? (is_dir ? name + "/" : name) : top;
      if (item.kind == WorkspaceEntry::FILE) walk->top_bytes[key] += item.size;
      item.path = child;
      walk->items.push_back(std::move(item));
      if (is_dir && deferred && rel.empty()) {
        deferred->push_back({name, key, ignores_});
      } else if (is_dir) {
        int sub = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
          Unreadable(*walk, child, errno);
          continue;
        }
        WalkDir(sub, child, key, walk);
      }
    }
    ignores_.Truncate(depth);
    ::closedir(d);
  }

  // Pushes the ignore files of the directory open as `fd` at `rel` (an ancestor of what is walked next).
  void PushIgnoresOf(int fd, const std::string& rel, const RootWalk& walk) {
    struct stat st;
    if (opt_.gitignore && ::fstatat(fd, ".gitignore", &st, AT_SYMLINK_NOFOLLOW) == 0) {
      PushIgnoreFile(fd, rel, ".gitignore", walk);
    }
    if (::fstatat(fd, ".tidepoolignore", &st, AT_SYMLINK_NOFOLLOW) == 0) PushIgnoreFile(fd, rel, ".tidepoolignore", walk);
  }
  bool Ignored(const std::string& rel, bool is_dir) const { return ignores_.depth() > 0 && ignores_.Ignored(rel, is_dir); }

 private:
  void PushIgnoreFile(int fd, const std::string& rel, const char* name, const RootWalk& walk) {
    Result<std::string> text = ReadSmallAt(fd, name);
    if (!text.ok()) {
      // A symlinked ignore file is not followed (it may point anywhere); other failures are listed.
      if (errno != ELOOP) Unreadable(walk, rel.empty() ? name : rel + "/" + name, errno);
      return;
    }
    ignores_.Push(IgnoreList::Parse(rel, *text));
  }
  void Unreadable(const RootWalk& walk, const std::string& rel, int err) {
    internal::Unreadable(walk, rel, err, unreadable_);
  }

  const ScanOptions& opt_;
  std::vector<std::string>* unreadable_;
  IgnoreStack ignores_;
};

inline Status TooLarge(const std::vector<RootWalk>& walks, uint64_t total, uint64_t max) {
  std::vector<std::pair<uint64_t, std::string>> tops;
  for (const RootWalk& w : walks) {
    for (const auto& [name, bytes] : w.top_bytes) tops.emplace_back(bytes, w.label + name);
  }
  std::sort(tops.begin(), tops.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string largest;
  for (size_t i = 0; i < tops.size() && i < 3; ++i) {
    largest += fmt::format("{}{} {}", i ? ", " : "", tops[i].second, HumanBytes(tops[i].first));
  }
  return {StatusCode::kResourceExhausted,
          fmt::format("workspace too large: {} > max_bytes {} (largest: {})", HumanBytes(total), HumanBytes(max), largest)};
}

inline Status ListUnreadable(const std::vector<std::string>& unreadable) {
  std::string list;
  for (size_t i = 0; i < unreadable.size() && i < kMaxListed; ++i) list += (i ? ", " : "") + unreadable[i];
  if (unreadable.size() > kMaxListed) list += fmt::format(" and {} more", unreadable.size() - kMaxListed);
  return InvalidArgument(
      fmt::format("cannot read {} file{} in the workspace: {}", unreadable.size(), unreadable.size() == 1 ? "" : "s", list));
}

// The hash of `known`'s entry for this file, if its size and mtime are those on disk.
inline std::string KnownHash(const v1::WorkspaceRoot* known, const Item& item) {
  const WorkspaceEntry* it = known ? FindEntry(*known, item.path) : nullptr;
  if (!it || it->kind() != WorkspaceEntry::FILE) return "";
  if (it->size() != item.size || it->mtime_ns() != item.mtime_ns || !IsHash(it->hash())) return "";
  return it->hash();
}

// Hashes an open regular file to its end. A short read ends it (for a regular file that is the
// end), which saves a read per file: the fstat after it tells a file that grew meanwhile.
inline Result<FileHash> HashRegular(int fd) {
  constexpr size_t kChunk = 1 << 20;
  thread_local std::vector<char> buf(kChunk);
  Sha256 h;
  FileHash out;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(out.size));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InvalidArgument(std::strerror(errno));
    h.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    out.size += static_cast<uint64_t>(n);
    if (static_cast<size_t>(n) < buf.size()) break;
  }
  out.hash = h.FinalHex();
  return out;
}

// Reads and hashes one file; its stat fields become those of what was read. The file is
// consistent when its size, mtime, ctime and inode after the read are those seen before it was
// opened (the walk's lstat, then the previous attempt's fstat). Status: an error to list as
// unreadable (errno in *err) or a file that kept changing.
inline Status HashFile(const std::string& abs, const std::string& shown, Item* item, int* err) {
  uint64_t size = item->size, ino = item->ino;
  int64_t mtime = item->mtime_ns, ctime = item->ctime_ns;
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    // O_NONBLOCK: a FIFO put in the file's place since the walk must not block the scan.
    int fd = ::open(abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
      *err = errno;
      return InvalidArgument(std::strerror(errno));
    }
    Result<FileHash> h = HashRegular(fd);
    int hash_err = errno;
    struct stat after;
    int rc = ::fstat(fd, &after);
    ::close(fd);
    if (rc == 0 && !S_ISREG(after.st_mode)) {
      *err = EINVAL;  // no longer a regular file
      return InvalidArgument("not a regular file");
    }
    if (!h.ok()) {
      *err = hash_err;
      return h.status();
    }
    if (rc == 0 && static_cast<uint64_t>(after.st_size) == size && Ns(after.st_mtim) == mtime &&
        Ns(after.st_ctim) == ctime && after.st_ino == ino && h->size == size) {
      item->hash = std::move(h->hash);
      item->mode = after.st_mode & 07777;
      return Status::Ok();
    }
    if (rc == 0) {
      size = static_cast<uint64_t>(after.st_size);
      mtime = Ns(after.st_mtim);
      ctime = Ns(after.st_ctim);
      ino = after.st_ino;
      item->size = size;
      item->mtime_ns = mtime;
      item->ctime_ns = ctime;
      item->ino = ino;
    }
  }
  *err = 0;
  return Aborted(fmt::format("{} changed while it was read ({} times); try again once it is written", shown,
                             kReadAttempts));
}

}  // namespace tidepool::workspace::internal
