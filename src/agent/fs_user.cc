#include "agent/fs_user.h"

#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace tidepool::agent {

AsUser::AsUser(int64_t uid, int64_t gid) {
  if (uid < 0) return;
  active_ = true;
  int n = ::getgroups(0, nullptr);
  if (n > 0) {
    old_groups_.resize(static_cast<size_t>(n));
    n = ::getgroups(n, old_groups_.data());
    old_groups_.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  old_gid_ = static_cast<gid_t>(::setfsgid(static_cast<gid_t>(-1)));
  old_uid_ = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1)));
  // Groups first: once the fsuid is not 0 the thread may no longer change them.
  ::syscall(SYS_setgroups, 0, nullptr);
  ::setfsgid(static_cast<gid_t>(gid));
  ::setfsuid(static_cast<uid_t>(uid));
  // setfsuid reports only the previous value: asking again says whether it took.
  ok_ = ::setfsuid(static_cast<uid_t>(-1)) == static_cast<int>(uid) &&
        ::setfsgid(static_cast<gid_t>(-1)) == static_cast<int>(gid);
}

AsUser::~AsUser() {
  if (!active_) return;
  ::setfsuid(old_uid_);
  ::setfsgid(old_gid_);
  ::syscall(SYS_setgroups, old_groups_.size(), old_groups_.empty() ? nullptr : old_groups_.data());
}

}  // namespace tidepool::agent
