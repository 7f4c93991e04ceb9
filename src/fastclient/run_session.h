// vrun's session over the fast protocol (cli/run.cc's Session, the same output, stdin, signals,
// terminal handling, messages and exit statuses), and what the full client cannot do: when the
// server goes away (a restart, a crash: the connection closes, or FINISH UNAVAILABLE) once the
// task was accepted, vrun keeps the terminal, says so once, connects again with backoff and
// sends REATTACH with the bytes of each stream it has written out, so the output goes on from
// there: nothing lost, nothing repeated (Core::Reattach). It then exits with the command's real
// status; if no server takes it back within `reattach_for`, it says what it knows and exits 255.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "fastclient/wire.h"

namespace tidepool::fastclient {

struct RunOptions {
  std::string address;
  std::string token;
  bool tty = false, quiet = false, noinput = false;
  std::chrono::milliseconds reattach_for{5 * 60 * 1000};
  // The pool brings the caller's files, which this client cannot send: hands the command to the
  // full client (never returns). Called before anything ran.
  std::function<void(const std::string& why)> workspace_needed;
};
inline constexpr std::chrono::milliseconds kDefaultReattachFor{5 * 60 * 1000};

// Blocks the signals vrun forwards in every thread (as run.cc: its signal thread takes them);
// SIGPIPE is ignored (a closed stdout is not fatal).
void BlockForwardedSignals();

// The RUN request went with the hello at `sent_at` and was welcomed: reads its events to the end.
[[noreturn]] void RunEvents(Connection& conn, const RunOptions& options, Clock::time_point sent_at);

// `vrun --reattach ID --reattach-offsets OUT,ERR`: a vrun that lost its server (the C vrun
// hands over to this) takes its task up again, from those offsets.
[[noreturn]] void Reattach(const RunOptions& options, const std::string& task_id, uint64_t stdout_offset,
                           uint64_t stderr_offset);

}  // namespace tidepool::fastclient
