// One server per database file: an exclusive flock(2) on the file's inode.
//
// Contract:
// - Acquire(path) opens (creating if needed, 0600) the database file itself and takes
//   LOCK_EX | LOCK_NB on it. The lock belongs to the inode, so a second opener is refused
//   however it names the file (another --data-dir, a symlink, a hard link, a relative path).
// - It is held until the DbLock is destroyed or the process dies (the kernel drops it then: a
//   killed server never leaves a stale lock behind).
// - flock and SQLite's own fcntl (POSIX) locks are independent on Linux. But closing ANY
//   descriptor of the file drops the process's POSIX locks, so the DbLock must outlive every
//   SQLite connection on the file (SqliteStore destroys it last).
// - Refusals name the file, the operating system's reason, the pid holding the lock when the
//   kernel says (/proc/locks), and what to do.
#pragma once

#include <string>

#include "common/status.h"

namespace tidepool::store {

class DbLock {
 public:
  DbLock() = default;
  ~DbLock();
  DbLock(DbLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DbLock& operator=(DbLock&& o) noexcept;
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;

  static Result<DbLock> Acquire(const std::string& path);

  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// The pid that holds a flock on the file at `path` according to /proc/locks, or 0 if unknown.
int FlockHolder(const std::string& path);

}  // namespace tidepool::store
