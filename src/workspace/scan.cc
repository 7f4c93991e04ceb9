#include "workspace/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/strings.h"
#include "workspace/hash.h"
#include "workspace/ignore.h"

namespace tidepool::workspace {
namespace {

using v1::WorkspaceEntry;

// A file changed this recently (ctime) is not remembered by the stat cache: a change in the same
// tick of the kernel's coarse clock would leave size, mtime and ctime all as they were (git's
// "racily clean" entries).
constexpr int64_t kRacyNs = 50'000'000;
constexpr int kReadAttempts = 4;  // a file changing while it is read: read again up to 3 times
constexpr size_t kMaxListed = 20;

int64_t Ns(const struct timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

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

std::string Join(const std::string& root, const std::string& rel) {
  if (rel.empty()) return root;
  return root == "/" ? "/" + rel : root + "/" + rel;
}

Result<std::string> ReadSmallAt(int dirfd, const char* name) {
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

class Walker {
 public:
  Walker(const ScanOptions& options, std::vector<std::string>* unreadable) : opt_(options), unreadable_(unreadable) {}

  // Walks the directory open as `fd` (taken), at `rel` in `walk`; `top` is the top-level key.
  void WalkDir(int fd, const std::string& rel, const std::string& top, RootWalk* walk) {
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
      item.mode = st.st_mode & 07777;
      const std::string& key = rel.empty() ? (is_dir ? name + "/" : name) : top;
      if (S_ISREG(st.st_mode)) {
        item.kind = WorkspaceEntry::FILE;
        item.size = static_cast<uint64_t>(st.st_size);
        item.mtime_ns = Ns(st.st_mtim);
        item.ctime_ns = Ns(st.st_ctim);
        item.ino = st.st_ino;
        walk->top_bytes[key] += item.size;
      } else if (S_ISLNK(st.st_mode)) {
        item.kind = WorkspaceEntry::SYMLINK;
        std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
        ssize_t n;
        while ((n = ::readlinkat(fd, name.c_str(), target.data(), target.size())) >= 0 &&
               static_cast<size_t>(n) == target.size()) {
          target.resize(target.size() * 2);  // it grew since the lstat
        }
        if (n < 0) {
          if (errno != ENOENT && errno != EINVAL) Unreadable(*walk, child, errno);  // else: gone, or no longer a link
          continue;
        }
        target.resize(static_cast<size_t>(n));
        item.target = std::move(target);
      } else {
        item.kind = WorkspaceEntry::DIR;
      }
      item.path = child;
      walk->items.push_back(std::move(item));
      if (is_dir) {
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
    unreadable_->push_back(fmt::format("{}{} ({})", walk.label, rel.empty() ? walk.root : rel, std::strerror(err)));
  }

  const ScanOptions& opt_;
  std::vector<std::string>* unreadable_;
  IgnoreStack ignores_;
};

Status TooLarge(const std::vector<RootWalk>& walks, uint64_t total, uint64_t max) {
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

Status ListUnreadable(const std::vector<std::string>& unreadable) {
  std::string list;
  for (size_t i = 0; i < unreadable.size() && i < kMaxListed; ++i) list += (i ? ", " : "") + unreadable[i];
  if (unreadable.size() > kMaxListed) list += fmt::format(" and {} more", unreadable.size() - kMaxListed);
  return InvalidArgument(
      fmt::format("cannot read {} file{} in the workspace: {}", unreadable.size(), unreadable.size() == 1 ? "" : "s", list));
}

// The hash of `known`'s entry for this file, if its size and mtime are those on disk.
std::string KnownHash(const v1::WorkspaceRoot* known, const Item& item) {
  if (!known) return "";
  const auto& entries = known->entries();
  auto it = std::lower_bound(entries.begin(), entries.end(), item.path,
                             [](const WorkspaceEntry& e, const std::string& p) { return e.path() < p; });
  if (it == entries.end() || it->path() != item.path || it->kind() != WorkspaceEntry::FILE) return "";
  if (it->size() != item.size || it->mtime_ns() != item.mtime_ns || !IsHash(it->hash())) return "";
  return it->hash();
}

// Hashes an open regular file to its end. A short read ends it (for a regular file that is the
// end), which saves a read per file: the fstat after it tells a file that grew meanwhile.
Result<FileHash> HashRegular(int fd) {
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
Status HashFile(const std::string& abs, const std::string& shown, Item* item, int* err) {
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

}  // namespace

std::string WorkspaceRootFor(const std::string& cwd) {
  std::string dir = cwd;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  for (std::string d = dir;;) {
    struct stat st;
    if (::lstat((d == "/" ? std::string("/.git") : d + "/.git").c_str(), &st) == 0 &&
        (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
      return d;
    }
    auto slash = d.rfind('/');
    if (slash == std::string::npos || d == "/") break;
    d = slash == 0 ? "/" : d.substr(0, slash);
  }
  return dir;
}

Result<ScanResult> Scan(const std::vector<std::string>& roots, const ScanOptions& options) {
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  const int64_t start_ns = Ns(now);
  std::vector<std::string> unreadable;
  std::vector<RootWalk> walks(roots.size());
  // 1. The walk: lstat only, so a workspace over max_bytes is refused before anything is read.
  for (size_t i = 0; i < roots.size(); ++i) {
    RootWalk& w = walks[i];
    w.root = roots[i];
    while (w.root.size() > 1 && w.root.back() == '/') w.root.pop_back();
    if (w.root.empty() || w.root[0] != '/') return InvalidArgument(fmt::format("workspace root {} is not absolute", roots[i]));
    w.label = i == 0 ? "" : w.root + "/";
    int fd = ::open(w.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return NotFound(fmt::format("workspace root {}: {}", w.root, std::strerror(errno)));
      if (errno == ENOTDIR) return InvalidArgument(fmt::format("workspace root {} is not a directory", w.root));
      return InvalidArgument(fmt::format("cannot read workspace root {}: {}", w.root, std::strerror(errno)));
    }
    struct stat st;
    ::fstat(fd, &st);
    Item root_item;
    root_item.kind = WorkspaceEntry::DIR;
    root_item.mode = st.st_mode & 07777;
    w.items.push_back(std::move(root_item));
    Walker(options, &unreadable).WalkDir(fd, "", "", &w);
  }
  ScanResult result;
  for (const RootWalk& w : walks) {
    for (const Item& it : w.items) {
      if (it.kind != WorkspaceEntry::FILE) continue;
      ++result.files;
      result.bytes += it.size;
    }
  }
  if (options.max_bytes > 0 && result.bytes > options.max_bytes) return TooLarge(walks, result.bytes, options.max_bytes);
  if (!unreadable.empty()) {
    // The scan fails: list the files that cannot be opened as well, without reading any.
    for (const RootWalk& w : walks) {
      for (const Item& it : w.items) {
        if (it.kind != WorkspaceEntry::FILE) continue;
        int fd = ::open(Join(w.root, it.path).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
          ::close(fd);
        } else if (errno != ENOENT) {
          unreadable.push_back(fmt::format("{}{} ({})", w.label, it.path, std::strerror(errno)));
        }
      }
    }
    return ListUnreadable(unreadable);
  }

  // 2. Hashes: from the stat cache, from `known`, else read.
  result.bytes = 0;
  for (RootWalk& w : walks) {
    const v1::WorkspaceRoot* known = nullptr;
    if (options.known) {
      for (const auto& r : options.known->roots()) {
        if (r.path() == w.root) known = &r;
      }
    }
    for (Item& it : w.items) {
      if (it.kind != WorkspaceEntry::FILE) continue;
      std::string abs = Join(w.root, it.path);
      if (options.stat_cache) it.hash = options.stat_cache->Lookup(abs, it.size, it.mtime_ns, it.ctime_ns, it.ino);
      if (it.hash.empty()) it.hash = KnownHash(known, it);
      if (it.hash.empty()) {
        int err = 0;
        Status s = HashFile(abs, w.label + it.path, &it, &err);
        if (!s.ok()) {
          if (err == 0) return s;
          unreadable.push_back(fmt::format("{}{} ({})", w.label, it.path, std::strerror(err)));
          continue;
        }
        result.hashed_bytes += it.size;
      }
      if (options.stat_cache && it.ctime_ns < start_ns - kRacyNs) {
        options.stat_cache->Remember(abs, it.size, it.mtime_ns, it.ctime_ns, it.ino, it.hash);
      }
      result.bytes += it.size;
      result.sources.try_emplace(it.hash, std::move(abs));
    }
  }
  if (!unreadable.empty()) return ListUnreadable(unreadable);

  // 3. The manifest: entries sorted bytewise by path (so a directory comes before its contents).
  for (RootWalk& w : walks) {
    v1::WorkspaceRoot* root = result.manifest.add_roots();
    root->set_path(w.root);
    std::sort(w.items.begin(), w.items.end(), [](const Item& a, const Item& b) { return a.path < b.path; });
    root->mutable_entries()->Reserve(static_cast<int>(w.items.size()));
    for (Item& it : w.items) {
      WorkspaceEntry* e = root->add_entries();
      e->set_path(std::move(it.path));
      e->set_kind(it.kind);
      e->set_mode(it.mode);
      if (it.kind == WorkspaceEntry::FILE) {
        e->set_size(it.size);
        e->set_mtime_ns(it.mtime_ns);
        e->set_hash(std::move(it.hash));
      } else if (it.kind == WorkspaceEntry::SYMLINK) {
        e->set_target(std::move(it.target));
      }
    }
  }
  return result;
}

std::string ManifestHash(const v1::WorkspaceManifest& m, std::string* serialized) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  std::string hash = Sha256Hex(bytes);
  if (serialized) *serialized = std::move(bytes);
  return hash;
}

}  // namespace tidepool::workspace
