// Starting and inspecting processes.
//
// Spawn() uses posix_spawn (vfork semantics): safe in a process full of gRPC threads, where
// fork() would copy locked mutexes. The child gets default signal dispositions and an empty
// mask (the parent may ignore SIGPIPE; `yes | head` must still end), and only fds 0-2.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tidepool {

struct SpawnOptions {
  std::vector<std::string> argv;
  std::vector<std::string> env;    // "K=V" entries; the child's whole environment
  std::string cwd;                 // "" = the parent's
  bool new_session = true;         // setsid(): own session and process group
  // Child fds 0, 1, 2: an fd of ours to dup (>= 0), else a path to open, else /dev/null.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  std::string stdout_path;         // opened for append
  std::string stderr_path;         // opened for append
  // A terminal to open as fds 0-2; with new_session it becomes the controlling terminal.
  std::string tty_path;
  // SIGKILL the child when the spawning thread's process dies (PR_SET_PDEATHSIG): a task dies
  // with its agent, as it would with its machine, so a requeued task never runs twice at once.
  // The spawning thread must live as long as the child (the agent's event loop does).
  bool die_with_parent = false;
  // Run the child as this user and group (no supplementary groups), from a root parent; -1 keeps
  // the parent's. Only with die_with_parent. The working directory is entered as that user.
  int64_t uid = -1;
  int64_t gid = -1;
};

enum class SpawnError { kNone, kNotFound, kNoCwd, kOther };

struct SpawnResult {
  pid_t pid = -1;
  SpawnError error = SpawnError::kNone;
  std::string message;  // "command not found: foo", "working directory not found: /x", ...
};

// argv[0] without a '/' is looked up in the PATH of `env` (not the parent's), as a shell would.
SpawnResult Spawn(const SpawnOptions& options);

// The current process environment as "K=V" entries.
std::vector<std::string> CurrentEnvironment();

struct ProcStat {
  char state = '?';           // R, S, D, Z, T ...
  uint64_t start_time = 0;    // clock ticks since boot: with the pid, identifies the process
  pid_t pgid = 0;
};
// From /proc/PID/stat; nullopt if the process does not exist.
std::optional<ProcStat> ReadProcStat(pid_t pid);

// Alive and the same process (not a reused pid), and not a zombie.
bool ProcessAlive(pid_t pid, uint64_t start_time);

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and the threads it makes after, and
// returns that set: for one thread to take them (sigwait) or a signalfd.
sigset_t BlockStopSignals();

}  // namespace tidepool
