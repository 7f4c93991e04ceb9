#include "server/core_internal.h"

#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "backends/redacting_backend.h"
#include "backends/registry.h"
#include "common/crypto.h"
#include "common/process.h"
#include "common/time.h"
#include "common/worker_name.h"
#include "scheduler/matcher.h"

namespace tidepool::server {


// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------

Core::Core(CoreOptions options, std::unique_ptr<store::Store> store, TokenAuthority tokens)
    : opts_(std::move(options)),
      store_(std::move(store)),
      tokens_(std::move(tokens)),
      batcher_(store_.get()),
      logs_(opts_.data_dir + "/logs"),
      executor_("backend", 16),
      posts_("core", 1),
      budget_(opts_.queue_limits) {}

Core::~Core() { Stop(); }

void Core::Post(std::function<void()> fn) {
  posts_.Submit([this, fn = std::move(fn)] {
    std::lock_guard lock(mu_);
    // One operation's records, one commit. Taken under the core lock, so at most one hold
    // exists: a queue of threads waiting for the lock cannot keep the writer from committing.
    store::WriteBatcher::Hold group(&batcher_);
    if (!stopped_) fn();
  });
}

Status Core::Start() {
  auto max_seq = store_->MaxSeq();
  if (!max_seq.ok()) return max_seq.status();
  auto workers = store_->ListWorkers();
  if (!workers.ok()) return workers.status();
  auto unfinished = store_->ListTasks({.unfinished_only = true});
  if (!unfinished.ok()) return unfinished.status();

  std::lock_guard lock(mu_);
  next_seq_ = *max_seq + 1;
  if (Status s = RebuildUsedIds(); !s.ok()) return s;
  auto orphans = logs_.SetAsideOrphans([this](const auto& fn) { return store_->ForEachTaskId(fn); });
  if (!orphans.ok()) return orphans.status();
  if (*orphans > 0) {
    spdlog::warn("{} log file{} of tasks this store does not hold (a store restored or reset?) moved to {}/orphaned",
                 *orphans, *orphans == 1 ? "" : "s", opts_.data_dir + "/logs");
  }
  // Whatever a backend says passes this before it is stored, shown or logged.
  auto redactor = backends::ServerRedactor(opts_.config, CurrentEnvironment());
  for (const config::PoolConfig& pc : opts_.config.pools) {
    std::unique_ptr<backends::Backend> backend;
    if (const config::BackendConfig* bc = pc.backend()) {
      backends::BackendContext ctx{pc.name, opts_.data_dir, opts_.agent_binary, opts_.agent_address,
                                   pc.auto_scaler ? std::max(1, pc.auto_scaler->default_slots_per_agent) : 1};
      auto made = backends::Registry::Global().Create(*bc, ctx);
      if (made.ok()) {
        backend = std::move(made).value();
      } else {
        std::string why = redactor->Scrub(made.status().message());
        spdlog::error("pool {}: {}", pc.name, why);
        backend = std::make_unique<UnavailableBackend>(why);
      }
      backend = backends::Redacting(std::move(backend), redactor);
    }
    std::string name = pc.name;
    PoolController::Hooks hooks;
    hooks.post = [this](std::function<void()> fn) { Post(std::move(fn)); };
    hooks.changed = [this, name] { ScheduleSoon(name); };
    hooks.persist = [this](const Worker& w) { batcher_.Submit(store::Mutation::PutWorker(WorkerProto(w))); };
    hooks.forget = [this](const std::string& n) { batcher_.Submit(store::Mutation::DeleteWorker(n)); };
    hooks.token_for = [this](const std::string& n) { return tokens_.WorkerToken(n); };
    hooks.waiting_tasks = [this, name] { return WaitingFor(name); };
    if (metrics::Registry* reg = opts_.metrics) {
      hooks.scale_up_latency = [reg, name](double seconds) {
        spdlog::debug("pool {}: create call {} us after demand", name, static_cast<int64_t>(seconds * 1e6));
        reg->Histogram("tidepool_scale_up_latency_seconds",
                       "From the first task waiting for a pool to the backend create call it caused",
                       {{"pool", name}}, metrics::FineSecondsBuckets())
            .Observe(seconds);
      };
      hooks.backend_call = [reg, name](const std::string& op, const std::string& result, double seconds) {
        reg->Counter("tidepool_backend_calls_total", "Backend calls by pool, operation and result",
                     {{"pool", name}, {"op", op}, {"result", result}})
            .Inc();
        reg->Histogram("tidepool_backend_call_seconds", "Backend call duration", {{"pool", name}, {"op", op}},
                       metrics::DefaultSecondsBuckets())
            .Observe(seconds);
      };
    }
    pools_[name] = std::make_unique<PoolController>(pc, std::move(backend), std::move(hooks), &executor_, &timers_,
                                                    opts_.agent_address);
    pools_[name]->SetLostGrace(opts_.worker_lost_grace);
    queues_[name];
  }

  // Pools linked by a shared selector are matched together (one scheduling group).
  for (auto& [name, pool] : pools_) sched_group_[name] = {pool.get()};
  for (auto& [a, pa] : pools_) {
    for (auto& [b, pb] : pools_) {
      if (a >= b) continue;
      bool shared = false;
      for (const auto& sel : pa->config().selectors) {
        const auto& other = pb->config().selectors;
        shared |= std::find(other.begin(), other.end(), sel) != other.end();
      }
      if (!shared || sched_group_[a] == sched_group_[b]) continue;
      std::vector<PoolController*> merged = sched_group_[a];
      for (PoolController* p : sched_group_[b]) {
        if (std::find(merged.begin(), merged.end(), p) == merged.end()) merged.push_back(p);
      }
      for (PoolController* p : merged) sched_group_[p->name()] = merged;
    }
  }

  // Tasks that were not final when the server stopped: objects first, then their tree links
  // (children of the same parent come back in submission order), then each one's state.
  std::vector<Task*> restored;
  for (store::TaskRecord& rec : *unfinished) {
    auto t = std::make_unique<Task>();
    t->rec = std::move(rec);
    t->parent = t->rec.status.parent();
    t->is_group = t->rec.spec.shards() > 0;
    t->own_done = t->is_group;
    restored.push_back(t.get());
    Track(std::move(t));  // counted against the caps, never refused
  }
  for (Task* t : restored) {
    if (!t->is_group && t->st().state() != v1::TASK_STATE_RUNNING_SUBTASKS &&
        t->st().state() != v1::TASK_STATE_RUNNING) {
      continue;  // cannot have children
    }
    auto children = store_->ListTasks({.parent = t->id()});
    if (!children.ok()) return children.status();
    for (const store::TaskRecord& c : *children) {
      t->children.push_back(c.status.id());
      if (FindTask(c.status.id())) {
        t->open_children++;
      } else if (c.status.state() != v1::TASK_STATE_SUCCESS && t->failed_child.empty()) {
        t->failed_child = fmt::format("{} ended {}", c.status.id(), api::StateName(c.status.state()));
      }
    }
  }
  for (Task* t : restored) {
    v1::TaskSpec target = t->rec.spec;
    auto eligible = ResolveTarget(target, nullptr);
    if (!eligible.ok()) {
      Finish(t, v1::TASK_STATE_FAILURE, eligible.status().message());
      continue;
    }
    t->eligible = *eligible;
    bool interactive = IsInteractive(t->rec.spec);
    Task* group = t->parent.empty() ? nullptr : FindTask(t->parent);
    bool gang_shard = group && group->gang();
    switch (t->st().state()) {
      case v1::TASK_STATE_PENDING:
        if (!gang_shard && !(group && group->is_group)) EvaluateDependencies(t);
        break;
      case v1::TASK_STATE_QUEUEING:
        // A queued vrun's task waits for its vrun to reattach (Detach), in its place meanwhile.
        if (interactive) Detach(t);
        if (!gang_shard) Enqueue(t);
        break;
      case v1::TASK_STATE_RUNNING_SUBTASKS:
        if (t->gang()) {
          bool any_running = false;
          for (const std::string& cid : t->children) {
            Task* c = FindTask(cid);
            any_running |= c && c->st().state() == v1::TASK_STATE_RUNNING;
          }
          if (!any_running) Enqueue(t);  // its shards wait as one entry
        } else if (!t->is_group) {
          t->own_done = true;
          bool ok = t->st().has_exit_code() && t->st().exit_code() == 0 && t->st().signal() == 0;
          t->own_state = ok ? v1::TASK_STATE_SUCCESS : v1::TASK_STATE_FAILURE;
          t->own_reason = t->st().reason();
        }
        if (t->open_children == 0) ResolveParent(t);
        break;
      case v1::TASK_STATE_RUNNING: {
        t->assigned = t->st().worker();
        t->dispatched = true;
        auto route = std::make_shared<OutputRoute>();
        route->attempt = t->attempt();
        route->base[1] = t->st().log_base_stdout();
        route->base[2] = t->st().log_base_stderr();
        if (!interactive) {
          auto sink = logs_.Sink(t->id());
          if (sink.ok()) route->log = *sink;
        } else {
          // Its vrun went with the old server and reattaches to this one: until then the agent
          // holds the output (retry_later), and the command runs on.
          route->detached = true;
          route->forwarded[1] = route->forwarded[2] = UINT64_MAX;  // AgentOutput: the least offset seen
          Detach(t);
        }
        {
          std::lock_guard rl(routes_mu_);
          routes_[t->id()] = route;
        }
        // Until its agent reattaches, the task is on a worker we cannot see.
        std::string id = t->id();
        int attempt = t->attempt();
        t->lost_timer = timers_.After(opts_.worker_lost_grace, [this, id, attempt] {
          Post([this, id, attempt] { LostGraceExpired(id, attempt); });
        });
        break;
      }
      default:
        break;
    }
    if (!t->final()) Persist(t);
  }

  std::map<std::string, std::vector<Worker>> by_pool;
  for (const store::WorkerRecord& wr : *workers) {
    Worker w;
    w.name = wr.worker.name();
    w.pool = wr.worker.pool();
    w.phase = FromProto(wr.worker.state());
    w.created_at_ms = wr.worker.created_at_ms();
    w.address = wr.worker.address();
    for (const auto& [k, v] : wr.worker.labels()) w.labels[k] = v;
    if (pools_.count(w.pool)) {
      by_pool[w.pool].push_back(std::move(w));
    } else {
      batcher_.Submit(store::Mutation::DeleteWorker(w.name));
    }
  }
  for (auto& [name, pool] : pools_) pool->Start(by_pool[name]);
  // Restored running tasks hold slots on their (not yet reconnected) workers.
  for (auto& [id, t] : tasks_) {
    if (t->assigned.empty()) continue;
    for (PoolController* p : t->eligible) {
      if (Worker* w = p->Find(t->assigned)) {
        t->pool = p;
        w->used_slots++;
        w->tasks.insert(id);
        break;
      }
    }
    if (!t->pool && !t->eligible.empty()) t->pool = t->eligible.front();
  }
  for (auto& [name, pool] : pools_) Schedule(pool.get());
  if (opts_.metrics) opts_.metrics->AddCollector([this](metrics::GaugeWriter& g) { CollectMetrics(g); });
  silence_ = SilenceJudge(opts_.heartbeat_interval.count());
  silence_.Start(SteadyMs());
  timers_.After(opts_.heartbeat_interval, [this] { Post([this] { CheckHeartbeats(); }); });
  spdlog::info("core started: {} pools, {} unfinished tasks", pools_.size(), tasks_.size());
  return Status::Ok();
}

void Core::Quiesce() {
  std::lock_guard lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  for (auto& [name, pool] : pools_) pool->Stop();
  for (auto& [id, t] : tasks_) {
    if (t->client) t->client->Finish(Unavailable("the server is shutting down"));
  }
  // Agents keep their tasks and reconnect to the next server; closing their streams now lets
  // the shutdown finish without waiting out gRPC's deadline.
  for (auto& [link, session] : sessions_) session->link->Close(Unavailable("the server is shutting down"));
}

void Core::Stop() {
  Quiesce();
  {
    std::lock_guard lock(mu_);
    if (fully_stopped_) return;
    fully_stopped_ = true;
  }
  timers_.Stop();
  // Nothing queued starts now: the pools are stopped, so a queued post would do nothing, and a
  // queued backend call is reconciled at the next start (the sync lists what exists). Calls
  // running were told to end (Backend::Abandon); a backend that cannot end them gets the bound.
  posts_.StopWithin(kStopBound);
  abandoned_calls_ = executor_.StopWithin(kStopBound);
  if (abandoned_calls_ > 0) {
    spdlog::warn("{} backend call{} still running after {} s: abandoned (reconciled at the next start)",
                 abandoned_calls_, abandoned_calls_ > 1 ? "s" : "", kStopBound.count() / 1000);
  }
  // Commits what is queued, then stops; a commit waiting for disk space gets one more try
  // instead of holding the stop forever (what it held was never acknowledged).
  batcher_.Stop();
  if (Status s = store_->Checkpoint(); !s.ok()) spdlog::error("at stop: {}", s.message());
}

// ---- helpers ---------------------------------------------------------------------------------

PoolController* Core::Pool(const std::string& name) {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

Core::Task* Core::FindTask(const std::string& id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

// Demand in slots: a waiting gang of N needs N.
int Core::WaitingFor(const std::string& pool) const {
  auto it = queued_slots_.find(pool);
  return it == queued_slots_.end() ? 0 : it->second;
}

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
    link->Close(Unavailable("no heartbeat"));  // its stream ends and AgentGone follows
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

void Core::CollectMetrics(metrics::GaugeWriter& g) {
  std::lock_guard lock(mu_);
  g.Gauge("tidepool_agents_connected", "Agents connected now", {}, agents_connected_.load());
  g.Counter("tidepool_store_commits_total", "Store transactions committed (each one fsync)", {},
            static_cast<double>(batcher_.commits()));
  std::map<std::pair<std::string, v1::TaskState>, int> live;
  for (const auto& [id, t] : tasks_) {
    if (!api::IsFinal(t->st().state())) live[{t->st().pool(), t->st().state()}]++;
  }
  for (auto& [name, pool] : pools_) {
    for (const auto& [state, n] : pool->CountByPhase()) {
      g.Gauge("tidepool_pool_workers", "Workers by pool and state", {{"pool", name}, {"state", state}}, n);
    }
    g.Gauge("tidepool_pool_slots", "Idle slots of connected workers, and slots of workers requested or starting",
            {{"pool", name}, {"kind", "idle"}}, pool->idle_slots());
    g.Gauge("tidepool_pool_slots", "Idle slots of connected workers, and slots of workers requested or starting",
            {{"pool", name}, {"kind", "requested"}}, pool->requested_slots());
    for (const char* ev : {"scale_up", "scale_down", "allocation_error", "ghost_rejected", "register_timeout"}) {
      g.Gauge("tidepool_pool_last_event_timestamp_seconds", "When the pool last had this event (0 = never)",
              {{"pool", name}, {"event", ev}}, pool->last_event_ms(ev) / 1000.0);
    }
    g.Counter("tidepool_pool_ghosts_total", "Agent connections refused: bad token or unexpected name", {{"pool", name}},
              pool->ghosts());
    // Unfinished states: tasks in that state now. Final states: tasks that ended so, since start.
    for (int s = v1::TASK_STATE_PENDING; s <= v1::TASK_STATE_CANCELLED; ++s) {
      auto state = static_cast<v1::TaskState>(s);
      double v = api::IsFinal(state) ? static_cast<double>(finished_[{name, state}]) : live[{name, state}];
      g.Gauge("tidepool_tasks", "Tasks by pool and state (final states: since the server started)",
              {{"pool", name}, {"state", api::StateName(state)}}, v);
    }
  }
}

// ---- pools and workers -----------------------------------------------------------------------

v1::Worker Core::WorkerProto(const Worker& w) const {
  v1::Worker p;
  p.set_name(w.name);
  p.set_pool(w.pool);
  p.set_state(ToProto(w.phase));
  p.set_slots(w.slots);
  p.set_used_slots(w.used_slots);
  for (const auto& [k, v] : w.labels) (*p.mutable_labels())[k] = v;
  p.set_created_at_ms(w.created_at_ms);
  p.set_last_seen_ms(w.last_seen_ms);
  p.set_address(w.address);
  for (const auto& t : w.tasks) p.add_tasks(t);
  return p;
}

v1::Pool Core::PoolProto(PoolController& pool) {
  const config::PoolConfig& c = pool.config();
  v1::Pool p;
  p.set_name(c.name);
  p.set_default_(c.is_default);
  for (const auto& s : c.selectors) p.add_selectors(s);
  p.set_description(c.description);
  if (const config::BackendConfig* b = c.backend()) p.set_backend(b->type);
  if (c.fixed) {
    p.set_mode("fixed");
  } else if (c.auto_scaler) {
    p.set_mode(c.auto_scaler->mode == config::PoolMode::kBatch ? "batch" : "standard");
  } else {
    p.set_mode("static");
  }
  autoscaler::Policy pol = pool.policy();
  p.set_min_agents(pol.min_agents);
  p.set_max_agents(pol.max_agents);
  for (const auto& [state, n] : pool.CountByPhase()) (*p.mutable_workers())[state] = n;
  p.set_queued(WaitingFor(c.name));
  p.set_last_error(pool.last_error());
  p.set_status(pool.status());
  p.set_idle_slots(pool.idle_slots());
  p.set_busy_slots(pool.busy_slots());
  return p;
}

std::vector<v1::Pool> Core::ListPools(const Caller& caller) {
  std::lock_guard lock(mu_);
  std::vector<v1::Pool> out;
  for (auto& [name, pool] : pools_) {
    if (caller.Can(name, Role::kView)) out.push_back(PoolProto(*pool));
  }
  return out;
}

Result<v1::PoolDetail> Core::GetPool(const std::string& name, const Caller& caller) {
  std::lock_guard lock(mu_);
  PoolController* pool = Pool(name);
  if (!pool) return NotFound(fmt::format("pool not found: {}", name));
  if (!caller.Can(name, Role::kView)) return caller.Denied(name, Role::kView);
  v1::PoolDetail d;
  *d.mutable_pool() = PoolProto(*pool);
  autoscaler::Policy pol = pool->policy();
  v1::PoolPolicy* pp = d.mutable_policy();
  pp->set_min_agents(pol.min_agents);
  pp->set_max_agents(pol.max_agents);
  pp->set_min_idle_agents(pol.min_idle);
  pp->set_max_idle_agents(pol.max_idle);
  pp->set_effective_max_idle_agents(autoscaler::EffectiveMaxIdle(pol));
  pp->set_default_slots_per_agent(autoscaler::EffectiveSlots(pol));
  pp->set_idle_decay_ms(pol.idle_decay.count());
  if (const auto& a = pool->config().auto_scaler) {
    pp->set_sync_loop_interval_ms(a->sync_loop_interval.count());
    pp->set_kill_unknown_after_ms(a->kill_unknown_after.count());
    pp->set_register_timeout_ms(a->register_timeout.count());
    pp->set_initial_delay_ms(a->initial_delay.count());
  }
  for (Worker* w : pool->Workers()) *d.add_workers() = WorkerProto(*w);
  for (const auto& e : pool->events()) {
    v1::PoolEvent* pe = d.add_events();
    pe->set_at_ms(e.at_ms);
    pe->set_kind(e.kind);
    pe->set_message(e.message);
  }
  return d;
}

std::vector<v1::Worker> Core::ListWorkers(const std::string& pool_name, const Caller& caller) {
  std::lock_guard lock(mu_);
  std::vector<v1::Worker> out;
  for (auto& [name, pool] : pools_) {
    if (!pool_name.empty() && name != pool_name) continue;
    if (!caller.Can(name, Role::kView)) continue;
    for (Worker* w : pool->Workers()) out.push_back(WorkerProto(*w));
  }
  return out;
}

Result<v1::Worker> Core::DrainWorker(const std::string& name, const Caller& caller) {
  std::lock_guard lock(mu_);
  for (auto& [pname, pool] : pools_) {
    if (Worker* w = pool->Find(name)) {
      if (!caller.Can(pname, Role::kManage)) return caller.Denied(pname, Role::kManage);
      if (Status s = pool->Drain(name); !s.ok()) return s;
      if (Worker* still = pool->Find(name)) return WorkerProto(*still);
      (void)w;
      v1::Worker gone;
      gone.set_name(name);
      return gone;
    }
  }
  return NotFound(fmt::format("worker not found: {}", name));
}

Result<v1::Worker> Core::DeleteWorker(const std::string& name, bool force, const Caller& caller) {
  std::lock_guard lock(mu_);
  for (auto& [pname, pool] : pools_) {
    if (pool->Find(name)) {
      if (!caller.Can(pname, Role::kManage)) return caller.Denied(pname, Role::kManage);
      if (Status s = pool->Delete(name, force); !s.ok()) return s;
      if (Worker* still = pool->Find(name)) return WorkerProto(*still);
      v1::Worker gone;
      gone.set_name(name);
      return gone;
    }
  }
  return NotFound(fmt::format("worker not found: {}", name));
}

}  // namespace tidepool::server
