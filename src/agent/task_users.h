// Which Unix user runs a task (issue 17, "Task credentials bound to the task").
//
// A task's token (TIDEPOOL_TOKEN) is in its environment, and anything running as the same Unix
// user can read another process's environment (/proc/PID/environ), signal it or trace it. So an
// agent running as root isolates owners: each owner's tasks run as a Unix user of their own,
// with no supplementary groups, and no task runs as root. Tasks of one owner share that user
// (as Slurm runs a user's jobs as that user); tasks of two owners never do.
//
// An owner's uid comes from a range (`--task-uids FIRST-LAST`, default 1900000000-1900999999),
// the same group id, and is recorded in a map file (`--task-uid-map`, default
// /var/lib/tidepool/task-uids) shared under flock by every agent on the host. So an owner keeps
// their uid across agent restarts and across the agents of one machine, and a file one owner left
// behind never becomes another's. A task with no owner (auth off: everyone is trusted) runs as the
// agent's user.
//
// An agent that is not root cannot change users: every task runs as the agent's user, and the
// agent says so in its hello (`task_isolation` empty); the server warns when auth is on. The
// agent itself is never readable by its tasks either way: it marks itself non-dumpable
// (PR_SET_DUMPABLE 0), so its environment (the worker token) and memory are root's alone.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/status.h"

namespace tidepool::agent {

struct TaskUser {
  int64_t uid = -1;  // -1: the agent's own user
  int64_t gid = -1;
};

class TaskUsers {
 public:
  enum class Mode { kAgent, kOwner };
  // "" picks kOwner for root, kAgent otherwise. "owner" without root is an error.
  // `range` is "FIRST-LAST" ("" = the default); `map_path` "" = the default.
  static Result<TaskUsers> Make(const std::string& mode, const std::string& range, const std::string& map_path);

  Mode mode() const { return mode_; }
  // The user that runs `owner`'s tasks: the agent's own for kAgent or an empty owner; else the
  // owner's recorded uid, or the next free one in the range, recorded first. An error when the
  // range is used up or the map cannot be written (the task is then not started).
  Result<TaskUser> For(const std::string& owner);

  static constexpr int64_t kDefaultFirst = 1900000000;
  static constexpr int64_t kDefaultLast = 1900999999;
  static constexpr const char* kDefaultMap = "/var/lib/tidepool/task-uids";

 private:
  TaskUsers(Mode mode, int64_t first, int64_t last, std::string map_path)
      : mode_(mode), first_(first), last_(last), map_path_(std::move(map_path)) {}
  // Reads the map (held under flock by the caller) into known_.
  Status Load(int fd);

  Mode mode_;
  int64_t first_, last_;
  std::string map_path_;
  std::map<std::string, int64_t> known_;  // owner -> uid, as last read
};

}  // namespace tidepool::agent
