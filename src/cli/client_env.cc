#include "cli/client_env.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "common/status.h"
#include "common/strings.h"

namespace tidepool::cli {

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : "";
}

}  // namespace

std::string ResolveServer(const std::string& flag) {
  if (!flag.empty()) return flag;
  std::string env = Env("TIDEPOOL_SERVER");
  return !env.empty() ? env : "127.0.0.1:7700";
}

std::string ResolveToken(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (std::string env = Env("TIDEPOOL_TOKEN"); !env.empty()) return env;
  if (const char* home = std::getenv("HOME")) {
    std::ifstream in(std::string(home) + "/.config/tidepool/token");
    std::string line;
    if (in && std::getline(in, line)) return std::string(Trim(line));
  }
  return "";
}

std::string ResolveTlsCa(const std::string& flag) { return !flag.empty() ? flag : Env("TIDEPOOL_TLS_CA"); }

bool IsLocalOnlyVariable(const std::string& key) {
  static const char* exact[] = {"TERM", "DISPLAY", "XAUTHORITY", "SHLVL", "_", "OLDPWD", "PWD", "TERMCAP", "COLUMNS", "LINES"};
  for (const char* e : exact) {
    if (key == e) return true;
  }
  return key.rfind("SSH_", 0) == 0 || key.rfind("TMUX", 0) == 0;
}

int ReportFailure(int code, const std::string& message, const std::string& address) {
  switch (static_cast<StatusCode>(code)) {
    case StatusCode::kUnavailable:
      if (message.find("starting") != std::string::npos || message.find("shutting down") != std::string::npos) {
        fmt::print(stderr, "tidepool: the server at {} is {}\n", address,
                   message.find("starting") != std::string::npos ? "starting" : "shutting down");
      } else {
        fmt::print(stderr, "tidepool: cannot reach the server at {}\n", address);
      }
      return kExitTidepoolFailed;
    case StatusCode::kNotFound:
    case StatusCode::kUnauthenticated:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kInvalidArgument:
    case StatusCode::kPermissionDenied:
    case StatusCode::kUnimplemented:
    case StatusCode::kAlreadyExists:
      fmt::print(stderr, "{}\n", message);
      return 1;
    default:
      fmt::print(stderr, "tidepool: {} (from the server at {})\n", message, address);
      return kExitTidepoolFailed;
  }
}

int RunExitStatus(const RunEnd& x, const std::string& task_id, bool quiet, bool cancel_sent) {
  if (x.success) return 0;
  if (x.command_not_found) {
    fmt::print(stderr, "{}\n", x.reason);
    return 127;
  }
  if (x.cancelled) {
    if (!cancel_sent && !quiet) fmt::print(stderr, "tidepool: task {} was cancelled\n", task_id);
    return 130;
  }
  if (x.reason == "timeout" && !quiet) fmt::print(stderr, "tidepool: task {} timed out\n", task_id);
  if (x.signal > 0) return 128 + x.signal;
  if (x.has_exit_code) return x.exit_code;
  fmt::print(stderr, "tidepool: task {} failed: {}\n", task_id, x.reason);
  return kExitTidepoolFailed;
}

std::string WaitingLine(const std::string& pool, int starting, int idle, int position, const std::string& detail) {
  return fmt::format("waiting for a worker in pool {}: {} starting{}, {} idle, position {} in queue", pool, starting,
                     detail.empty() ? "" : " (" + detail + ")", idle, position);
}

void WaitingProgress::Draw(const std::string& line, int seconds, bool changed) {
  if (isatty(STDERR_FILENO)) {
    fmt::print(stderr, "\r\033[K{} ({}s)", line, seconds);
    shown_ = true;
  } else if (changed || !printed_once_) {
    if (line != last_plain_line_) fmt::print(stderr, "{}\n", line);
    last_plain_line_ = line;
    printed_once_ = true;
  }
}

void WaitingProgress::Clear() {
  if (shown_) fmt::print(stderr, "\r\033[K");
  shown_ = false;
}

void SignalLoop(const sigset_t& sigs, bool tty, std::mutex& mu, const bool& started,
                const std::function<void()>& tick_locked, const std::function<void(int, SignalAction)>& act) {
  const timespec kTick{0, 250 * 1000 * 1000};
  std::optional<std::chrono::steady_clock::time_point> last_int;
  while (true) {
    int sig = sigtimedwait(&sigs, nullptr, &kTick);
    if (sig < 0) {
      std::lock_guard lock(mu);
      tick_locked();
      continue;
    }
    bool running;
    {
      std::lock_guard lock(mu);
      running = started;
    }
    if (sig == SIGWINCH) {
      act(sig, tty && running ? SignalAction::kResize : SignalAction::kNothing);
      continue;
    }
    if (!running) {
      act(sig, SignalAction::kCancel);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    bool twice = sig == SIGINT && last_int && now - *last_int < std::chrono::seconds(1);
    if (sig == SIGINT) last_int = now;
    act(sig, twice ? SignalAction::kKillAndExit : SignalAction::kForward);
  }
}

void EndRun(int rc, bool kill_sent, RawTerminal& term) {
  if (kill_sent) rc = 130;  // a second Ctrl-C decided it, whichever thread gets here first
  term.Restore();
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(rc);
}

}  // namespace tidepool::cli
