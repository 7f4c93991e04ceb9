// The agent: a task's life, from its start (its workspace first) to its exit report. See agent_loop.h.
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/agent_loop.h"
#include "common/process.h"

namespace tidepool::agent::internal {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

void Agent::StartTask(const v1::StartTask& s) {
  if (shutting_down_) return;
  if (TaskRun* existing = Find(s.task_id())) {
    if (existing->attempt != s.attempt()) {
      spdlog::warn("agent: start of {} attempt {} while attempt {} is held; ignored", s.task_id(), s.attempt(),
                   existing->attempt);
    }
    return;  // a resend of what we already run
  }
  auto t = std::make_unique<TaskRun>();
  t->id = s.task_id();
  t->attempt = s.attempt();
  t->tty = s.tty();
  t->out.stream = v1::OUTPUT_STREAM_STDOUT;
  t->err.stream = v1::OUTPUT_STREAM_STDERR;
  TaskRun* raw = t.get();
  tasks_[t->id] = std::move(t);

  auto user = users_.For(s.owner());
  if (!user.ok()) {
    FailStart(raw, fmt::format("cannot pick a Unix user for {}: {}", s.owner(), user.status().message()), false);
    return;
  }
  if (!s.workspace().manifest().empty()) {
    // The command starts once its files are there, never on a partial tree. They are made with
    // the rights of the task's user (agent/fs_user.h), not the agent's.
    raw->workspace = std::make_unique<TaskWorkspace>(
        s.task_id(), s.owner(), s.workspace(), user->uid, user->gid, &ws_,
        [this](v1::AgentMessage m) { return Send(std::move(m)); });
    auto start = std::make_shared<v1::StartTask>(s);
    TaskUser u = *user;
    raw->workspace->Prepare([this, start, u](Status st) {
      TaskRun* t = Find(start->task_id());
      if (!t || t->attempt != start->attempt() || t->exited) return;
      if (!st.ok()) return FailStart(t, std::string(st.message()), false);
      t->workspace_ready = true;
      if (shutting_down_) return FailStart(t, "the agent is stopping", false);
      Launch(t, *start, u);
    });
    return;
  }
  Launch(raw, s, *user);
}

void Agent::Launch(TaskRun* raw, const v1::StartTask& s, const TaskUser& user_) {
  const TaskUser* user = &user_;
  SpawnOptions o;
  o.uid = user->uid;
  o.gid = user->gid;
  o.argv.assign(s.argv().begin(), s.argv().end());
  for (const auto& [k, v] : s.env()) o.env.push_back(k + "=" + v);
  if (s.tty()) o.env.push_back("TERM=" + (s.term().empty() ? std::string("xterm") : s.term()));
  o.cwd = s.cwd().empty() ? flags_.work_dir : s.cwd();
  o.new_session = true;
  o.die_with_parent = true;  // a task does not outlive its agent

  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, in_pipe[2] = {-1, -1};
  int master = -1, slave = -1;
  if (s.tty()) {
    winsize ws{};
    ws.ws_row = static_cast<unsigned short>(s.terminal_size().rows() ? s.terminal_size().rows() : 24);
    ws.ws_col = static_cast<unsigned short>(s.terminal_size().cols() ? s.terminal_size().cols() : 80);
    if (::openpty(&master, &slave, nullptr, nullptr, &ws) != 0) {
      FailStart(raw, fmt::format("cannot allocate a terminal: {}", std::strerror(errno)), false);
      return;
    }
    ::fcntl(master, F_SETFD, FD_CLOEXEC);
    o.tty_path = ::ttyname(slave);
    // The task's own terminal, as login would make it (the child opens it after switching).
    if (user->uid >= 0 && ::fchown(slave, static_cast<uid_t>(user->uid), static_cast<gid_t>(-1)) != 0) {
      FailStart(raw, fmt::format("cannot give the terminal to uid {}: {}", user->uid, std::strerror(errno)), false);
      ::close(master);
      ::close(slave);
      return;
    }
  } else {
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
      FailStart(raw, fmt::format("cannot create pipes: {}", std::strerror(errno)), false);
      return;
    }
    // Bigger pipes: a task writing fast hands over 1 MiB per wake-up instead of 64 KiB (the
    // default), which is what bounds stored output per second (P11). Best effort: the limit is
    // /proc/sys/fs/pipe-max-size.
    for (int fd : {out_pipe[0], err_pipe[0]}) ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(kReadChunk));
    o.stdout_fd = out_pipe[1];
    o.stderr_fd = err_pipe[1];
    if (!s.stdin_null()) {
      if (::pipe2(in_pipe, O_CLOEXEC) != 0) {
        FailStart(raw, fmt::format("cannot create pipes: {}", std::strerror(errno)), false);
        return;
      }
      o.stdin_fd = in_pipe[0];
    }
  }
  SpawnResult r = Spawn(o);
  for (int fd : {out_pipe[1], err_pipe[1], in_pipe[0], slave}) {
    if (fd >= 0) ::close(fd);
  }
  if (r.pid < 0) {
    for (int fd : {out_pipe[0], err_pipe[0], in_pipe[1], master}) {
      if (fd >= 0) ::close(fd);
    }
    FailStart(raw, r.message, r.error == SpawnError::kNotFound);
    return;
  }
  raw->pid = r.pid;
  raw->pidfd = PidfdOpen(r.pid);
  if (s.tty()) {
    raw->out.fd = master;
    raw->stdin_fd = ::dup(master);
    ::fcntl(raw->stdin_fd, F_SETFD, FD_CLOEXEC);
    if (s.stdin_null()) raw->stdin_eof = true;
  } else {
    raw->out.fd = out_pipe[0];
    raw->err.fd = err_pipe[0];
    raw->stdin_fd = in_pipe[1];
  }
  for (OutBuf* b : {&raw->out, &raw->err}) {
    if (b->fd < 0) continue;
    b->eof = false;
    SetNonBlocking(b->fd);
    WatchOutput(raw, b);
  }
  if (raw->stdin_fd >= 0) SetNonBlocking(raw->stdin_fd);
  std::string id = raw->id;
  Watch(raw->pidfd, EPOLLIN, [this, id](uint32_t) { OnProcessExit(id); });
  v1::AgentMessage m;
  m.mutable_started()->set_task_id(raw->id);
  m.mutable_started()->set_attempt(raw->attempt);
  m.mutable_started()->set_pid(r.pid);
  Send(std::move(m));
  if (s.timeout_ms() > 0) {
    int attempt = raw->attempt;
    Millis grace(s.kill_grace_ms() > 0 ? s.kill_grace_ms() : 10000);
    After(Millis(s.timeout_ms()), [this, id, attempt, grace] {
      TaskRun* t = Find(id);
      if (t && t->attempt == attempt && !t->exited) Terminate(t, "timeout", grace);
    });
  }
  if (raw->stdin_eof) FlushStdin(raw);
}

void Agent::FailStart(TaskRun* t, const std::string& error, bool not_found) {
  t->exited = true;
  t->report.set_error(error);
  t->report.set_command_not_found(not_found);
  if (not_found) {
    t->report.set_has_exit_code(true);
    t->report.set_exit_code(127);
  }
  MaybeFinish(t);
}

void Agent::Terminate(TaskRun* t, const std::string& reason, Millis grace) {
  if (t->end_reason.empty()) t->end_reason = reason;
  if (t->pid <= 0) {
    // Still waiting for its workspace: it never starts; its report says why it ended.
    if (t->workspace && !t->exited) {
      t->exited = true;
      MaybeFinish(t);
    }
    return;
  }
  ::kill(-t->pid, SIGTERM);
  t->term_sent = true;
  std::string id = t->id;
  int attempt = t->attempt;
  After(grace, [this, id, attempt] {
    TaskRun* t = Find(id);
    if (t && t->attempt == attempt && !t->exited) ::kill(-t->pid, SIGKILL);
  });
}

void Agent::OnProcessExit(const std::string& id) {
  TaskRun* t = Find(id);
  if (!t || t->exited) return;
  int status = 0;
  if (::waitpid(t->pid, &status, WNOHANG) != t->pid) return;
  t->exited = true;
  Unwatch(t->pidfd);
  ::close(t->pidfd);
  t->pidfd = -1;
  if (WIFEXITED(status)) {
    t->report.set_has_exit_code(true);
    t->report.set_exit_code(WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    t->report.set_signal(WTERMSIG(status));
  }
  // The task is its process: what it left behind in its process group goes with it.
  ::kill(-t->pid, SIGKILL);
  CloseStdin(t);
  int attempt = t->attempt;
  After(kDrainAfterExit, [this, id, attempt] {
    TaskRun* t = Find(id);
    if (!t || t->attempt != attempt || t->finished) return;
    // Something outside the group still holds the pipes: drain what is there and stop.
    for (OutBuf* b : {&t->out, &t->err}) {
      while (b->fd >= 0 && !b->paused) {
        uint64_t before = b->produced;
        ReadOutput(t, b);
        if (b->produced == before) break;
      }
      CloseOutput(b);
    }
    MaybeFinish(t);
  });
  MaybeFinish(t);
}

void Agent::MaybeFinish(TaskRun* t) {
  if (t->finished || !t->exited || !t->out.eof || !t->err.eof) return;
  if (t->workspace_ready && !t->workspace_collected) {
    // What the command changed goes to the server before its exit is reported.
    if (t->workspace_collecting) return;
    t->workspace_collecting = true;
    std::string id = t->id;
    int attempt = t->attempt;
    t->workspace->Collect([this, id, attempt](Result<std::string> r) {
      TaskRun* t = Find(id);
      if (!t || t->attempt != attempt) return;
      t->workspace_collected = true;
      if (r.ok()) {
        t->report.set_workspace_result(*r);
      } else {
        spdlog::error("task {}: its workspace could not be sent back: {}", id, r.status().message());
        if (t->report.error().empty()) {
          t->report.set_error(fmt::format("the task's workspace could not be sent back: {}", r.status().message()));
        }
      }
      MaybeFinish(t);
    });
    return;
  }
  t->finished = true;
  t->report.set_task_id(t->id);
  t->report.set_attempt(t->attempt);
  t->report.set_reason(t->end_reason);
  t->report.set_stdout_bytes(t->out.produced);
  t->report.set_stderr_bytes(t->err.produced);
  SendExitReport(*t);
  MaybeExit();
}

void Agent::Close(TaskRun* t) {
  for (OutBuf* b : {&t->out, &t->err}) CloseOutput(b);
  CloseStdin(t);
  if (t->pidfd >= 0) {
    Unwatch(t->pidfd);
    ::close(t->pidfd);
    t->pidfd = -1;
  }
}

}  // namespace tidepool::agent::internal
