// The one subprocess runner for backends that run programs (command scripts, ssh, sbatch,
// kubectl...). A program runs in its own session (so its whole process group can be killed),
// with exactly the environment given, its stdin fed from memory, stdout and stderr captured with
// a cap, until it exits or its deadline passes.
//
//   * argv[0] without a '/' is looked up in the PATH of `env`.
//   * stdin: `stdin_data` from a memfd (the child reads at its own pace; we never block writing
//     and a child that exits early cannot SIGPIPE us). Empty = an empty stdin.
//   * stdout is kept up to `stdout_cap` bytes (more sets `stdout_overflow`, the rest is
//     dropped); stderr keeps its last `stderr_cap` bytes.
//   * Reading stops when the program itself exits, not at EOF: a background child it leaves
//     holding the pipes (an agent started with `&`) does not hold the call.
//   * At the deadline the whole process group is SIGKILLed (grandchildren too) and the result
//     says `timed_out`.
//   * `groups` (optional) tracks the running groups so that ProcessGroups::Abandon can kill them
//     all at once (the server is stopping) and refuse new runs.
//
// Thread-safe: calls may run concurrently.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tidepool::backends {

// The process groups of running programs, from spawn until reaped. Killing and reaping happen
// under one lock, so a group is never signalled after its leader was reaped (its id may be
// reused by then).
class ProcessGroups {
 public:
  // Kills every group running now and every later one at its spawn; RunSubprocess refuses to
  // start anything once abandoned.
  void Abandon();
  bool abandoned() const;
  bool Running() const;  // any group running now

  // For RunSubprocess.
  void Add(pid_t pid);
  pid_t Reap(pid_t pid, int* wstatus);
  void Kill(pid_t pid);

 private:
  mutable std::mutex mu_;
  bool abandoned_ = false;
  std::set<pid_t> groups_;
};

struct SubprocessSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "K=V": the child's whole environment
  std::string stdin_data;
  std::chrono::steady_clock::time_point deadline;
  size_t stdout_cap = size_t{16} << 20;
  size_t stderr_cap = size_t{64} << 10;
  ProcessGroups* groups = nullptr;
};

// `bash -s -- ARGS...` with the script on stdin (Velda's way of running a command backend's
// scripts): positional parameters are the args, and bash reads the script as it goes.
SubprocessSpec BashScript(const std::string& script, const std::vector<std::string>& args);

struct SubprocessResult {
  bool timed_out = false;  // killed at the deadline (exit_code/term_signal are then meaningless)
  int exit_code = -1;      // when it exited
  int term_signal = 0;     // when a signal ended it
  std::string out;
  std::string err;  // its last stderr_cap bytes
  bool stdout_overflow = false;
  std::chrono::milliseconds took{0};

  bool ok() const { return !timed_out && term_signal == 0 && exit_code == 0; }
  // "exit 3", "killed by signal SIGTERM", "timed out".
  std::string Describe() const;
};

// Runs the program. An error only when it could not be run at all (no such program, out of fds,
// abandoned): how it ended is in the result.
Result<SubprocessResult> RunSubprocess(const SubprocessSpec& spec);

// The non-empty lines of `text`, trimmed.
std::vector<std::string> NonEmptyLines(std::string_view text);
// The last few non-empty lines of a stderr, at most ~1 KiB, cut on a UTF-8 boundary: what goes
// into an error message.
std::string StderrTail(std::string_view err);

}  // namespace tidepool::backends
