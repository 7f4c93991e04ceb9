// Another user's filesystem rights for the calling thread (Linux's per-thread fsuid and fsgid, and
// the thread's supplementary groups, cleared): an agent running as root reads and writes a task
// owner's workspace with that owner's rights alone, so a manifest cannot make it write (or a
// result read) a path the owner could not. A change of the fsuid from 0 also drops the thread's
// filesystem capabilities (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER...), and the return to 0
// restores them (capabilities(7)). Only this thread changes: the raw syscalls are used, not
// glibc's setgroups, which would change every thread of the process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace tidepool::agent {

class AsUser {
 public:
  // uid < 0: no change (an agent whose tasks run as its own user).
  AsUser(int64_t uid, int64_t gid);
  ~AsUser();
  AsUser(const AsUser&) = delete;
  AsUser& operator=(const AsUser&) = delete;
  // False when the switch did not take (the agent is not root): the caller must not go on.
  bool ok() const { return ok_; }

 private:
  bool active_ = false, ok_ = true;
  uid_t old_uid_ = 0;
  gid_t old_gid_ = 0;
  std::vector<gid_t> old_groups_;
};

}  // namespace tidepool::agent
