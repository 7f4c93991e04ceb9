#include "agent/agent.h"

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
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/connection.h"
#include "agent/task_users.h"
#include "agent/workspace_sync.h"
#include "common/exit_reasons.h"
#include "common/random.h"
#include "common/fs.h"
#include "common/logging.h"
#include "common/process.h"

namespace tidepool::agent {

namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

constexpr size_t kReadChunk = 1024 * 1024;
constexpr uint64_t kUnackedLimit = 32 * 1024 * 1024;  // per stream; = the server's stream window
constexpr Millis kDrainAfterExit{2000};               // stragglers holding the pipes open
constexpr Millis kShutdownGrace{5000};
constexpr Millis kRetryFirst{200}, kRetryMax{5000};  // offering refused output again

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

struct OutBuf {
  v1::OutputStream stream = v1::OUTPUT_STREAM_STDOUT;
  int fd = -1;
  bool eof = true;
  bool paused = false;
  uint64_t acked = 0;
  uint64_t produced = 0;
  std::deque<std::pair<uint64_t, std::string>> chunks;  // unacknowledged, with their offsets
  uint64_t unacked() const { return produced - acked; }
  // The server could not store some of it (OutputAck.retry_later, e.g. its disk is full): new
  // output is held, and one chunk is offered again after `backoff` until the server takes it.
  bool held = false;
  bool probe_pending = false;
  std::chrono::milliseconds backoff{0};
};

struct TaskRun {
  std::string id;
  int attempt = 0;
  pid_t pid = -1;
  int pidfd = -1;
  bool tty = false;
  OutBuf out, err;
  int stdin_fd = -1;
  std::string stdin_pending;
  bool stdin_eof = false;
  bool stdin_writable_wait = false;
  uint64_t stdin_written = 0;
  bool exited = false;       // the process is gone (or never started)
  bool finished = false;     // exited and all output read: the exit report exists
  v1::TaskExited report;
  std::string end_reason;    // timeout | cancelled
  bool term_sent = false;
  bool output_refused = false;  // some output was refused once: the exit report goes again once all is stored
  // A synced workspace (StartTask.workspace): made before the command, collected after it.
  std::unique_ptr<TaskWorkspace> workspace;
  bool workspace_ready = false;
  bool workspace_collecting = false;
  bool workspace_collected = false;
};

class Agent {
 public:
  Agent(AgentFlags flags, TaskUsers users, std::unique_ptr<Transport> transport)
      : flags_(std::move(flags)),
        users_(std::move(users)),
        instance_id_(RandomId(12)),
        transport_(std::move(transport)) {
    ws_.cache_dir = flags_.cache_dir;
  }

  int Run() {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    sigfd_ = ::signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    Watch(evfd_, EPOLLIN, [this](uint32_t) { DrainInbox(); });
    Watch(sigfd_, EPOLLIN, [this](uint32_t) {
      signalfd_siginfo si;
      while (::read(sigfd_, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo != SIGHUP) BeginShutdown(fmt::format("signal {}", si.ssi_signo));
      }
    });

    Connection::Callbacks cb;
    cb.make_hello = [this] {
      auto p = std::make_shared<std::promise<v1::AgentHello>>();
      auto f = p->get_future();
      Post([this, p] { p->set_value(MakeHello()); });
      return f.get();
    };
    cb.connected = [this](uint64_t gen, const v1::Welcome& w) { Post([this, gen, w] { OnConnected(gen, w); }); };
    cb.message = [this](uint64_t gen, v1::ServerMessage m) {
      auto shared = std::make_shared<v1::ServerMessage>(std::move(m));
      Post([this, gen, shared] {
        if (gen == gen_) OnMessage(*shared);
      });
    };
    cb.disconnected = [this](uint64_t gen) {
      Post([this, gen] {
        if (gen == gen_) gen_ = 0;
      });
    };
    cb.refused = [this](const std::string& why) {
      Post([this, why] {
        spdlog::error("agent {}: the server refused this agent: {}", flags_.name, why);
        refused_ = true;
        BeginShutdown("refused by the server");
      });
    };
    conn_ = std::make_unique<Connection>(flags_.server, std::move(transport_), std::move(cb));
    conn_->Start();
    spdlog::info("agent {} (pool {}, {} slot{}) dialing {}", flags_.name, flags_.pool, flags_.slots,
                 flags_.slots > 1 ? "s" : "", flags_.server);

    while (!done_) {
      int timeout = -1;
      if (!timers_.empty()) {
        auto d = std::chrono::duration_cast<Millis>(timers_.top().at - Clock::now()).count();
        timeout = static_cast<int>(std::max<int64_t>(0, d));
      }
      epoll_event events[64];
      int n = ::epoll_wait(epfd_, events, 64, timeout);
      for (int i = 0; i < n; ++i) {
        auto it = handlers_.find(events[i].data.fd);
        if (it != handlers_.end()) {
          auto fn = it->second;  // the handler may unregister itself
          fn(events[i].events);
        }
      }
      RunTimers();
    }
    conn_->Stop();
    return refused_ ? 3 : 0;
  }

 private:
  struct Timer {
    Clock::time_point at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Timer& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  // ---- event loop plumbing ----
  void Watch(int fd, uint32_t events, std::function<void(uint32_t)> fn) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (handlers_.count(fd)) {
      ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
    } else {
      ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    }
    handlers_[fd] = std::move(fn);
  }
  void Unwatch(int fd) {
    if (handlers_.erase(fd)) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  }
  void After(Millis d, std::function<void()> fn) { timers_.push({Clock::now() + d, timer_seq_++, std::move(fn)}); }
  void RunTimers() {
    auto now = Clock::now();
    while (!timers_.empty() && timers_.top().at <= now) {
      auto fn = timers_.top().fn;
      timers_.pop();
      fn();
    }
  }
  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(inbox_mu_);
      inbox_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(evfd_, &one, sizeof(one));
  }
  void DrainInbox() {
    uint64_t v;
    [[maybe_unused]] ssize_t r = ::read(evfd_, &v, sizeof(v));
    std::deque<std::function<void()>> work;
    {
      std::lock_guard lock(inbox_mu_);
      work.swap(inbox_);
    }
    for (auto& fn : work) fn();
  }

  bool Send(v1::AgentMessage m) { return gen_ != 0 && conn_->Send(gen_, std::move(m)); }

  // ---- connection ----
  v1::AgentHello MakeHello() {
    v1::AgentHello h;
    h.set_name(flags_.name);
    h.set_pool(flags_.pool);
    h.set_token(flags_.token);
    h.set_slots(flags_.slots);
    for (const auto& [k, v] : flags_.labels) (*h.mutable_labels())[k] = v;
    h.set_version("0.1.0");
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    h.set_hostname(host);
    const char* addr = std::getenv("TIDEPOOL_AGENT_ADDRESS");
    h.set_address(addr && *addr ? addr : host);
    h.mutable_resources()->set_cpus(static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
    h.mutable_resources()->set_memory_bytes(static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE));
    h.set_instance_id(instance_id_);
    if (users_.mode() == TaskUsers::Mode::kOwner) h.set_task_isolation("owner");
    h.set_ends_at_ms(flags_.ends_at_ms);
    h.set_drain_at_ms(flags_.drain_at_ms);
    for (const auto& [id, t] : tasks_) {
      v1::AgentTaskReport* r = h.add_tasks();
      r->set_task_id(id);
      r->set_attempt(t->attempt);
      r->set_exited(t->finished);
    }
    return h;
  }

  void OnConnected(uint64_t gen, const v1::Welcome& w) {
    gen_ = gen;
    heartbeat_ = Millis(w.heartbeat_interval_ms() > 0 ? w.heartbeat_interval_ms() : 5000);
    spdlog::info("agent {}: connected to {}", flags_.name, flags_.server);
    // Everything not yet acknowledged goes again; the server keeps each byte once.
    for (auto& [id, t] : tasks_) {
      for (OutBuf* b : {&t->out, &t->err}) SendAllHeld(*t, b);
      if (t->finished) SendExitReport(*t);
      if (t->workspace) t->workspace->Reconnected();
    }
    ScheduleHeartbeat(gen);
  }

  void ScheduleHeartbeat(uint64_t gen) {
    After(heartbeat_, [this, gen] {
      if (gen != gen_) return;
      v1::AgentMessage m;
      m.mutable_heartbeat()->set_seq(++heartbeat_seq_);
      Send(std::move(m));
      ScheduleHeartbeat(gen);
    });
  }

  void OnMessage(const v1::ServerMessage& m) {
    switch (m.msg_case()) {
      case v1::ServerMessage::kStart: StartTask(m.start()); break;
      case v1::ServerMessage::kSignal: {
        TaskRun* t = Find(m.signal().task_id());
        if (t && !t->exited && m.signal().signal() > 0 && m.signal().signal() < 65) ::kill(-t->pid, m.signal().signal());
        break;
      }
      case v1::ServerMessage::kStdin: OnStdin(m.stdin()); break;
      case v1::ServerMessage::kResize: {
        TaskRun* t = Find(m.resize().task_id());
        if (t && t->tty && t->out.fd >= 0) {
          winsize ws{};
          ws.ws_row = static_cast<unsigned short>(m.resize().size().rows());
          ws.ws_col = static_cast<unsigned short>(m.resize().size().cols());
          ::ioctl(t->out.fd, TIOCSWINSZ, &ws);
        }
        break;
      }
      case v1::ServerMessage::kCancel: {
        TaskRun* t = Find(m.cancel().task_id());
        if (t && !t->exited) Terminate(t, "cancelled", Millis(m.cancel().grace_ms()));
        break;
      }
      case v1::ServerMessage::kOutputAck: OnAck(m.output_ack()); break;
      case v1::ServerMessage::kExitAck: {
        auto it = tasks_.find(m.exit_ack().task_id());
        if (it != tasks_.end() && it->second->finished && it->second->attempt == m.exit_ack().attempt()) {
          Close(it->second.get());
          tasks_.erase(it);
          MaybeExit();
        }
        break;
      }
      case v1::ServerMessage::kBlobData:
        for (auto& [id, t] : tasks_) {
          if (t->workspace && t->workspace->OnBlobData(m.blob_data())) break;
        }
        break;
      case v1::ServerMessage::kBlobAnswer:
        for (auto& [id, t] : tasks_) {
          if (t->workspace && t->workspace->OnBlobAnswer(m.blob_answer())) break;
        }
        break;
      case v1::ServerMessage::kDrain:
        draining_ = true;
        break;
      case v1::ServerMessage::kHeartbeatInterval:
        // Taken from the next beat on (the one already scheduled keeps its time).
        if (m.heartbeat_interval().interval_ms() > 0) heartbeat_ = Millis(m.heartbeat_interval().interval_ms());
        break;
      default:
        break;
    }
  }

  TaskRun* Find(const std::string& id) {
    auto it = tasks_.find(id);
    return it == tasks_.end() ? nullptr : it->second.get();
  }

  // ---- tasks ----
  void StartTask(const v1::StartTask& s) {
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

  void Launch(TaskRun* raw, const v1::StartTask& s, const TaskUser& user_) {
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

  void FailStart(TaskRun* t, const std::string& error, bool not_found) {
    t->exited = true;
    t->report.set_error(error);
    t->report.set_command_not_found(not_found);
    if (not_found) {
      t->report.set_has_exit_code(true);
      t->report.set_exit_code(127);
    }
    MaybeFinish(t);
  }

  void WatchOutput(TaskRun* t, OutBuf* b) {
    std::string id = t->id;
    bool is_err = b == &t->err;
    Watch(b->fd, EPOLLIN, [this, id, is_err](uint32_t) {
      TaskRun* t = Find(id);
      if (t) ReadOutput(t, is_err ? &t->err : &t->out);
    });
  }

  void ReadOutput(TaskRun* t, OutBuf* b) {
    if (b->fd < 0) return;
    read_buf_.resize(kReadChunk);
    ssize_t n = ::read(b->fd, read_buf_.data(), read_buf_.size());
    if (n > 0) {
      std::string data(read_buf_.data(), static_cast<size_t>(n));
      uint64_t offset = b->produced;
      b->produced += static_cast<uint64_t>(n);
      if (!b->held) SendOutput(*t, *b, offset, data);
      b->chunks.emplace_back(offset, std::move(data));  // kept until acknowledged (a resend)
      if (b->unacked() >= kUnackedLimit) {
        // The server (or its client) is behind: stop reading; the task waits on its writes.
        Unwatch(b->fd);
        b->paused = true;
      }
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // EOF (or EIO: the PTY's other side closed).
    CloseOutput(b);
    MaybeFinish(t);
  }

  void CloseOutput(OutBuf* b) {
    if (b->fd >= 0) {
      Unwatch(b->fd);
      ::close(b->fd);
      b->fd = -1;
    }
    b->eof = true;
    b->paused = false;
  }

  void SendOutput(const TaskRun& t, const OutBuf& b, uint64_t offset, const std::string& data) {
    v1::AgentMessage m;
    v1::TaskOutput* o = m.mutable_output();
    o->set_task_id(t.id);
    o->set_attempt(t.attempt);
    o->set_stream(b.stream);
    o->set_offset(offset);
    o->set_data(data);
    Send(std::move(m));
  }

  void OnAck(const v1::OutputAck& a) {
    TaskRun* t = Find(a.task_id());
    if (!t) return;
    OutBuf* b = a.stream() == v1::OUTPUT_STREAM_STDERR ? &t->err : &t->out;
    if (a.offset() < b->acked) return;  // an older ack overtaken by a newer one
    const bool progress = a.offset() > b->acked;
    b->acked = std::min(a.offset(), b->produced);
    while (!b->chunks.empty()) {
      auto& [off, data] = b->chunks.front();
      if (off + data.size() <= b->acked) {
        b->chunks.pop_front();
      } else {
        if (off < b->acked) {
          data.erase(0, b->acked - off);
          off = b->acked;
        }
        break;
      }
    }
    if (a.retry_later()) {
      HoldOutput(t, b);
    } else if (b->held) {
      // The server takes output again (it stored the probe, or a vrun reattached and the server
      // says so with an ack at the offset it needs).
      SendAllHeld(*t, b);
    }
    if (t->finished && t->output_refused && !b->held && progress && t->out.chunks.empty() && t->err.chunks.empty()) {
      // Its exit report came before the server had all its output, so it was not taken.
      t->output_refused = false;
      SendExitReport(*t);
    }
    if (b->paused && b->unacked() < kUnackedLimit / 2 && b->fd >= 0) {
      b->paused = false;
      WatchOutput(t, b);
    }
  }

  // Everything not yet acknowledged goes, in order, and the stream is no longer held (after a
  // reconnect, or once the server takes output again); the server keeps each byte once.
  void SendAllHeld(const TaskRun& t, OutBuf* b) {
    b->held = false;
    b->backoff = Millis(0);
    for (const auto& [offset, data] : b->chunks) SendOutput(t, *b, offset, data);
  }

  void SendExitReport(const TaskRun& t) {
    v1::AgentMessage m;
    *m.mutable_exited() = t.report;
    m.mutable_exited()->set_output_pending(!t.out.chunks.empty() || !t.err.chunks.empty());
    Send(std::move(m));
  }

  // The server could not store output of this stream: hold what follows and offer the first
  // held chunk again after a backoff (200 ms doubling to 5 s), until an ack without
  // retry_later says it is stored. Never more than one offer in flight per stream.
  void HoldOutput(TaskRun* t, OutBuf* b) {
    b->held = true;
    t->output_refused = true;
    if (b->probe_pending || b->chunks.empty()) return;
    b->backoff = b->backoff.count() == 0 ? kRetryFirst : std::min(b->backoff * 2, kRetryMax);
    b->probe_pending = true;
    std::string id = t->id;
    int attempt = t->attempt;
    bool is_err = b == &t->err;
    After(b->backoff, [this, id, attempt, is_err] {
      TaskRun* t = Find(id);
      if (!t || t->attempt != attempt) return;
      OutBuf* b = is_err ? &t->err : &t->out;
      b->probe_pending = false;
      if (b->held && !b->chunks.empty()) SendOutput(*t, *b, b->chunks.front().first, b->chunks.front().second);
    });
  }

  void OnStdin(const v1::StdinData& s) {
    TaskRun* t = Find(s.task_id());
    if (!t || t->stdin_fd < 0) return;
    t->stdin_pending += s.data();
    if (s.eof()) t->stdin_eof = true;
    FlushStdin(t);
  }

  void FlushStdin(TaskRun* t) {
    while (!t->stdin_pending.empty() && t->stdin_fd >= 0) {
      ssize_t n = ::write(t->stdin_fd, t->stdin_pending.data(), t->stdin_pending.size());
      if (n > 0) {
        t->stdin_pending.erase(0, static_cast<size_t>(n));
        t->stdin_written += static_cast<uint64_t>(n);
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        if (!t->stdin_writable_wait) {
          t->stdin_writable_wait = true;
          std::string id = t->id;
          // The PTY master shares one fd for both directions via a dup, so watching it is safe.
          Watch(t->stdin_fd, EPOLLOUT, [this, id](uint32_t) {
            TaskRun* t = Find(id);
            if (!t) return;
            t->stdin_writable_wait = false;
            Unwatch(t->stdin_fd);
            FlushStdin(t);
          });
        }
        break;
      }
      // EPIPE or another error: the task stopped reading its stdin for good.
      t->stdin_pending.clear();
      CloseStdin(t);
      break;
    }
    if (t->stdin_written > 0) {
      v1::AgentMessage m;
      m.mutable_stdin_ack()->set_task_id(t->id);
      m.mutable_stdin_ack()->set_written(t->stdin_written);
      Send(std::move(m));
    }
    if (t->stdin_pending.empty() && t->stdin_eof && t->stdin_fd >= 0) {
      if (t->tty) {
        const char eot = 4;  // ^D: end of input for a program reading the terminal
        [[maybe_unused]] ssize_t w = ::write(t->stdin_fd, &eot, 1);
      }
      CloseStdin(t);
    }
  }

  void CloseStdin(TaskRun* t) {
    if (t->stdin_fd < 0) return;
    if (t->stdin_writable_wait) Unwatch(t->stdin_fd);
    t->stdin_writable_wait = false;
    ::close(t->stdin_fd);
    t->stdin_fd = -1;
  }

  void Terminate(TaskRun* t, const std::string& reason, Millis grace) {
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

  void OnProcessExit(const std::string& id) {
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

  void MaybeFinish(TaskRun* t) {
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

  void Close(TaskRun* t) {
    for (OutBuf* b : {&t->out, &t->err}) CloseOutput(b);
    CloseStdin(t);
    if (t->pidfd >= 0) {
      Unwatch(t->pidfd);
      ::close(t->pidfd);
      t->pidfd = -1;
    }
  }

  // ---- shutdown ----
  void BeginShutdown(const std::string& why) {
    if (shutting_down_) return;
    shutting_down_ = true;
    spdlog::info("agent {}: stopping ({}); {} task{} to stop", flags_.name, why, tasks_.size(),
                 tasks_.size() == 1 ? "" : "s");
    for (auto& [id, t] : tasks_) {
      if (!t->exited) Terminate(t.get(), kAgentStopped, kShutdownGrace);
    }
    // Give exit reports a moment to reach the server, then go regardless.
    After(kShutdownGrace + Millis(2000), [this] { done_ = true; });
    MaybeExit();
  }

  void MaybeExit() {
    if (!shutting_down_) return;
    for (auto& [id, t] : tasks_) {
      if (!t->finished) return;
      if (gen_ != 0 && !refused_) return;  // wait for the acks while connected
    }
    done_ = true;
  }

  AgentFlags flags_;
  TaskUsers users_;
  WorkspaceShared ws_;
  std::string instance_id_;
  std::unique_ptr<Transport> transport_;  // until the connection takes it
  int epfd_ = -1, evfd_ = -1, sigfd_ = -1;
  std::unordered_map<int, std::function<void(uint32_t)>> handlers_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  std::mutex inbox_mu_;
  std::deque<std::function<void()>> inbox_;
  std::unique_ptr<Connection> conn_;
  uint64_t gen_ = 0;
  Millis heartbeat_{5000};
  uint64_t heartbeat_seq_ = 0;
  std::map<std::string, std::unique_ptr<TaskRun>> tasks_;
  std::vector<char> read_buf_;  // one task output read at a time (the event loop is one thread)
  bool draining_ = false;
  bool shutting_down_ = false;
  bool refused_ = false;
  bool done_ = false;
};

}  // namespace

int RunAgent(const AgentFlags& flags, std::unique_ptr<Transport> transport) {
  InitLogging(flags.log_level);
  if (!flags.work_dir.empty() && ::chdir(flags.work_dir.c_str()) != 0) {
    spdlog::error("agent: --work-dir {}: {}", flags.work_dir, std::strerror(errno));
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // Neither tasks nor anything else running as this user may read the agent's environment (its
  // worker token) or memory, or trace it (task_users.h).
  if (::prctl(PR_SET_DUMPABLE, 0) != 0) {
    spdlog::error("agent: cannot make itself non-dumpable: {}", std::strerror(errno));
    return 2;
  }
  auto users = TaskUsers::Make(flags.run_tasks_as, flags.task_uids, flags.task_uid_map);
  if (!users.ok()) {
    spdlog::error("agent: {}", users.status().message());
    return 2;
  }
  if (users->mode() == TaskUsers::Mode::kAgent) {
    spdlog::info("agent: every task runs as this agent's Unix user (uid {}); tasks of different owners are not "
                 "isolated from each other",
                 ::getuid());
  }
  Agent agent(flags, std::move(users).value(), std::move(transport));
  return agent.Run();
}

}  // namespace tidepool::agent
