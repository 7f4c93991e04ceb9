#include "fastclient/run_session.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cli/client_env.h"
#include "common/duration.h"
#include "common/fast_protocol.h"
#include "common/terminal_io.h"
#include "workspace/protocol.h"

namespace tidepool::fastclient {

namespace {

constexpr uint64_t kStdinWindow = 1 << 20;  // as run.cc: stdin bytes in flight before we wait
constexpr int kAborted = 10;                // Core::Reattach: another vrun still holds the task

std::string WindowSize() {
  winsize ws{};
  json size = json::object();
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
    size["rows"] = ws.ws_row;
    size["cols"] = ws.ws_col;
  } else {
    size["rows"] = 0;
    size["cols"] = 0;
  }
  return size.dump();
}

sigset_t ForwardedSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigaddset(&sigs, s);
  return sigs;
}

struct Waiting {
  std::string pool, allocation_error;
  int starting = 0, idle = 0, position = 0;
  std::string starting_detail;
};

// cli/run.cc's Session over the fast protocol, and its reattaching (run_session.h).
class RunSession {
 public:
  RunSession(Connection& conn, const RunOptions& o)
      : conn_(conn), address_(o.address), tty_(o.tty), quiet_(o.quiet), noinput_(o.noinput), o_(o) {}

  // The request went with the hello at `sent_at`; this reads its events until the end.
  [[noreturn]] void Run(Clock::time_point sent_at) {
    started_at_ = sent_at;
    std::thread(&RunSession::SignalLoop, this, ForwardedSignals()).detach();
    Loop();
  }

  // A vrun that lost its server before this process: takes the task up from these offsets.
  [[noreturn]] void Resume(const std::string& task_id, uint64_t stdout_offset, uint64_t stderr_offset) {
    started_at_ = Clock::now();
    {
      std::lock_guard lock(mu_);
      task_id_ = task_id;
    }
    received_[0] = stdout_offset;
    received_[1] = stderr_offset;
    std::thread(&RunSession::SignalLoop, this, ForwardedSignals()).detach();
    Reconnect();
    Loop();
  }

 private:
  [[noreturn]] void Loop() {
    while (true) {
      uint8_t type = 0;
      std::string payload;
      bool oversize = false;
      Finish finish;
      // Until the acceptance, a server that does not answer is waited for (AwaitAnswer); after it, a
      // silent task is nothing to remark on.
      auto next = [&] {
        if (!Accepted()) AwaitAnswer(conn_, address_);
        return conn_.ReadFrame(&type, &payload, -1, &oversize);
      };
      bool finished = false;
      while (next()) {
        if (type == fast::kFinish) {
          json f = ParseJson(payload);
          finish.code = static_cast<int>(Int(f, "code"));
          finish.message = Str(f, "message");
          finished = true;
          break;
        }
        if (int rc = Handle(type, payload); rc >= 0) Exit(rc);
      }
      if (oversize) finish = Finish{kUnknown, "a reply from the server was over the size limit"};
      ClearProgress();
      if (cancel_sent_) Exit(130);
      if (!finished && !oversize && !Accepted()) {
        term_.Restore();
        LostUnanswered(address_);  // welcomed, the request sent, and no acceptance: it may have been taken
      }
      // The server went away (closed, or said it is shutting down), or another vrun still held
      // the task: the command runs on; take it up again.
      if (!oversize && Accepted() && (!finished || finish.code == kUnavailable || (reattached_ && finish.code == kAborted))) {
        Reconnect();
        continue;
      }
      if (finish.code == kFailedPrecondition && !Accepted() && o_.workspace_needed &&
          finish.message.rfind(kWorkspaceNeeded, 0) == 0) {
        term_.Restore();
        o_.workspace_needed(finish.message);
      }
      if (finish.code != 0) {
        term_.Restore();
        if (reattached_ && finish.code != kUnavailable) {
          fmt::print(stderr, "tidepool: cannot reattach to task {}: {}\n", TaskId(), finish.message);
          Exit(cli::kExitTidepoolFailed);
        }
        int rc = cli::ReportFailure(finish.code, finish.message, address_);
        Exit(rc == 1 ? cli::kExitTidepoolFailed : rc);
      }
      fmt::print(stderr, "tidepool: the server ended task {} without an exit status\n", TaskId());
      Exit(cli::kExitTidepoolFailed);
    }
  }

  // Connects again and sends REATTACH, backing off (100 ms doubling to 2 s) until a server
  // welcomes it, for at most reattach_for; the events then follow on the new connection.
  void Reconnect() {
    const std::string id = TaskId();
    conn_.Close();
    if (!told_) {
      told_ = true;
      Say(fmt::format("tidepool: server restarting; your command is still running (task {})", id));
    }
    auto deadline = Clock::now() + o_.reattach_for;
    auto backoff = std::chrono::milliseconds(100);
    std::string host, port;
    SplitAddress(address_, &host, &port);  // checked before the first connection
    while (Clock::now() < deadline) {
      std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - Clock::now()));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      if (conn_.Connect(host, port) != Connection::Outcome::kConnected) continue;
      json hello{{"v", fast::kVersion}};
      if (!o_.token.empty()) hello["token"] = o_.token;
      std::string out(fast::kMagic, sizeof(fast::kMagic));
      fast::AppendFrame(out, fast::kHello, hello.dump());
      fast::AppendFrame(out, fast::kReattach,
                        json{{"task_id", id}, {"stdout", received_[0]}, {"stderr", received_[1]}}.dump());
      char magic[sizeof(fast::kMagic)];
      uint8_t answer = 0;
      std::string payload;
      if (conn_.Send(out) && conn_.ReadExact(magic, sizeof(magic), kWelcomeTimeoutMs) &&
          std::memcmp(magic, fast::kMagic, sizeof(magic)) == 0 && conn_.ReadFrame(&answer, &payload, kWelcomeTimeoutMs)) {
        if (answer == fast::kWelcome) {
          reattached_ = true;
          {
            std::lock_guard lock(mu_);
            stdin_sent_ = stdin_acked_;  // what went to the old server and no further is not waited for
            generation_++;
          }
          stdin_cv_.notify_all();
          return;
        }
        json f = ParseJson(payload);
        int code = answer == fast::kFinish ? static_cast<int>(Int(f, "code")) : kUnavailable;
        if (code != kUnavailable) {  // refused for good (a token, ...), not a server still starting
          term_.Restore();
          fmt::print(stderr, "tidepool: cannot reattach to task {}: {}\n", id, Str(f, "message"));
          Exit(cli::kExitTidepoolFailed);
        }
      }
      conn_.Close();
    }
    term_.Restore();
    fmt::print(stderr,
               "tidepool: the server at {} did not come back within {}; task {} was still running when it went away "
               "(`tidepool task get {}` tells what became of it once the server is back)\n",
               address_, FormatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(o_.reattach_for)), id, id);
    Exit(cli::kExitTidepoolFailed);
  }

  // A line on stderr that also reads right with the terminal in raw mode.
  void Say(const std::string& line) {
    std::lock_guard lock(mu_);
    ClearProgressLocked();
    fmt::print(stderr, "{}{}", line, term_.raw ? "\r\n" : "\n");
    std::fflush(stderr);
  }

  std::string TaskId() {
    std::lock_guard lock(mu_);
    return task_id_;
  }

  // Returns an exit status when the session is over, else -1.
  int Handle(uint8_t type, const std::string& payload) {
    switch (type) {
      case fast::kStdout:
      case fast::kStderr:
        WriteAll(type == fast::kStderr ? STDERR_FILENO : STDOUT_FILENO, payload);
        received_[type == fast::kStderr ? 1 : 0] += payload.size();
        return -1;
      case fast::kAccepted: {
        json j = ParseJson(payload);
        std::lock_guard lock(mu_);
        task_id_ = Str(j, "task_id");
        return -1;
      }
      case fast::kWaiting: {
        json j = ParseJson(payload);
        std::lock_guard lock(mu_);
        waiting_ = Waiting{Str(j, "pool"), Str(j, "allocation_error"), static_cast<int>(Int(j, "starting")),
                           static_cast<int>(Int(j, "idle")), static_cast<int>(Int(j, "position")),
                           Str(j, "starting_detail")};
        if (!waiting_->allocation_error.empty() && shown_errors_.insert(waiting_->allocation_error).second && !quiet_) {
          ClearProgressLocked();
          fmt::print(stderr, "tidepool: pool {}: {}\n", waiting_->pool, waiting_->allocation_error);
        }
        DrawProgressLocked(/*changed=*/true);
        return -1;
      }
      case fast::kStarted: {
        bool first;
        {
          std::lock_guard lock(mu_);
          ClearProgressLocked();
          first = !started_;
          started_ = true;
        }
        if (!first) return -1;
        if (tty_ && isatty(STDIN_FILENO)) term_.MakeRaw();
        if (!noinput_) std::thread(&RunSession::StdinLoop, this).detach();
        return -1;
      }
      case fast::kStdinWritten: {
        json j = ParseJson(payload);
        std::lock_guard lock(mu_);
        stdin_acked_ = static_cast<uint64_t>(Int(j, "written"));
        stdin_cv_.notify_all();
        return -1;
      }
      case fast::kExited: {
        json j = ParseJson(payload);
        ClearProgress();
        term_.Restore();
        std::string state = Str(j, "state");
        cli::RunEnd end{state == "SUCCESS", state == "CANCELLED", Bool(j, "has_exit_code"),
                        static_cast<int>(Int(j, "exit_code")), static_cast<int>(Int(j, "signal")), Str(j, "reason"),
                        Bool(j, "command_not_found")};
        std::string id;
        {
          std::lock_guard lock(mu_);
          id = task_id_;
        }
        return cli::RunExitStatus(end, id, quiet_, cancel_sent_);
      }
      default:
        return -1;  // a newer server's event this client does not know
    }
  }

  [[noreturn]] void Exit(int rc) {
    cli::EndRun(rc, kill_sent_, term_);
  }

  void StdinLoop() {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        WriteThrough(fast::kStdinEof, "");
        return;
      }
      {
        std::unique_lock lock(mu_);
        stdin_cv_.wait(lock, [&] { return stdin_sent_ - stdin_acked_ < kStdinWindow; });
        stdin_sent_ += static_cast<uint64_t>(n);
      }
      WriteThrough(fast::kStdin, std::string_view(buf, static_cast<size_t>(n)));
    }
  }

  // Stdin's writes: one that fails while the server is away goes to the next one, once reattached.
  void WriteThrough(uint8_t type, std::string_view payload) {
    while (true) {
      uint64_t gen;
      {
        std::lock_guard lock(mu_);
        gen = generation_;
      }
      if (conn_.Write(type, payload)) return;
      std::unique_lock lock(mu_);
      stdin_cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }

  void SignalLoop(sigset_t sigs) {
    cli::SignalLoop(
        sigs, tty_, mu_, started_, [this] { DrawProgressLocked(/*changed=*/false); },
        [this](int sig, cli::SignalAction action) {
          switch (action) {
            case cli::SignalAction::kNothing:
              return;
            case cli::SignalAction::kResize:
              conn_.Write(fast::kResize, WindowSize());
              return;
            case cli::SignalAction::kCancel:  // still queued: withdrawn, and the server forgets it
              cancel_sent_ = true;
              conn_.Write(fast::kCancel, "");
              return;
            case cli::SignalAction::kKillAndExit:
              kill_sent_ = true;  // before the kill: its task's end may reach the reader first
              conn_.Write(fast::kSignal, json{{"signal", SIGKILL}}.dump());
              ClearProgress();
              Exit(130);
              return;
            case cli::SignalAction::kForward:
              conn_.Write(fast::kSignal, json{{"signal", sig}}.dump());
              return;
          }
        });
  }

  void DrawProgressLocked(bool changed) {
    if (quiet_ || started_ || !waiting_) return;
    auto elapsed = Clock::now() - started_at_;
    if (elapsed < std::chrono::seconds(1)) return;
    int secs = static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(elapsed).count());
    const Waiting& w = *waiting_;
    progress_.Draw(cli::WaitingLine(w.pool, w.starting, w.idle, w.position, w.starting_detail), secs, changed);
  }
  void ClearProgressLocked() { progress_.Clear(); }
  void ClearProgress() {
    std::lock_guard lock(mu_);
    ClearProgressLocked();
  }

  bool Accepted() {
    std::lock_guard lock(mu_);
    return !task_id_.empty();
  }

  Connection& conn_;
  const std::string address_;
  const bool tty_, quiet_, noinput_;
  const RunOptions o_;
  uint64_t received_[2] = {0, 0};  // stdout, stderr bytes written out (the main thread's)
  bool told_ = false;              // "server restarting" was said
  bool reattached_ = false;
  uint64_t generation_ = 0;        // connections made; under mu_
  RawTerminal term_;
  std::mutex mu_;
  std::condition_variable stdin_cv_;
  bool started_ = false;
  std::string task_id_;
  std::optional<Waiting> waiting_;
  std::set<std::string> shown_errors_;
  Clock::time_point started_at_;
  cli::WaitingProgress progress_;
  uint64_t stdin_sent_ = 0, stdin_acked_ = 0;
  std::atomic<bool> cancel_sent_{false};
  std::atomic<bool> kill_sent_{false};
};

}  // namespace

void BlockForwardedSignals() {
  sigset_t sigs = ForwardedSignals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

void RunEvents(Connection& conn, const RunOptions& options, Clock::time_point sent_at) {
  static RunSession* session = new RunSession(conn, options);  // threads outlive any scope
  session->Run(sent_at);
}

void Reattach(const RunOptions& options, const std::string& task_id, uint64_t stdout_offset, uint64_t stderr_offset) {
  static Connection* conn = new Connection();
  static RunSession* session = new RunSession(*conn, options);
  session->Resume(task_id, stdout_offset, stderr_offset);
}

}  // namespace tidepool::fastclient
