#include "store/db_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tidepool::store {

DbLock::~DbLock() {
  if (fd_ >= 0) ::close(fd_);
}

DbLock& DbLock::operator=(DbLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

int FlockHolder(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  // Lines look like "3: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (waiters have "->").
  std::ifstream in("/proc/locks");
  std::string line;
  int fallback = 0;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string n, kind, advisory, mode, pid, dev_ino;
    words >> n >> kind;
    if (kind == "->") words >> kind;
    words >> advisory >> mode >> pid >> dev_ino;
    if (kind != "FLOCK") continue;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(dev_ino.c_str(), "%x:%x:%llu", &maj, &min, &ino) != 3 || ino != st.st_ino) continue;
    int p = std::atoi(pid.c_str());
    if (p <= 0) continue;
    if (maj == major(st.st_dev) && min == minor(st.st_dev)) return p;
    fallback = p;  // overlay file systems report the lower device: the inode alone then
  }
  return fallback;
}

Result<DbLock> DbLock::Acquire(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    return FailedPrecondition(fmt::format(
        "cannot open the store {}: {}; check that its directory exists and that this user may write both",
        path, std::strerror(e)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::close(fd);
    if (e != EWOULDBLOCK) {
      return FailedPrecondition(fmt::format("cannot lock the store {}: {}", path, std::strerror(e)));
    }
    int holder = FlockHolder(path);
    return FailedPrecondition(fmt::format(
        "the store {} is in use by another server (pid {}); one database file serves one server: stop that "
        "one first, or give this one its own --db",
        path, holder > 0 ? std::to_string(holder) : "unknown"));
  }
  DbLock lock;
  lock.fd_ = fd;
  return lock;
}

}  // namespace tidepool::store
