#include "workspace/root_watch.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "workspace/scan.h"

namespace tidepool::workspace {
namespace {

constexpr uint32_t kMask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE |
                           IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;

std::string Join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

int64_t Ns(const struct timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

}  // namespace

Result<std::unique_ptr<RootWatch>> RootWatch::Start(const std::string& root) {
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return Unavailable(fmt::format("inotify: {}", std::strerror(errno)));
  std::unique_ptr<RootWatch> w(new RootWatch(fd, root));
  if (!w->AddTree("")) return Unavailable(fmt::format("cannot watch workspace root {}: {}", root, std::strerror(errno)));
  return w;
}

RootWatch::~RootWatch() { ::close(fd_); }

bool RootWatch::AddTree(const std::string& rel) {
  const std::string abs = AbsolutePath(root_, rel);
  int wd = ::inotify_add_watch(fd_, abs.c_str(), kMask);
  if (wd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return true;  // gone again: its parent's event said so
    lost_ = true;
    return false;
  }
  dirs_[wd] = rel;
  // Its subdirectories; the watch comes first, so one made meanwhile is seen by an event.
  DIR* d = ::opendir(abs.c_str());
  if (!d) return true;  // unreadable: a scan lists it
  std::vector<std::string> subdirs;
  while (struct dirent* e = ::readdir(d)) {
    const char* n = e->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    bool dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      dir = ::fstatat(::dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    if (dir) subdirs.emplace_back(n);
  }
  ::closedir(d);
  for (const std::string& s : subdirs) {
    if (!AddTree(Join(rel, s))) return false;
  }
  return true;
}

void RootWatch::Drain() {
  alignas(struct inotify_event) char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: nothing more queued
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const struct inotify_event*>(p);
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        lost_ = true;
        continue;
      }
      auto it = dirs_.find(ev->wd);
      if (it == dirs_.end()) continue;
      const std::string dir = it->second;
      if (ev->mask & IN_IGNORED) {
        dirs_.erase(it);
        if (dir.empty()) lost_ = true;
        continue;
      }
      if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        // The root gone or moved, or a directory renamed (the paths of its watches are wrong now);
        // a directory deleted was said by its parent's event.
        if (dir.empty() || (ev->mask & IN_MOVE_SELF)) lost_ = true;
        dirty_.insert(dir);
        continue;
      }
      if (ev->len == 0 || ev->name[0] == '\0') {
        dirty_.insert(dir);  // the directory itself (its mode)
        continue;
      }
      const std::string path = Join(dir, ev->name);
      dirty_.insert(path);
      if (ev->mask & IN_ISDIR) {
        if (ev->mask & IN_MOVED_FROM) lost_ = true;
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) AddTree(path);
      }
    }
  }
}

bool StillMatches(const std::string& root, const v1::WorkspaceRoot& state, const std::set<std::string>& dirty) {
  for (const std::string& rel : dirty) {
    const v1::WorkspaceEntry* e = FindEntry(state, rel);
    const std::string abs = AbsolutePath(root, rel);
    struct stat st;
    if (::lstat(abs.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) {
        if (e) return false;
        continue;
      }
      return false;
    }
    if (!e || e->mode() != (st.st_mode & 07777)) return false;
    switch (e->kind()) {
      case v1::WorkspaceEntry::DIR:
        if (!S_ISDIR(st.st_mode)) return false;
        break;
      case v1::WorkspaceEntry::FILE:
        if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || static_cast<uint64_t>(st.st_size) != e->size() ||
            Ns(st.st_mtim) != e->mtime_ns()) {
          return false;
        }
        break;
      case v1::WorkspaceEntry::SYMLINK: {
        if (!S_ISLNK(st.st_mode)) return false;
        std::string target(e->target().size() + 1, '\0');
        ssize_t n = ::readlink(abs.c_str(), target.data(), target.size());
        if (n < 0 || static_cast<size_t>(n) != e->target().size() || target.compare(0, e->target().size(), e->target()) != 0) {
          return false;
        }
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

}  // namespace tidepool::workspace
