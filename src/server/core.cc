#include "server/core_internal.h"

#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "backends/redacting_backend.h"
#include "common/crypto.h"
#include "common/process.h"
#include "common/time.h"
#include "common/worker_name.h"
#include "scheduler/matcher.h"

namespace tidepool::server {

Core::Core(CoreOptions options, std::unique_ptr<store::Store> store, TokenAuthority tokens)
    : opts_(std::move(options)),
      store_(std::move(store)),
      tokens_(std::move(tokens)),
      batcher_(store_.get()),
      logs_(opts_.data_dir + "/logs"),
      workspace_store_(opts_.data_dir + "/workspace"),
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
    pools_[pc.name] = MakePool(pc, redactor);
    queues_[pc.name];
  }
  RegroupPools();

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
    } else if (opts_.declared_pools) {
      held_workers_[w.pool].push_back(std::move(w));  // its pool may be declared soon (DeclarePool)
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
    if (std::string e = pool->last_error(); !e.empty()) {
      // Already scrubbed of secrets (backends/redacting_backend.h); one series per pool at most.
      if (e.size() > 200) e = e.substr(0, 200);
      g.Gauge("tidepool_pool_last_error_info", "The pool's standing backend error, in the backend's own words",
              {{"pool", name}, {"error", e}}, 1);
    }
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
  p.set_detail(w.detail);
  p.set_ends_at_ms(w.ends_at_ms);
  p.set_drain_at_ms(w.drain_at_ms);
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
