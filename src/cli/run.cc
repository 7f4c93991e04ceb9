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
#include "common/duration.h"
#include "common/terminal_io.h"
#include "cli/client.h"
#include "cli/unanswered.h"
#include "cli/workspace_client.h"
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
  std::string reattach_for;  // TaskSpec.reattach_for_ms, and how long this client tries
  std::string reattach;      // a task to take up again (what the C vrun hands over), no command
  std::string reattach_offsets = "0,0";
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
    if (command_.empty() == opts_.reattach.empty()) {
      fmt::print(stderr, "vrun: {}\nRun 'vrun --help' for usage.\n",
                 command_.empty() ? "no command given" : "--reattach takes no command");
      return kExitUsage;
    }
    if (!opts_.reattach_for.empty()) {
      auto d = ParseDuration(opts_.reattach_for);
      if (!d.ok() || d->count() <= 0) {
        fmt::print(stderr, "vrun: --reattach-for: {}\n", d.ok() ? "must be more than 0" : d.status().message());
        return kExitUsage;
      }
      reattach_for_ = *d;
    }
    tty_ = opts_.tty == "yes" || (opts_.tty == "auto" && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
    v1::RunRequest start;
    if (opts_.reattach.empty()) {
      if (int rc = BuildSpec(*start.mutable_start()); rc != 0) return rc;
      if (Status s = PrepareWorkspace(client_, start.mutable_start(), opts_.quiet, &base_); !s.ok()) {
        fmt::print(stderr, "tidepool: {}\n", s.message());
        return kExitTidepoolFailed;
      }
      base_hash_ = start.start().workspace().manifest();
    } else if (std::sscanf(opts_.reattach_offsets.c_str(), "%lu,%lu", &received_[0], &received_[1]) != 2) {
      fmt::print(stderr, "vrun: --reattach-offsets must be OUT,ERR (byte counts)\n");
      return kExitUsage;
    }

    sigset_t sigs = ForwardedSignals();
    started_at_ = std::chrono::steady_clock::now();
    std::thread(&Session::SignalLoop, this, sigs).detach();
    if (!opts_.noinput) std::thread(&Session::StdinLoop, this).detach();
    if (!opts_.reattach.empty()) {
      task_id_ = opts_.reattach;
      Reconnect();
    } else {
      ctx_ = client_.Context();
      stream_ = client_.tasks().Run(ctx_.get());
    }
    // No deadline on the acceptance: a frozen server is still there (cli/unanswered.h).
    UnansweredNote note(client_.address());
    if (opts_.reattach.empty()) Write(start);

    grpc::Status st;
    while (true) {
      v1::RunEvent e;
      while (stream_->Read(&e)) {
        note.Answered();
        if (int rc = Handle(e); rc >= 0) return Exit(rc);
      }
      note.Answered();
      {
        std::lock_guard lock(write_mu_);  // no write on a finished stream
        write_closed_ = true;
      }
      st = stream_->Finish();
      ClearProgress();
      if (cancel_sent_) return Exit(130);
      // The server went away with the task (a restart, a crash): the command runs on.
      bool gone = st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::CANCELLED ||
                  (reattached_ && st.error_code() == grpc::StatusCode::ABORTED);
      if (!gone || TaskId().empty()) break;
      Reconnect();
    }
    if (!st.ok()) {
      term_.Restore();
      if (reattached_) {
        fmt::print(stderr, "tidepool: cannot reattach to task {}: {}\n", task_id_, st.error_message());
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
  // As the fast client (fastclient/run_session.h): says once that the server went away, then opens
  // a new stream with a Reattach request every 100 ms doubling to 2 s, until one answers with
  // events (the stream in stream_) or reattach_for has passed (then exits 255, saying so).
  void Reconnect() {
    const std::string id = TaskId();
    if (!told_) {
      told_ = true;
      std::lock_guard lock(mu_);
      ClearProgressLocked();
      fmt::print(stderr, "tidepool: server restarting; your command is still running (task {}){}", id,
                 term_.raw ? "\r\n" : "\n");
    }
    auto deadline = std::chrono::steady_clock::now() + reattach_for_;
    auto backoff = std::chrono::milliseconds(100);
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(backoff, deadline - std::chrono::steady_clock::now()));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      auto ctx = client_.Context();
      auto stream = client_.tasks().Run(ctx.get());
      v1::RunRequest r;
      r.mutable_reattach()->set_task_id(id);
      r.mutable_reattach()->set_stdout_offset(received_[0]);
      r.mutable_reattach()->set_stderr_offset(received_[1]);
      v1::RunEvent first;
      if (!stream->Write(r) || !stream->Read(&first)) {
        grpc::Status st = stream->Finish();
        // Not there yet, or a server still shutting down (it cancels the calls it has): again.
        if (st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::CANCELLED) continue;
        term_.Restore();
        fmt::print(stderr, "tidepool: cannot reattach to task {}: {}\n", id, st.error_message());
        Exit(kExitTidepoolFailed);
      }
      {
        std::lock_guard lock(write_mu_);
        ctx_ = std::move(ctx);
        stream_ = std::move(stream);
        write_closed_ = false;
      }
      {
        std::lock_guard lock(mu_);
        stdin_sent_ = stdin_acked_;  // what went to the old server and no further is not waited for
      }
      stdin_cv_.notify_all();
      reattached_ = true;
      if (int rc = Handle(first); rc >= 0) Exit(rc);
      return;
    }
    term_.Restore();
    fmt::print(stderr,
               "tidepool: the server at {} did not come back within {}; task {} was still running when it went away "
               "(`tidepool task get {}` tells what became of it once the server is back)\n",
               client_.address(), FormatDuration(reattach_for_), id, id);
    Exit(kExitTidepoolFailed);
  }

  std::string TaskId() {
    std::lock_guard lock(mu_);
    return task_id_;
  }

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
    spec.set_reattach_for_ms(opts_.reattach_for.empty() ? 0 : reattach_for_.count());
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
        received_[e.output().stream() == v1::OUTPUT_STREAM_STDERR ? 1 : 0] += e.output().data().size();
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
    // A result equal to what was sent: the task changed nothing (no download, no diff).
    if (!x.workspace_result().empty() && x.workspace_result() != base_hash_) BringBackResult(x.workspace_result());
    RunEnd end{x.state() == v1::TASK_STATE_SUCCESS, x.state() == v1::TASK_STATE_CANCELLED, x.has_exit_code(),
               x.exit_code(), x.signal(), x.reason(), x.command_not_found()};
    return RunExitStatus(end, task_id_, opts_.quiet, cancel_sent_);
  }

  // The task's changes to the workspace, into the caller's tree before vrun exits. A conflict
  // changes nothing and is reported with how to settle it (`tidepool task sync`).
  void BringBackResult(const std::string& result) {
    std::string base = base_hash_;
    if (base.empty()) {  // reattached: the base is the task's
      v1::GetTaskRequest req;
      req.set_id(task_id_);
      v1::Task t;
      auto ctx = client_.Context();
      if (client_.tasks().GetTask(ctx.get(), req, &t).ok()) base = t.workspace().manifest();
    }
    if (base.empty()) return;
    auto back = BringBack(client_, base, result, workspace::OnConflict::kStop, base_hash_.empty() ? nullptr : &base_);
    if (!back.ok()) {
      fmt::print(stderr, "tidepool: the task's workspace changes were not brought back: {} (`tidepool task sync {}` tries again)\n",
                 back.status().message(), task_id_);
      return;
    }
    ReportConflicts(*back, task_id_);
  }

  int Exit(int rc) {
    cli::EndRun(rc, kill_sent_, term_);
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
    progress_.Draw(WaitingLine(w.pool(), w.starting(), w.idle(), w.position(), w.starting_detail()), secs, changed);
  }

  void ClearProgressLocked() { progress_.Clear(); }
  void ClearProgress() {
    std::lock_guard lock(mu_);
    ClearProgressLocked();
  }

  Client& client_;
  v1::WorkspaceManifest base_;  // the workspace this vrun sent (base_hash_ "" = none)
  std::string base_hash_;
  RunOpts opts_;
  std::vector<std::string> command_;
  bool tty_ = false;
  RawTerminal term_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RunRequest, v1::RunEvent>> stream_;
  std::mutex write_mu_;
  bool write_closed_ = false;
  std::chrono::milliseconds reattach_for_{5 * 60 * 1000};
  unsigned long received_[2] = {0, 0};  // stdout, stderr bytes written out (the main thread's)
  bool told_ = false, reattached_ = false;

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
  sub->add_option("--reattach-for", opts->reattach_for,
                  "if the server restarts, keep the command running and reattach for this long (default 5m)");
  sub->add_option("--reattach", opts->reattach, "take up the task ID whose vrun lost its server (no command)");
  sub->add_option("--reattach-offsets", opts->reattach_offsets, "with --reattach: OUT,ERR bytes already written out");
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
