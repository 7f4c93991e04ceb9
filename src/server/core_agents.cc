// Agent sessions: an agent's hello (who it is, whether its name is free, which pool takes it),
// the session it gets, its heartbeats, its messages and output, and its going away. The pool
// controller decides about the worker; these tell it what happened.
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/time.h"
#include "common/worker_name.h"
#include "server/core_internal.h"

namespace tidepool::server {

Core::Session* Core::SessionOf(AgentLink* link) {
  auto it = sessions_.find(link);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void Core::SendToWorker(const std::string& worker, v1::ServerMessage m) {
  auto it = session_by_worker_.find(worker);
  if (it != session_by_worker_.end()) it->second->link->Send(std::move(m));
}


// ---- agents ----------------------------------------------------------------------------------

HelloOutcome Core::AgentHello(std::shared_ptr<AgentLink> link, const v1::AgentHello& hello, Status* refusal) {
  const auto arrived = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  // The worker's record and the dispatch of its first task go into one commit.
  store::WriteBatcher::Hold group(&batcher_);
  link->hello_at = arrived;
  if (stopped_) {
    *refusal = Unavailable("the server is shutting down");
    return HelloOutcome::kRefused;
  }
  if (Status bad = CheckHelloName(hello, false); !bad.ok()) {
    *refusal = bad;
    spdlog::warn("refused agent connection: {}", refusal->message());
    return HelloOutcome::kRefused;
  }
  PoolController* pool = Pool(hello.pool());
  if (!pool && HeldForDeclaration(hello)) {
    // A worker of a pool declared while the server runs (an AgentPool), back before its pool is:
    // wait for the declaration (core_pools.cc) rather than turn it away.
    held_hellos_[hello.pool()].push_back({link, hello, std::chrono::steady_clock::now() + kHelloHold});
    std::string name = hello.pool();
    timers_.After(kHelloHold + std::chrono::milliseconds(10), [this, name] {
      Post([this, name] { ExpireUndeclaredHellos(name); });
    });
    return HelloOutcome::kPending;
  }
  if (!pool) {
    *refusal = PermissionDenied(fmt::format("worker {}: pool not found: {}", hello.name(), QuoteForLog(hello.pool())));
    spdlog::warn("refused agent connection: {}", refusal->message());
    return HelloOutcome::kRefused;
  }
  bool worker_ok = tokens_.VerifyWorker(hello.name(), hello.token());
  bool join_ok = pool->is_static() && tokens_.VerifyJoin(hello.pool(), hello.token());
  if (Status taken = CheckHelloName(hello, worker_ok || join_ok); !taken.ok()) {
    pool->GhostRejected(taken.message());
    spdlog::warn("refused agent connection: {}", taken.message());
    *refusal = taken;
    return HelloOutcome::kRefused;
  }
  std::map<std::string, std::string> labels(hello.labels().begin(), hello.labels().end());
  auto connected = pool->AgentConnected(hello.name(), worker_ok, join_ok, hello.slots(), labels, hello.address());
  if (!connected.ok()) {
    if (worker_ok && pool->AwaitingNames()) {
      // Probably the worker of a create that has not returned yet: wait for its name.
      held_hellos_[pool->name()].push_back({link, hello, std::chrono::steady_clock::now() + kHelloHold});
      std::string name = pool->name();
      timers_.After(kHelloHold + std::chrono::milliseconds(10), [this, name] {
        Post([this, name] {
          if (PoolController* p = Pool(name)) RetryHeldHellos(p);
        });
      });
      return HelloOutcome::kPending;
    }
    pool->GhostRejected(connected.status().message());
    spdlog::warn("refused agent connection: {}", connected.status().message());
    *refusal = connected.status();
    return HelloOutcome::kRefused;
  }
  Attach(std::move(link), hello, pool, *connected);
  return HelloOutcome::kAccepted;
}

void Core::AgentHelloAbandoned(AgentLink* link) {
  std::lock_guard lock(mu_);
  for (auto& [pool, held] : held_hellos_) {
    std::erase_if(held, [&](const HeldHello& h) { return h.link.get() == link; });
  }
}

void Core::RetryHeldHellos(PoolController* pool) {
  auto it = held_hellos_.find(pool->name());
  if (it == held_hellos_.end() || it->second.empty()) return;
  std::vector<HeldHello> held;
  held.swap(it->second);
  auto now = std::chrono::steady_clock::now();
  for (HeldHello& h : held) {
    const v1::AgentHello& hello = h.hello;
    std::map<std::string, std::string> labels(hello.labels().begin(), hello.labels().end());
    if (Status taken = CheckHelloName(hello, true); !taken.ok()) {  // another agent took the name meanwhile
      pool->GhostRejected(taken.message());
      h.link->Close(taken);
      continue;
    }
    auto connected = pool->AgentConnected(hello.name(), /*worker_token_ok=*/true, false, hello.slots(), labels,
                                          hello.address());
    if (connected.ok()) {
      Attach(h.link, hello, pool, *connected);
      h.link->Accepted();
    } else if (pool->AwaitingNames() && now < h.deadline) {
      it->second.push_back(std::move(h));  // keep waiting
    } else {
      pool->GhostRejected(connected.status().message());
      spdlog::warn("refused agent connection: {}", connected.status().message());
      h.link->Close(connected.status());
    }
  }
}

void Core::Attach(std::shared_ptr<AgentLink> link, const v1::AgentHello& hello, PoolController* pool, Worker* w) {
  if (opts_.auth && hello.task_isolation() != "owner" && !last_instance_.count(w->name)) {
    spdlog::warn("worker {}: its agent runs every task as one Unix user, so a task there can read the token of any "
                 "other task on it; run the agent as root to give each owner a Unix user of their own",
                 w->name);
  }
  std::string previous_instance;
  if (auto old = session_by_worker_.find(w->name); old != session_by_worker_.end()) {
    previous_instance = old->second->instance_id;
    old->second->link->Close(Status(StatusCode::kAborted, "replaced by a newer connection of the same worker"));
    sessions_.erase(old->second->link.get());
    session_by_worker_.erase(old);
    agents_connected_--;
  } else if (auto it = last_instance_.find(w->name); it != last_instance_.end()) {
    previous_instance = it->second;
  }
  auto session = std::make_unique<Session>();
  session->link = link;
  session->worker = w->name;
  session->pool = pool->name();
  session->instance_id = hello.instance_id();
  session->awaiting_first_start = hello.tasks_size() == 0;
  link->last_heard_ms = SteadyMs();
  Session* s = session.get();
  sessions_[link.get()] = std::move(session);
  session_by_worker_[w->name] = s;
  last_instance_[w->name] = hello.instance_id();
  agents_connected_++;

  s->heartbeat_ms = HeartbeatIntervalFor(agents_connected_.load());
  spdlog::debug("worker {}: heartbeat every {} ms", w->name, s->heartbeat_ms);
  v1::ServerMessage welcome;
  welcome.mutable_welcome()->set_worker_name(w->name);
  welcome.mutable_welcome()->set_heartbeat_interval_ms(s->heartbeat_ms);
  link->Send(std::move(welcome));

  // Reconcile what the agent holds with what we think it runs.
  std::set<std::string> reported;
  for (const v1::AgentTaskReport& r : hello.tasks()) {
    reported.insert(r.task_id());
    Task* t = FindTask(r.task_id());
    bool ours = t && t->assigned == w->name && t->attempt() == r.attempt() &&
                t->st().state() == v1::TASK_STATE_RUNNING;
    if (ours) {
      t->dispatched = true;
      t->dispatch_pending = false;
      if (t->lost_timer) {
        timers_.Cancel(t->lost_timer);
        t->lost_timer = 0;
      }
      {
        std::lock_guard rl(routes_mu_);
        if (auto it = routes_.find(t->id()); it != routes_.end()) {
          std::lock_guard l(it->second->mu);
          it->second->agent = link;
        }
      }
      if (t->cancel_requested && !r.exited()) {
        v1::ServerMessage c;
        c.mutable_cancel()->set_task_id(t->id());
        c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
        c.mutable_cancel()->set_reason(t->cancel_reason);
        link->Send(std::move(c));
      }
    } else if (!r.exited()) {
      // Not (or no longer) ours to run here: stop it. Its exit report is then acknowledged.
      v1::ServerMessage c;
      c.mutable_cancel()->set_task_id(r.task_id());
      c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
      c.mutable_cancel()->set_reason("the server does not expect this task on this worker");
      link->Send(std::move(c));
    }
  }
  // Tasks we placed here that the agent does not hold.
  std::vector<Task*> missing;
  for (const std::string& id : w->tasks) {
    Task* t = FindTask(id);
    if (t && !reported.count(id) && !t->dispatch_pending && t->st().state() == v1::TASK_STATE_RUNNING) {
      missing.push_back(t);
    }
  }
  for (Task* t : missing) {
    if (!previous_instance.empty() && previous_instance == hello.instance_id()) {
      // Same agent process: our StartTask was lost with the old connection. Send it again.
      t->dispatch_pending = true;
      OnDispatchCommitted(t->id(), t->attempt());
    } else {
      // A different agent process: whatever ran there is gone with it.
      std::string id = t->id();
      int attempt = t->attempt();
      LostGraceExpired(id, attempt);
    }
  }
  pool->SlotsChanged(w, false);
  // Before the scheduling pass: a worker past its drain time takes nothing.
  pool->SetWalltime(w, hello.ends_at_ms(), hello.drain_at_ms());
  Schedule(pool);
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("worker {}: hello handled in {} us", w->name, link->MicrosSinceHello());
  }
}

int64_t Core::HeartbeatIntervalFor(int connected) const {
  int64_t ms = opts_.heartbeat_interval.count();
  if (opts_.max_heartbeat_rate > 0) ms = std::max<int64_t>(ms, int64_t{connected} * 1000 / opts_.max_heartbeat_rate);
  return ms;
}

void Core::CheckHeartbeats() {
  int64_t now = SteadyMs();
  if (int64_t gap = silence_.Sweep(now)) {
    // This sweep ran late: the server did not run (stopped, paused, starved). That time is not
    // the agents' silence: every one gets a full window from now (server/silence.h).
    spdlog::warn("the heartbeat sweep came {} ms after the previous one (every {} ms): the server was not "
                 "running; agents' silence counts from now",
                 gap, opts_.heartbeat_interval.count());
  }
  // More agents than when some of them joined: lengthen their intervals, so the server keeps
  // hearing about max_heartbeat_rate beats per second in all (at most twice that: an agent is
  // only told again once its interval would at least double). Intervals are never shortened
  // on a running link: an agent still beating at a longer interval must not be cut off.
  const int64_t desired = HeartbeatIntervalFor(agents_connected_.load());
  for (auto& [link, s] : sessions_) {
    if (desired >= 2 * s->heartbeat_ms) {
      s->heartbeat_ms = desired;
      spdlog::debug("worker {}: heartbeat every {} ms from now ({} agents connected)", s->worker, desired,
                    agents_connected_.load());
      v1::ServerMessage m;
      m.mutable_heartbeat_interval()->set_interval_ms(desired);
      link->Send(std::move(m));
    }
  }
  for (auto& [link, s] : sessions_) {
    int64_t silent_ms = silence_.SilentFor(now, link->last_heard_ms.load(), link->ReadHorizonMs(now));
    if (silent_ms <= 3 * s->heartbeat_ms) continue;
    spdlog::warn("worker {}: nothing heard for {} s; closing its connection", s->worker, silent_ms / 1000);
    link->Abort(Unavailable("no heartbeat"));  // its stream ends and AgentGone follows
    link->last_heard_ms = now;                 // do not close it twice
  }
  timers_.After(opts_.heartbeat_interval, [this] { Post([this] { CheckHeartbeats(); }); });
}

void Core::AgentMessage(AgentLink* link, const v1::AgentMessage& msg) {
  std::lock_guard lock(mu_);
  // An exit report finishes a task and may dispatch the next: one commit. (Heartbeats, the
  // bulk of messages at scale, write nothing and skip this.)
  std::optional<store::WriteBatcher::Hold> group;
  if (msg.has_exited()) group.emplace(&batcher_);
  Session* s = SessionOf(link);
  if (!s) return;
  PoolController* pool = Pool(s->pool);
  Worker* w = pool ? pool->Find(s->worker) : nullptr;
  switch (msg.msg_case()) {
    case v1::AgentMessage::kHeartbeat:
      if (w) pool->Heartbeat(w);
      break;
    case v1::AgentMessage::kExited:
      OnExited(s, msg.exited());
      break;
    case v1::AgentMessage::kStarted:
      if (s->awaiting_first_start) {
        s->awaiting_first_start = false;
        const int64_t micros = link->MicrosSinceHello();
        const double seconds = static_cast<double>(micros) / 1e6;
        spdlog::debug("worker {}: first task running {} us after its hello", s->worker, micros);
        if (opts_.metrics) {
          opts_.metrics
              ->Histogram("tidepool_worker_first_task_seconds",
                          "From a fresh worker's hello to its first task's process running (agent's report)",
                          {{"pool", s->pool}}, metrics::FineSecondsBuckets())
              .Observe(seconds);
        }
      }
      break;
    case v1::AgentMessage::kStdinAck: {
      Task* t = FindTask(msg.stdin_ack().task_id());
      if (t && t->client) {
        v1::RunEvent e;
        e.set_stdin_written(msg.stdin_ack().written());
        t->client->Send(std::move(e));
      }
      break;
    }
    default:
      break;
  }
}

std::optional<uint64_t> Core::AgentOutput(AgentLink* link, const v1::TaskOutput& out) {
  std::shared_ptr<OutputRoute> route;
  {
    std::lock_guard rl(routes_mu_);
    auto it = routes_.find(out.task_id());
    if (it != routes_.end()) route = it->second;
  }
  const uint64_t end = out.offset() + out.data().size();
  if (!route) return end;  // nobody wants it: let the agent drop it
  std::unique_lock l(route->mu);
  // Only the agent running this attempt may write its output.
  if (route->attempt != out.attempt() || route->agent.lock().get() != link) return end;
  int idx = out.stream() == v1::OUTPUT_STREAM_STDERR ? 2 : 1;
  if (route->log) {
    auto log = route->log;
    uint64_t base = route->base[idx];
    l.unlock();
    // Offsets are per attempt; the files hold every attempt, this one from `base` on.
    uint64_t stored = log->Write(out.stream(), base + out.offset(), out.data());
    return stored >= base ? stored - base : 0;
  }
  uint64_t& forwarded = route->forwarded[idx];
  if (!route->client) {
    if (!route->detached) return end;  // its vrun left for good: dropped
    // Held for a vrun to come: refused (retry_later) at the offset the agent resends from, the
    // least it has sent since (an ack past it would make the agent drop what it holds).
    forwarded = std::min(forwarded, out.offset());
    return forwarded;
  }
  if (end <= forwarded) return forwarded;
  if (out.offset() > forwarded) {
    if (!route->resumed[idx]) return forwarded;  // a gap: ask for a resend
    // Just reattached: the old server saw these bytes written out, and the vrun never got them.
    spdlog::warn("task {}: {} bytes of {} were lost with the previous server", out.task_id(), out.offset() - forwarded,
                 idx == 2 ? "stderr" : "stdout");
    forwarded = out.offset();
  }
  route->resumed[idx] = false;
  v1::RunEvent e;
  e.mutable_output()->set_stream(out.stream());
  e.mutable_output()->set_data(out.data().substr(forwarded - out.offset()));
  forwarded = end;
  std::weak_ptr<AgentLink> agent = route->agent;
  std::string task_id = out.task_id();
  v1::OutputStream stream = out.stream();
  auto client = route->client;
  l.unlock();
  // Acknowledge once the client has taken it, so a slow terminal slows the task, not our memory.
  bool sent = client->Send(std::move(e), [agent, task_id, stream, end] {
    if (auto a = agent.lock()) {
      v1::ServerMessage m;
      m.mutable_output_ack()->set_task_id(task_id);
      m.mutable_output_ack()->set_stream(stream);
      m.mutable_output_ack()->set_offset(end);
      a->Send(std::move(m));
    }
  });
  if (!sent) return end;
  return std::nullopt;
}

void Core::AgentGone(AgentLink* link) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(link);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> s = std::move(it->second);
  sessions_.erase(it);
  auto bw = session_by_worker_.find(s->worker);
  if (bw != session_by_worker_.end() && bw->second == s.get()) session_by_worker_.erase(bw);
  agents_connected_--;
  if (stopped_) return;
  PoolController* pool = Pool(s->pool);
  if (!pool) return;
  if (Worker* w = pool->Find(s->worker)) WorkerLost(w);
  Schedule(pool);
}

void Core::WorkerLost(Worker* w) {
  PoolController* pool = Pool(w->pool);
  // Its tasks stay RUNNING for a grace period: the agent may come back and report them.
  for (const std::string& id : w->tasks) {
    Task* t = FindTask(id);
    if (!t || t->lost_timer) continue;
    int attempt = t->attempt();
    t->lost_timer = timers_.After(opts_.worker_lost_grace, [this, id, attempt] {
      Post([this, id, attempt] { LostGraceExpired(id, attempt); });
    });
  }
  pool->AgentDisconnected(w);
}

// ---- metrics ---------------------------------------------------------------------------------

}  // namespace tidepool::server
