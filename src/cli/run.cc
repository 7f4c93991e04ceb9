// vrun: run a command on a worker as if it were this terminal (cli.md, "vrun").
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "api/names.h"
#include "common/terminal_io.h"
#include "cli/client.h"
#include "cli/unanswered.h"
#include "cli/commands.h"
#include "cli/spec.h"

namespace tidepool::cli {

namespace {

constexpr uint64_t kStdinWindow = 1 << 20;  // stdin bytes in flight before we wait for the task

struct RunOpts {
  ClientOptions client;
  std::string pool;
  std::string tty = "auto";
  bool noinput = false;
  std::string cwd;
  std::vector<std::string> env;
  std::string name;
  int priority = 0;
  std::string timeout;
  bool quiet = false;
};

v1::TerminalSize WindowSize() {
  v1::TerminalSize size;
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
    size.set_rows(ws.ws_row);
    size.set_cols(ws.ws_col);
  }
  return size;
}

class Session {
 public:
  Session(Client& client, RunOpts opts, std::vector<std::string> command)
      : client_(client), opts_(std::move(opts)), command_(std::move(command)) {}

  int Run() {
    if (opts_.tty != "auto" && opts_.tty != "yes" && opts_.tty != "no") {
      fmt::print(stderr, "invalid tty mode: {}\n", opts_.tty);
      return kExitUsage;
    }
    if (command_.empty()) {
      fmt::print(stderr, "vrun: no command given\nRun 'vrun --help' for usage.\n");
      return kExitUsage;
    }
    tty_ = opts_.tty == "yes" || (opts_.tty == "auto" && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
    v1::TaskSpec spec;
    if (int rc = BuildSpec(spec); rc != 0) return rc;

    sigset_t sigs = ForwardedSignals();
    ctx_ = client_.Context();
    stream_ = client_.tasks().Run(ctx_.get());
    v1::RunRequest start;
    *start.mutable_start() = std::move(spec);
    started_at_ = std::chrono::steady_clock::now();
    // No deadline on the acceptance: a frozen server is still there (cli/unanswered.h).
    UnansweredNote note(client_.address());
    Write(start);
    std::thread(&Session::SignalLoop, this, sigs).detach();
    if (!opts_.noinput) std::thread(&Session::StdinLoop, this).detach();

    v1::RunEvent e;
    while (stream_->Read(&e)) {
      note.Answered();
      if (int rc = Handle(e); rc >= 0) return Exit(rc);
    }
    note.Answered();
    grpc::Status st = stream_->Finish();
    ClearProgress();
    if (cancel_sent_) return Exit(130);
    if (!st.ok()) {
      term_.Restore();
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE && !task_id_.empty()) {
        fmt::print(stderr, "tidepool: lost the connection to the server at {} (task {})\n", client_.address(), task_id_);
        return Exit(kExitTidepoolFailed);
      }
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE && note.told()) {
        ReportLostUnanswered(client_.address());  // sent long ago on an open connection, now broken
        return Exit(kExitTidepoolFailed);
      }
      int rc = client_.Fail(st);
      return Exit(rc == 1 ? kExitTidepoolFailed : rc);
    }
    fmt::print(stderr, "tidepool: the server ended task {} without an exit status\n", task_id_);
    return Exit(kExitTidepoolFailed);
  }

 private:
  int BuildSpec(v1::TaskSpec& spec) {
    CommonSpec c{command_, opts_.cwd, opts_.env, opts_.pool, opts_.name, opts_.priority, opts_.timeout};
    if (Status s = FillSpec(c, &spec); !s.ok()) {
      fmt::print(stderr, "vrun: {}\n", s.message());
      return kExitUsage;
    }
    spec.set_kind(v1::TASK_KIND_INTERACTIVE);
    spec.set_stdin_null(opts_.noinput);
    spec.set_tty(tty_);
    if (tty_) {
      const char* term = std::getenv("TERM");
      spec.set_term(term && *term ? term : "xterm");
      *spec.mutable_terminal_size() = WindowSize();
    }
    return 0;
  }

  void Write(const v1::RunRequest& r) {
    std::lock_guard lock(write_mu_);
    if (!write_closed_ && !stream_->Write(r)) write_closed_ = true;
  }

  // Returns an exit status when the session is over, else -1.
  int Handle(const v1::RunEvent& e) {
    switch (e.event_case()) {
      case v1::RunEvent::kAccepted: {
        std::lock_guard lock(mu_);
        task_id_ = e.accepted().task_id();
        pool_ = e.accepted().pool();
        break;
      }
      case v1::RunEvent::kWaiting: {
        std::lock_guard lock(mu_);
        waiting_ = e.waiting();
        if (!e.waiting().allocation_error().empty() && shown_errors_.insert(e.waiting().allocation_error()).second &&
            !opts_.quiet) {
          ClearProgressLocked();
          fmt::print(stderr, "tidepool: pool {}: {}\n", e.waiting().pool(), e.waiting().allocation_error());
        }
        DrawProgressLocked(/*changed=*/true);
        break;
      }
      case v1::RunEvent::kStarted: {
        {
          std::lock_guard lock(mu_);
          ClearProgressLocked();
          started_ = true;
        }
        if (tty_ && isatty(STDIN_FILENO)) term_.MakeRaw();
        started_cv_.notify_all();
        break;
      }
      case v1::RunEvent::kOutput:
        WriteAll(e.output().stream() == v1::OUTPUT_STREAM_STDERR ? STDERR_FILENO : STDOUT_FILENO, e.output().data());
        break;
      case v1::RunEvent::kStdinWritten: {
        std::lock_guard lock(mu_);
        stdin_acked_ = e.stdin_written();
        stdin_cv_.notify_all();
        break;
      }
      case v1::RunEvent::kExited:
        return StatusOf(e.exited());
      default:
        break;
    }
    return -1;
  }

  int StatusOf(const v1::Exited& x) {
    ClearProgress();
    term_.Restore();
    RunEnd end{x.state() == v1::TASK_STATE_SUCCESS, x.state() == v1::TASK_STATE_CANCELLED, x.has_exit_code(),
               x.exit_code(), x.signal(), x.reason(), x.command_not_found()};
    return RunExitStatus(end, task_id_, opts_.quiet, cancel_sent_);
  }

  int Exit(int rc) {
    if (kill_sent_) rc = 130;  // a second Ctrl-C decided it, whichever thread gets here first
    term_.Restore();
    std::fflush(stdout);
    std::fflush(stderr);
    // Threads may still sit in blocking reads (stdin); end the process without unwinding them.
    _exit(rc);
  }

  void StdinLoop() {
    {
      std::unique_lock lock(mu_);
      started_cv_.wait(lock, [this] { return started_; });
    }
    char buf[64 * 1024];
    while (true) {
      ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        v1::RunRequest r;
        r.set_stdin_eof(true);
        Write(r);
        return;
      }
      {
        std::unique_lock lock(mu_);
        stdin_cv_.wait(lock, [&] { return stdin_sent_ - stdin_acked_ < kStdinWindow; });
        stdin_sent_ += static_cast<uint64_t>(n);
      }
      v1::RunRequest r;
      r.set_stdin(std::string(buf, static_cast<size_t>(n)));
      Write(r);
    }
  }

  void SignalLoop(sigset_t sigs) {
    cli::SignalLoop(
        sigs, tty_, mu_, started_, [this] { DrawProgressLocked(/*changed=*/false); },
        [this](int sig, SignalAction action) {
          v1::RunRequest r;
          switch (action) {
            case SignalAction::kNothing:
              return;
            case SignalAction::kResize:
              *r.mutable_resize() = WindowSize();
              break;
            case SignalAction::kCancel:  // still queued: withdrawn, and the server forgets it
              cancel_sent_ = true;
              r.set_cancel(true);
              break;
            case SignalAction::kKillAndExit:
              kill_sent_ = true;  // before the kill: its task's end may reach Read() first
              r.set_signal(SIGKILL);
              Write(r);
              ClearProgress();
              Exit(130);
              return;
            case SignalAction::kForward:
              r.set_signal(sig);
              break;
          }
          Write(r);
        });
  }

  void DrawProgressLocked(bool changed) {
    if (opts_.quiet || started_ || !waiting_) return;
    auto elapsed = std::chrono::steady_clock::now() - started_at_;
    if (elapsed < std::chrono::seconds(1)) return;
    int secs = static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(elapsed).count());
    const v1::Waiting& w = *waiting_;
    progress_.Draw(WaitingLine(w.pool(), w.starting(), w.idle(), w.position()), secs, changed);
  }

  void ClearProgressLocked() { progress_.Clear(); }
  void ClearProgress() {
    std::lock_guard lock(mu_);
    ClearProgressLocked();
  }

  Client& client_;
  RunOpts opts_;
  std::vector<std::string> command_;
  bool tty_ = false;
  RawTerminal term_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RunRequest, v1::RunEvent>> stream_;
  std::mutex write_mu_;
  bool write_closed_ = false;

  std::mutex mu_;
  std::condition_variable started_cv_, stdin_cv_;
  bool started_ = false;
  std::string task_id_, pool_;
  std::optional<v1::Waiting> waiting_;
  std::set<std::string> shown_errors_;
  std::chrono::steady_clock::time_point started_at_;
  WaitingProgress progress_;
  uint64_t stdin_sent_ = 0, stdin_acked_ = 0;
  std::atomic<bool> cancel_sent_{false};
  std::atomic<bool> kill_sent_{false};
};

}  // namespace

sigset_t ForwardedSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigaddset(&sigs, s);
  return sigs;
}

void AddRunCommand(CLI::App& app, int* rc, const std::vector<std::string>* command) {
  auto opts = std::make_shared<RunOpts>();
  CLI::App* sub = app.add_subcommand("run", "Run a command on a worker, interactively (also installed as vrun)");
  sub->add_option("-P,--pool", opts->pool, "pool or selector (default: the default pool)");
  sub->add_option("--tty", opts->tty, "allocate a terminal: auto|yes|no")->default_str("auto");
  sub->add_flag("-I,--noinput", opts->noinput, "give the command /dev/null as stdin");
  sub->add_option("-C", opts->cwd, "working directory (default: the current one)");
  sub->add_option("-e", opts->env, "set K=V, or copy $K, in the command's environment (repeatable)")
      ->allow_extra_args(false);
  sub->add_option("--name", opts->name, "task name");
  sub->add_option("--priority", opts->priority, "lower runs first (default 0)");
  sub->add_option("--timeout", opts->timeout, "stop the command after this long (e.g. 30s, 5m)");
  sub->add_flag("-q,--quiet", opts->quiet, "no progress line while waiting");
  AddClientOptions(sub, &opts->client);
  sub->footer("Usage: vrun [OPTIONS] [--] COMMAND [ARG...]\nThe command and its arguments reach the worker exactly.");
  sub->callback([opts, rc, command] {
    // Before any gRPC thread exists, so that they all inherit the mask and only our signal
    // thread ever receives these.
    sigset_t sigs = ForwardedSignals();
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);
    Client client(opts->client);
    Session session(client, *opts, *command);
    *rc = session.Run();
  });
}

}  // namespace tidepool::cli
