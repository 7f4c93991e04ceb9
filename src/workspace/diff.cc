#include "workspace/diff.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/random.h"
#include "workspace/hash.h"

namespace tidepool::workspace {
namespace {

using v1::WorkspaceEntry;
using v1::WorkspaceRoot;

bool SameEntry(const WorkspaceEntry& a, const WorkspaceEntry& b) {
  if (a.kind() != b.kind() || a.mode() != b.mode()) return false;
  if (a.kind() == WorkspaceEntry::FILE) return a.hash() == b.hash() && a.size() == b.size();
  if (a.kind() == WorkspaceEntry::SYMLINK) return a.target() == b.target();
  return true;
}

std::vector<const WorkspaceEntry*> Sorted(const WorkspaceRoot* r) {
  std::vector<const WorkspaceEntry*> v;
  if (!r) return v;
  for (const auto& e : r->entries()) v.push_back(&e);
  std::stable_sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->path() < b->path(); });
  return v;
}

// ---- Apply ----

std::string Shown(const Change& c) { return c.path.empty() ? c.root : c.root + "/" + c.path; }


class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The directory holding ROOT/PATH, opened component by component without following a symlink
// below the root (a manifest must never write outside its root). `create`: missing directories
// are made 0755. Sets *name to the last component; errno is kept for the caller on failure.
Result<Fd> OpenParent(const std::string& root, const std::string& path, bool create, std::string* name) {
  std::string dir = root;
  std::string rest = path;
  if (path.empty()) {  // the root itself: its parent is followed as the caller gave it
    auto slash = root.rfind('/');
    dir = slash == 0 ? "/" : root.substr(0, slash);
    *name = root.substr(slash + 1);
    if (create && !PathExists(dir)) {
      Status s = MakeDirs(dir, 0755);
      if (!s.ok()) return s;
    }
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return NotFound(fmt::format("{}: {}", dir, std::strerror(errno)));
    return Fd(fd);
  }
  if (create && !PathExists(root)) {
    Status s = MakeDirs(root, 0755);
    if (!s.ok()) return s;
  }
  Fd cur(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cur.get() < 0) return NotFound(fmt::format("{}: {}", root, std::strerror(errno)));
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) break;
    std::string part = path.substr(start, slash - start);
    int fd = ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur.get(), part.c_str(), 0755) != 0 && errno != EEXIST) break;
      fd = ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      int err = errno == ELOOP ? ENOTDIR : errno;
      std::string shown = root + "/" + path.substr(0, slash);
      errno = err;
      return NotFound(fmt::format("{}: {}", shown, std::strerror(err)));
    }
    cur = Fd(fd);
    start = slash + 1;
  }
  *name = path.substr(start);
  return cur;
}

// What is on disk at one path.
struct Current {
  bool exists = false;
  struct stat st {};
  std::string target;  // a symlink's
  std::string hash;    // a file's, computed when needed
};

Current Look(const Change& c) {
  Current cur;
  std::string name;
  Result<Fd> parent = OpenParent(c.root, c.path, false, &name);
  if (!parent.ok() || ::fstatat(parent->get(), name.c_str(), &cur.st, AT_SYMLINK_NOFOLLOW) != 0) return cur;
  cur.exists = true;
  if (S_ISLNK(cur.st.st_mode)) {
    std::string t(static_cast<size_t>(cur.st.st_size) + 256, '\0');
    ssize_t n = ::readlinkat(parent->get(), name.c_str(), t.data(), t.size());
    t.resize(n > 0 ? static_cast<size_t>(n) : 0);
    cur.target = std::move(t);
  }
  return cur;
}

bool Matches(const Change& c, Current* cur, const std::optional<WorkspaceEntry>& e) {
  if (!e) return !cur->exists;
  if (!cur->exists) return false;
  switch (e->kind()) {
    case WorkspaceEntry::DIR:
      return S_ISDIR(cur->st.st_mode);
    case WorkspaceEntry::SYMLINK:
      return S_ISLNK(cur->st.st_mode) && cur->target == e->target();
    case WorkspaceEntry::FILE: {
      if (!S_ISREG(cur->st.st_mode) || static_cast<uint64_t>(cur->st.st_size) != e->size()) return false;
      if (int64_t{cur->st.st_mtim.tv_sec} * 1'000'000'000 + cur->st.st_mtim.tv_nsec == e->mtime_ns()) return true;
      if (cur->hash.empty()) {
        std::string name;
        Result<Fd> parent = OpenParent(c.root, c.path, false, &name);
        if (!parent.ok()) return false;
        Fd fd(::openat(parent->get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (fd.get() < 0) return false;
        Result<FileHash> h = HashFd(fd.get());
        if (!h.ok()) return false;
        cur->hash = h->hash;
      }
      return cur->hash == e->hash();
    }
    default:
      return false;
  }
}

// True when every entry of the directory at `c` is deleted by a change (else removing the
// directory would remove something no change names: someone else's file).
bool OnlyDeletedInside(const Change& c, const std::set<std::pair<std::string, std::string>>& deleted) {
  std::string name;
  Result<Fd> parent = OpenParent(c.root, c.path, false, &name);
  if (!parent.ok()) return true;
  int fd = ::openat(parent->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return true;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return false;
  }
  bool ok = true;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (!deleted.count({c.root, c.path.empty() ? n : c.path + "/" + n})) ok = false;
  }
  ::closedir(d);
  return ok;
}

// Removes `name` in `dirfd`: a directory with everything in it when `recursive`, else only if empty.
int Remove(int dirfd, const std::string& name, bool recursive) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : errno;
  if (!S_ISDIR(st.st_mode)) return ::unlinkat(dirfd, name.c_str(), 0) == 0 ? 0 : errno;
  if (recursive) {
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno;
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return errno;
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
    }
    for (const std::string& n : names) {
      if (int err = Remove(::dirfd(d), n, true)) {
        ::closedir(d);
        return err;
      }
    }
    ::closedir(d);
  }
  return ::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0 ? 0 : errno;
}

// Copies blob `hash` into `out`; returns the bytes copied or an errno.
Result<uint64_t> CopyBlob(const BlobDir& blobs, const std::string& hash, int out) {
  Fd in(::open(blobs.PathOf(hash).c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return NotFound(fmt::format("blob {}: {}", hash, std::strerror(errno)));
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out, nullptr, 1 << 30, 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) break;
    if (n < 0) return Internal(std::strerror(errno));
    if (n == 0) return total;
    total += static_cast<uint64_t>(n);
  }
  std::string buf(1 << 20, '\0');  // copy_file_range refused: plain reads and writes
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal(std::strerror(errno));
    if (n == 0) return total;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return Internal(std::strerror(errno));
      done += w;
    }
    total += static_cast<uint64_t>(n);
  }
}

class Applier {
 public:
  Applier(const BlobDir& blobs, const ApplyOptions& opt) : blobs_(blobs), opt_(opt) {}

  Status Do(const Change& c, bool recursive, bool in_place) {
    std::string name;
    const bool deleting = !c.after.has_value();
    Result<int> parent = Parent(c, !deleting, &name);
    if (!parent.ok()) {
      if (deleting) return Status::Ok();  // its directory is gone: so is it
      return Internal(fmt::format("cannot write {}: {}", Shown(c), parent.status().message()));
    }
    const int dfd = *parent;
    struct stat st;
    const bool exists = ::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && S_ISDIR(st.st_mode)) stale_ = true;  // a directory may go: the one kept open may be in it
    if (deleting) {
      int err = Remove(dfd, name, recursive);
      if (err == ENOTEMPTY && !recursive) return Status::Ok();  // it holds what was kept
      if (err) return Internal(fmt::format("cannot delete {}: {}", Shown(c), std::strerror(err)));
      ++deleted_;
      return Status::Ok();
    }
    const WorkspaceEntry& e = *c.after;
    ++written_;
    if (e.kind() == WorkspaceEntry::DIR) {
      if (exists && !S_ISDIR(st.st_mode)) ::unlinkat(dfd, name.c_str(), 0);
      if (!exists || !S_ISDIR(st.st_mode)) {
        if (::mkdirat(dfd, name.c_str(), 0700) != 0) {
          return Internal(fmt::format("cannot create directory {}: {}", Shown(c), std::strerror(errno)));
        }
        if (opt_.uid >= 0) {
          ::fchownat(dfd, name.c_str(), static_cast<uid_t>(opt_.uid), static_cast<gid_t>(opt_.gid), AT_SYMLINK_NOFOLLOW);
        }
      }
      if (::fchmodat(dfd, name.c_str(), e.mode() & 07777, 0) != 0) {
        return Internal(fmt::format("cannot set the mode of {}: {}", Shown(c), std::strerror(errno)));
      }
      return Status::Ok();
    }
    if (in_place && exists && S_ISREG(st.st_mode)) return SetModeAndTime(dfd, name, e, Shown(c));
    const std::string tmp = ".tidepool-tmp-" + RandomId(10);
    if (e.kind() == WorkspaceEntry::SYMLINK) {
      if (::symlinkat(e.target().c_str(), dfd, tmp.c_str()) != 0) {
        return Internal(fmt::format("cannot create symlink {}: {}", Shown(c), std::strerror(errno)));
      }
      if (opt_.uid >= 0) {
        ::fchownat(dfd, tmp.c_str(), static_cast<uid_t>(opt_.uid), static_cast<gid_t>(opt_.gid), AT_SYMLINK_NOFOLLOW);
      }
    } else {
      Status s = WriteFile(dfd, tmp, e, Shown(c));
      if (!s.ok()) return s;
    }
    if (exists && S_ISDIR(st.st_mode)) {
      if (int err = Remove(dfd, name, recursive)) {
        ::unlinkat(dfd, tmp.c_str(), 0);
        if (err == ENOTEMPTY && !recursive) return Status::Ok();  // it holds what was kept
        return Internal(fmt::format("cannot replace directory {}: {}", Shown(c), std::strerror(err)));
      }
    }
    if (::renameat(dfd, tmp.c_str(), dfd, name.c_str()) != 0) {
      int err = errno;
      ::unlinkat(dfd, tmp.c_str(), 0);
      return Internal(fmt::format("cannot write {}: {}", Shown(c), std::strerror(err)));
    }
    return Status::Ok();
  }

  uint64_t written() const { return written_; }
  uint64_t deleted() const { return deleted_; }

 private:
  static struct timespec Timespec(int64_t ns) {
    struct timespec ts = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    if (ts.tv_nsec < 0) {
      ts.tv_nsec += 1'000'000'000;
      ts.tv_sec -= 1;
    }
    return ts;
  }

  Status SetModeAndTime(int dfd, const std::string& name, const WorkspaceEntry& e, const std::string& shown) {
    if (::fchmodat(dfd, name.c_str(), e.mode() & 07777, 0) != 0) {
      return Internal(fmt::format("cannot set the mode of {}: {}", shown, std::strerror(errno)));
    }
    if (opt_.set_mtime) {
      struct timespec ts[2] = {{0, UTIME_NOW}, Timespec(e.mtime_ns())};
      ::utimensat(dfd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
    return Status::Ok();
  }

  Status WriteFile(int dfd, const std::string& tmp, const WorkspaceEntry& e, const std::string& shown) {
    Fd out(::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (out.get() < 0) return Internal(fmt::format("cannot write {}: {}", shown, std::strerror(errno)));
    Result<uint64_t> n = CopyBlob(blobs_, e.hash(), out.get());
    Status s;
    if (!n.ok()) {
      s = Internal(fmt::format("cannot write {}: {}", shown, n.status().message()));
    } else if (*n != e.size()) {
      s = Internal(fmt::format("cannot write {}: blob {} has {} bytes, the manifest says {}", shown, e.hash(), *n, e.size()));
    } else if (opt_.uid >= 0 && ::fchown(out.get(), static_cast<uid_t>(opt_.uid), static_cast<gid_t>(opt_.gid)) != 0) {
      s = Internal(fmt::format("cannot chown {}: {}", shown, std::strerror(errno)));
    } else if (::fchmod(out.get(), e.mode() & 07777) != 0) {  // after fchown, which clears setuid bits
      s = Internal(fmt::format("cannot set the mode of {}: {}", shown, std::strerror(errno)));
    } else if (opt_.set_mtime) {
      struct timespec ts[2] = {{0, UTIME_NOW}, Timespec(e.mtime_ns())};
      ::futimens(out.get(), ts);
    }
    if (!s.ok()) ::unlinkat(dfd, tmp.c_str(), 0);
    return s;
  }

  // The directory of `c`, open: the last one is kept, as changes come in path order and most
  // follow one another in one directory (a path walk and two opens fewer per file).
  Result<int> Parent(const Change& c, bool create, std::string* name) {
    const size_t slash = c.path.rfind('/');
    // "/" (no relative folder is named so) for the root's own parent.
    const std::string dir = c.path.empty() ? "/" : slash == std::string::npos ? std::string() : c.path.substr(0, slash);
    if (parent_ && !stale_ && parent_->root == c.root && parent_->dir == dir && !c.path.empty()) {
      *name = slash == std::string::npos ? c.path : c.path.substr(slash + 1);
      return parent_->fd.get();
    }
    parent_.reset();
    stale_ = false;
    Result<Fd> fd = OpenParent(c.root, c.path, create, name);
    if (!fd.ok()) return fd.status();
    parent_.emplace(OpenDir{c.root, dir, std::move(*fd)});
    return parent_->fd.get();
  }

  struct OpenDir {
    std::string root, dir;
    Fd fd;
  };
  const BlobDir& blobs_;
  const ApplyOptions& opt_;
  std::optional<OpenDir> parent_;
  bool stale_ = false;
  uint64_t written_ = 0, deleted_ = 0;
};

bool UnderSkipped(const Change& c, const std::set<std::pair<std::string, std::string>>& skipped) {
  for (size_t slash = c.path.rfind('/'); slash != std::string::npos && slash > 0; slash = c.path.rfind('/', slash - 1)) {
    if (skipped.count({c.root, c.path.substr(0, slash)})) return true;
  }
  return !c.path.empty() && skipped.count({c.root, ""});
}

}  // namespace

bool IsWorkspacePath(const std::string& p) {
  if (p.empty()) return true;
  if (p.find('\0') != std::string::npos) return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t slash = p.find('/', start);
    if (slash == std::string::npos) slash = p.size();
    std::string_view part(p.data() + start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = slash + 1;
  }
  return true;
}

// One root's changes: deletions deepest first, then the rest in path order (parents first).
void DiffRoot(const std::string& root, const WorkspaceRoot* before, const WorkspaceRoot* after, std::vector<Change>* out) {
  std::vector<const WorkspaceEntry*> b = Sorted(before), a = Sorted(after);
  std::vector<Change> deletions, others;
  size_t i = 0, j = 0;
  while (i < b.size() || j < a.size()) {
    int cmp = i == b.size() ? 1 : j == a.size() ? -1 : b[i]->path().compare(a[j]->path());
    if (cmp < 0) {
      deletions.push_back({root, b[i]->path(), *b[i], std::nullopt});
      ++i;
    } else if (cmp > 0) {
      others.push_back({root, a[j]->path(), std::nullopt, *a[j]});
      ++j;
    } else {
      if (!SameEntry(*b[i], *a[j])) others.push_back({root, a[j]->path(), *b[i], *a[j]});
      ++i;
      ++j;
    }
  }
  for (auto it = deletions.rbegin(); it != deletions.rend(); ++it) out->push_back(std::move(*it));
  for (Change& c : others) out->push_back(std::move(c));
}

std::vector<Change> Diff(const v1::WorkspaceManifest& before, const v1::WorkspaceManifest& after) {
  std::map<std::string, const WorkspaceRoot*> before_roots;
  for (const auto& r : before.roots()) before_roots.emplace(r.path(), &r);
  std::vector<Change> out;
  std::set<std::string> seen;
  for (const auto& r : after.roots()) {
    auto it = before_roots.find(r.path());
    DiffRoot(r.path(), it == before_roots.end() ? nullptr : it->second, &r, &out);
    seen.insert(r.path());
  }
  for (const auto& r : before.roots()) {
    if (!seen.count(r.path())) DiffRoot(r.path(), &r, nullptr, &out);
  }
  return out;
}

Result<ApplyResult> Apply(const std::vector<Change>& changes, const BlobDir& blobs, const ApplyOptions& options) {
  // 1. Everything that can be known wrong before anything is changed.
  std::set<std::pair<std::string, std::string>> deleted;
  for (const Change& c : changes) {
    if (c.root.empty() || c.root[0] != '/' || c.root.find('\0') != std::string::npos || !IsWorkspacePath(c.path)) {
      return InvalidArgument(fmt::format("not a workspace path: {:?} in root {:?}", c.path, c.root));
    }
    if (!c.after) {
      deleted.insert({c.root, c.path});
      continue;
    }
    if (c.after->kind() == WorkspaceEntry::SYMLINK && c.after->target().find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("symlink {} has a target with a NUL byte", Shown(c)));
    }
  }
  // 2. What is on disk: each path is `before` (apply), already `after` (skip), or a conflict.
  ApplyResult result;
  std::vector<char> apply(changes.size(), 1);
  std::vector<char> in_place(changes.size(), 0);  // a file whose content stays: mode and mtime only
  std::set<std::pair<std::string, std::string>> skipped;
  if (options.check_current) {
    for (size_t i = 0; i < changes.size(); ++i) {
      const Change& c = changes[i];
      Current cur = Look(c);
      bool conflict = false;
      if (Matches(c, &cur, c.after) && (!c.after || (cur.st.st_mode & 07777) == c.after->mode())) {
        apply[i] = 0;  // already done
      } else if (Matches(c, &cur, c.before)) {
        // A directory that goes must hold nothing the changes do not delete.
        const bool dir_goes = c.before && c.before->kind() == WorkspaceEntry::DIR &&
                              (!c.after || c.after->kind() != WorkspaceEntry::DIR);
        conflict = dir_goes && !OnlyDeletedInside(c, deleted);
        in_place[i] = !conflict && c.before && c.after && c.before->kind() == WorkspaceEntry::FILE &&
                      c.after->kind() == WorkspaceEntry::FILE && c.before->hash() == c.after->hash() &&
                      c.before->size() == c.after->size();
      } else if (!Matches(c, &cur, c.after)) {  // (if it does, only its mode is to change)
        conflict = true;
      }
      if (conflict) {
        result.conflicts.push_back(Shown(c));
        if (options.on_conflict == OnConflict::kOurs) {
          apply[i] = 0;
          skipped.insert({c.root, c.path});
        }
      }
    }
    if (!result.conflicts.empty() && options.on_conflict == OnConflict::kStop) return result;
  }
  for (size_t i = 0; i < changes.size(); ++i) {
    const Change& c = changes[i];
    if (apply[i] && !in_place[i] && c.after && c.after->kind() == WorkspaceEntry::FILE && !blobs.Has(c.after->hash())) {
      return NotFound(fmt::format("blob {} for {} is not in {}", c.after->hash(), Shown(c), blobs.dir()));
    }
  }
  // 3. The changes, in order.
  const bool recursive = !options.check_current || options.on_conflict == OnConflict::kTheirs;
  Applier applier(blobs, options);
  for (size_t i = 0; i < changes.size(); ++i) {
    if (!apply[i]) continue;
    // What goes inside a path kept as the caller has it follows it (a deletion inside still applies).
    if (!skipped.empty() && changes[i].after && UnderSkipped(changes[i], skipped)) {
      skipped.insert({changes[i].root, changes[i].path});
      continue;
    }
    Status s = applier.Do(changes[i], recursive, in_place[i]);
    if (!s.ok()) return s;
  }
  result.written = applier.written();
  result.deleted = applier.deleted();
  return result;
}

}  // namespace tidepool::workspace
