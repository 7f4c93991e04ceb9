// What the full client (client.cc, over gRPC) and the fast client (src/fastclient, vrun/vbatch
// without gRPC) share: finding the server and the credentials, the environment a task is given,
// and how failures are reported and turned into exit statuses. Free of gRPC and protobuf.
#pragma once

#include <signal.h>

#include <functional>
#include <mutex>
#include <string>

#include "common/terminal_io.h"

namespace tidepool::cli {

constexpr int kExitTidepoolFailed = 255;
constexpr int kExitUsage = 2;

// --server, else $TIDEPOOL_SERVER, else 127.0.0.1:7700.
std::string ResolveServer(const std::string& flag);
// --token, else $TIDEPOOL_TOKEN, else the first line of ~/.config/tidepool/token; "" if none.
std::string ResolveToken(const std::string& flag);
// --tls-ca, else $TIDEPOOL_TLS_CA; "" = plaintext.
std::string ResolveTlsCa(const std::string& flag);

// True for variables that describe the local terminal or session (never sent).
bool IsLocalOnlyVariable(const std::string& key);

// Prints the failure of a call ("tidepool: MESSAGE", or the message itself for errors the user
// can act on) and returns the exit status for it. `code` is a gRPC status code.
int ReportFailure(int code, const std::string& message, const std::string& address);

// How a vrun's task ended (RunEvent.Exited).
struct RunEnd {
  bool success = false;    // state SUCCESS
  bool cancelled = false;  // state CANCELLED
  bool has_exit_code = false;
  int exit_code = 0;
  int signal = 0;
  std::string reason;
  bool command_not_found = false;
};
// vrun's exit status for it (cli.md), printing what is to be said on stderr. `cancel_sent`: the
// user cancelled it while queued (Ctrl-C), which needs no message.
int RunExitStatus(const RunEnd& end, const std::string& task_id, bool quiet, bool cancel_sent);

// Ends a vrun with `rc` (130 if a second Ctrl-C already decided it: `kill_sent`): the terminal put
// back, output flushed, and the process ended without unwinding threads that may still sit in
// blocking reads (stdin).
[[noreturn]] void EndRun(int rc, bool kill_sent, RawTerminal& term);

// vrun's progress line while its task waits for a worker (without the elapsed time).
// `detail`: the backend's words for a starting worker ("pending: Resources"), shown beside the count.
std::string WaitingLine(const std::string& pool, int starting, int idle, int position, const std::string& detail = "");

// Shows WaitingLine on stderr: redrawn in place with the seconds waited on a terminal, else
// printed once per change as plain lines. Not thread-safe: callers hold their own lock.
class WaitingProgress {
 public:
  void Draw(const std::string& line, int seconds, bool changed);
  void Clear();  // erases an in-place line, if one is shown

 private:
  bool shown_ = false;
  bool printed_once_ = false;
  std::string last_plain_line_;
};

// What vrun does with a signal the user sent it (cli.md): while the task is queued, any signal
// but a window change withdraws it; once it runs, a window change is a resize (with a terminal),
// Ctrl-C twice within a second is SIGKILL and vrun's exit (130), anything else is forwarded.
enum class SignalAction { kNothing, kResize, kCancel, kForward, kKillAndExit };

// vrun's signal thread (never returns): waits for `sigs` (blocked in every thread), calls
// `tick_locked` under `mu` every 250 ms without one (the progress line), and `act` for each with
// what to do. `started` (read under `mu`) says whether the task runs yet.
[[noreturn]] void SignalLoop(const sigset_t& sigs, bool tty, std::mutex& mu, const bool& started,
                             const std::function<void()>& tick_locked,
                             const std::function<void(int, SignalAction)>& act);

}  // namespace tidepool::cli
