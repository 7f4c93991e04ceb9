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
#include <cstring>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/agent_loop.h"
#include "common/exit_reasons.h"
#include "common/logging.h"
#include "common/process.h"

namespace tidepool::agent {
namespace internal {

int Agent::Run() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  sigset_t sigs = BlockStopSignals();
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

void Agent::Watch(int fd, uint32_t events, std::function<void(uint32_t)> fn) {
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

void Agent::Unwatch(int fd) {
  if (handlers_.erase(fd)) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

void Agent::RunTimers() {
  auto now = Clock::now();
  while (!timers_.empty() && timers_.top().at <= now) {
    auto fn = timers_.top().fn;
    timers_.pop();
    fn();
  }
}

void Agent::Post(std::function<void()> fn) {
  {
    std::lock_guard lock(inbox_mu_);
    inbox_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t w = ::write(evfd_, &one, sizeof(one));
}

void Agent::DrainInbox() {
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(evfd_, &v, sizeof(v));
  std::deque<std::function<void()>> work;
  {
    std::lock_guard lock(inbox_mu_);
    work.swap(inbox_);
  }
  for (auto& fn : work) fn();
}

v1::AgentHello Agent::MakeHello() {
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

void Agent::OnConnected(uint64_t gen, const v1::Welcome& w) {
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

void Agent::ScheduleHeartbeat(uint64_t gen) {
  After(heartbeat_, [this, gen] {
    if (gen != gen_) return;
    v1::AgentMessage m;
    m.mutable_heartbeat()->set_seq(++heartbeat_seq_);
    Send(std::move(m));
    ScheduleHeartbeat(gen);
  });
}

void Agent::OnMessage(const v1::ServerMessage& m) {
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

void Agent::BeginShutdown(const std::string& why) {
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

void Agent::MaybeExit() {
  if (!shutting_down_) return;
  for (auto& [id, t] : tasks_) {
    if (!t->finished) return;
    if (gen_ != 0 && !refused_) return;  // wait for the acks while connected
  }
  done_ = true;
}

}  // namespace internal

using internal::Agent;

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
