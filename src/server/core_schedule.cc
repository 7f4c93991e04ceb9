#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/strings.h"
#include "common/time.h"
#include "scheduler/group_matcher.h"
#include "scheduler/matcher.h"
#include "server/core_internal.h"

namespace tidepool::server {

// ---- queues and demand -----------------------------------------------------------------------

void Core::Enqueue(Task* t) {
  if (t->queued) return;
  if (!t->pool || std::find(t->eligible.begin(), t->eligible.end(), t->pool) == t->eligible.end()) {
    t->pool = ChooseDemandPool(t, nullptr);
  }
  queues_[t->pool->name()][{t->st().priority(), t->rec.seq}] = t;
  if (queued_slots_[t->pool->name()] == 0) t->pool->NoteDemand(true);
  queued_slots_[t->pool->name()] += t->slots();
  t->queued = true;
  t->queued_with_client = t->client != nullptr;
  if (t->queued_with_client) queued_clients_[t->pool->name()]++;
  if (t->pool->batch_mode()) {
    // A batch pool makes workers for this entry alone.
    if (!t->batch) t->batch = t->rec.seq;
    t->pool->RequestBatch(t->batch, t->slots());
  }
}

void Core::Dequeue(Task* t) {
  if (!t->queued) return;
  queues_[t->pool->name()].erase({t->st().priority(), t->rec.seq});
  queued_slots_[t->pool->name()] -= t->slots();
  if (queued_slots_[t->pool->name()] == 0) t->pool->NoteDemand(false);
  if (t->queued_with_client) queued_clients_[t->pool->name()]--;
  t->queued = false;
  t->queued_with_client = false;
}

// The pool that should grow for a waiting task (pools.md, "Selectors and backups"): the first
// healthy one with room for it, else the first healthy one, else the first (it waits there).
PoolController* Core::ChooseDemandPool(const Task* t, PoolController* exclude) {
  PoolController* first_healthy = nullptr;
  for (PoolController* p : t->eligible) {
    if (p == exclude || !p->Healthy()) continue;
    if (!first_healthy) first_healthy = p;
    int room = p->PotentialSlots() - p->busy_slots() - queued_slots_[p->name()];
    if (room >= t->slots()) return p;
  }
  if (first_healthy) return first_healthy;
  return t->eligible.front();
}

// A pool that cannot grow any more (cooldown) hands its selector tasks to the backups.
void Core::Rehome(PoolController* unhealthy) {
  std::vector<Task*> movable;
  for (auto& [key, t] : queues_[unhealthy->name()]) {
    if (t->eligible.size() > 1 && !t->batch) movable.push_back(t);
  }
  for (Task* t : movable) {
    PoolController* to = ChooseDemandPool(t, unhealthy);
    if (to == unhealthy || !to->Healthy()) continue;
    Dequeue(t);
    t->pool = to;
    Enqueue(t);
    spdlog::info("task {}: pool {} cannot grow now; waiting on {} instead", t->id(), unhealthy->name(), to->name());
  }
}

// ---- the match -------------------------------------------------------------------------------

// Called from places that must not schedule right away (inside pool controller callbacks).
void Core::ScheduleSoon(const std::string& pool) {
  if (!schedule_pending_.insert(pool).second) return;
  Post([this, pool] {
    schedule_pending_.erase(pool);
    if (PoolController* p = Pool(pool)) Schedule(p);
  });
}

void Core::Schedule(PoolController* pool) {
  // A store that cannot be written cannot record a dispatch (write-ahead): nothing starts.
  if (!store_->Health().ok()) return;
  std::vector<PoolController*>& group = sched_group_[pool->name()];
  if (group.empty()) group = {pool};
  for (PoolController* p : group) RetryHeldHellos(p);
  for (PoolController* p : group) {
    bool healthy = p->Healthy();
    auto it = last_healthy_.find(p->name());
    if (it != last_healthy_.end() && it->second && !healthy) Rehome(p);
    last_healthy_[p->name()] = healthy;
  }
  auto finish = [&] {
    for (PoolController* p : group) {
      p->Reconcile();
      NotifyWaiting(p);
    }
  };
  // Nothing queued: nothing to place. (Every agent's hello schedules its pool; without this a
  // pool of N connecting agents would sort N workers N times.)
  bool any_queued = false;
  for (PoolController* p : group) any_queued = any_queued || !queues_[p->name()].empty();
  if (!any_queued) return finish();

  // Free slots, per pool, in the standard preference order.
  std::vector<std::vector<Worker*>> workers(group.size());
  std::vector<scheduler::GroupPool> pools(group.size());
  int free_untagged = 0;
  bool any_tagged = false;
  for (uint32_t i = 0; i < group.size(); ++i) {
    workers[i] = group[i]->SchedulableWorkers();
    std::vector<scheduler::WorkerCandidate> cands;
    for (uint32_t h = 0; h < workers[i].size(); ++h) {
      Worker* w = workers[i][h];
      cands.push_back({h, w->free_slots(), w->used_slots > 0, w->phase_since});
    }
    pools[i].id = i;
    pools[i].healthy = group[i]->Healthy();
    for (const scheduler::FreeWorker& fw : scheduler::PreferWorkers(std::move(cands))) {
      uint64_t batch = workers[i][fw.handle]->batch;
      pools[i].workers.push_back({fw.handle, fw.free_slots, batch});
      if (batch) any_tagged = true;
      else free_untagged += fw.free_slots;
    }
  }

  // The head of the group's merged queue: entries that could use what is free now. Entries
  // further back cannot be placed in this pass and keep their (sticky) demand pool.
  std::vector<std::map<std::pair<int32_t, uint64_t>, Task*>::iterator> pos, end;
  for (PoolController* p : group) {
    auto& q = queues_[p->name()];
    pos.push_back(q.begin());
    end.push_back(q.end());
  }
  std::vector<Task*> head;
  std::vector<int> head_slots_in(group.size(), 0);
  int plain_seen = 0;
  while (true) {
    int best = -1;
    for (size_t i = 0; i < group.size(); ++i) {
      if (pos[i] != end[i] && (best < 0 || pos[i]->first < pos[best]->first)) best = static_cast<int>(i);
    }
    if (best < 0) break;
    Task* t = pos[best]->second;
    ++pos[best];
    bool gang_or_batch = t->slots() > 1 || t->batch;
    if (plain_seen >= free_untagged && !any_tagged) break;
    if (plain_seen >= free_untagged && !gang_or_batch) continue;
    if (!gang_or_batch) plain_seen++;
    head.push_back(t);
    head_slots_in[best] += t->slots();
  }

  std::map<PoolController*, uint32_t> index;
  for (uint32_t i = 0; i < group.size(); ++i) index[group[i]] = i;
  for (uint32_t i = 0; i < group.size(); ++i) {
    // Room: what the pool can still grow by, less the demand of entries not in this pass.
    pools[i].room = group[i]->PotentialSlots() - group[i]->busy_slots() -
                    (queued_slots_[group[i]->name()] - head_slots_in[i]);
  }
  std::vector<scheduler::GroupEntry> entries;
  entries.reserve(head.size());
  for (uint32_t h = 0; h < head.size(); ++h) {
    Task* t = head[h];
    scheduler::GroupEntry e;
    e.handle = h;
    e.priority = t->st().priority();
    e.seq = t->rec.seq;
    e.slots = t->slots();
    e.batch = t->batch;
    for (PoolController* p : t->eligible) {
      if (auto it = index.find(p); it != index.end()) e.eligible.push_back(it->second);
    }
    e.demand_pool = index.count(t->pool) ? index[t->pool] : scheduler::kNoPool;
    entries.push_back(std::move(e));
  }
  scheduler::GroupMatch match = scheduler::MatchGroup(entries, pools);
  for (const scheduler::GroupPlacement& pl : match.placements) {
    Task* t = head[pl.entry];
    Dequeue(t);
    t->pool = group[pl.pool];
    std::vector<Worker*> ws;
    for (uint32_t h : pl.workers) ws.push_back(workers[pl.pool][h]);
    if (t->is_group) {
      DispatchGang(t, ws);
    } else {
      Dispatch(t, ws[0]);
    }
  }
  for (const scheduler::GroupDemand& d : match.demand) {
    Task* t = head[d.entry];
    PoolController* to = group[d.pool];
    if (to == t->pool) continue;
    Dequeue(t);
    t->pool = to;
    Enqueue(t);
  }
  finish();
}

void Core::DispatchGang(Task* g, const std::vector<Worker*>& workers) {
  // All shards at once, shard i on workers[i]; each learns where the others are.
  std::vector<std::string> hosts;
  for (Worker* w : workers) hosts.push_back(w->address.empty() ? w->name : w->address);
  std::string joined = Join(hosts, ",");
  g->st().set_attempts(g->attempt() + 1);
  Changed(g);
  for (size_t i = 0; i < g->children.size() && i < workers.size(); ++i) {
    Task* c = FindTask(g->children[i]);
    if (!c || c->final()) continue;
    auto& env = *c->rec.spec.mutable_env();
    env["TIDEPOOL_GANG_HOSTS"] = joined;
    env["MASTER_ADDR"] = hosts[0];
    c->pool = g->pool;
    Dispatch(c, workers[i]);
  }
}

void Core::Dispatch(Task* t, Worker* w) {
  Dequeue(t);
  w->used_slots++;
  w->tasks.insert(t->id());
  t->pool->SlotsChanged(w, /*reconcile=*/false);
  t->assigned = w->name;
  t->dispatch_pending = true;
  t->dispatched = false;
  v1::Task& st = t->st();
  st.set_state(v1::TASK_STATE_RUNNING);
  st.set_worker(w->name);
  int64_t now_ms = NowUnixMs();
  if (opts_.metrics && st.attempts() == 0) {
    opts_.metrics->Histogram("tidepool_task_queue_seconds", "Time from submit to start", {{"pool", st.pool()}},
                             metrics::DefaultSecondsBuckets())
        .Observe((now_ms - st.created_at_ms()) / 1000.0);
  }
  st.set_started_at_ms(now_ms);
  st.set_attempts(st.attempts() + 1);
  {
    std::lock_guard rl(routes_mu_);
    auto& route = routes_[t->id()];
    if (!route) route = std::make_shared<OutputRoute>();
    std::lock_guard l(route->mu);
    // A batch task's output goes to its log, however it reached the queue (a submission, a
    // restart that found it queued or pending, a requeue): a route without one drops output.
    if (!route->log && !route->client && !IsInteractive(t->rec.spec)) {
      if (auto sink = logs_.Sink(t->id()); sink.ok()) {
        route->log = *sink;
      } else {
        spdlog::error("task {}: {}", t->id(), sink.status().message());
      }
    }
    route->attempt = st.attempts();
    route->forwarded[1] = route->forwarded[2] = 0;
    route->detached = t->detached;  // a restored vrun's task, its vrun not back yet: output held
    // A new attempt's output follows the earlier attempts' in the same files.
    route->base[1] = route->log ? route->log->size(v1::OUTPUT_STREAM_STDOUT) : 0;
    route->base[2] = route->log ? route->log->size(v1::OUTPUT_STREAM_STDERR) : 0;
    st.set_log_base_stdout(route->base[1]);
    st.set_log_base_stderr(route->base[2]);
  }
  std::string id = t->id();
  int attempt = st.attempts();
  // Write-ahead: the agent hears of it only once the store says RUNNING on this worker.
  Persist(t, [this, id, attempt](const Status& s) {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    if (!s.ok()) {
      if (Task* t = FindTask(id); t && t->dispatch_pending && t->attempt() == attempt) {
        ReleaseSlot(t);
        OwnCommandEnded(t, v1::TASK_STATE_FAILURE, fmt::format("could not record the dispatch: {}", s.message()));
      }
      return;
    }
    OnDispatchCommitted(id, attempt);
  });
  Notify(t);
}

void Core::OnDispatchCommitted(const std::string& id, int attempt) {
  Task* t = FindTask(id);
  if (!t || !t->dispatch_pending || t->attempt() != attempt || t->st().state() != v1::TASK_STATE_RUNNING) return;
  t->dispatch_pending = false;
  if (t->cancel_requested) {
    ReleaseSlot(t);
    Task* group = t->parent.empty() ? nullptr : FindTask(t->parent);
    if (group && group->gang() && group->gang_stopping) {
      GangShardStopped(t, "stopped with its gang");
    } else {
      OwnCommandEnded(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
    }
    if (t->pool) ScheduleSoon(t->pool->name());
    return;
  }
  auto sit = session_by_worker_.find(t->assigned);
  if (sit == session_by_worker_.end()) return;  // its worker went away meanwhile: the loss grace runs
  const v1::TaskSpec& spec = t->rec.spec;
  v1::ServerMessage m;
  v1::StartTask* start = m.mutable_start();
  start->set_task_id(id);
  start->set_attempt(attempt);
  start->set_owner(t->st().owner());
  *start->mutable_argv() = spec.argv();
  start->set_cwd(spec.cwd());
  *start->mutable_env() = spec.env();
  auto& env = *start->mutable_env();
  env["TIDEPOOL_TASK_ID"] = id;
  env["TIDEPOOL_POOL"] = sit->second->pool;  // the pool it runs on, not the selector it named
  env["TIDEPOOL_WORKER_NAME"] = t->assigned;
  env["TIDEPOOL_SERVER"] = opts_.agent_address;
  // With users and roles, `vbatch` inside the task acts as the task's owner.
  if (opts_.auth) env["TIDEPOOL_TOKEN"] = tokens_.TaskToken(id);
  if (!spec.cwd().empty()) env["PWD"] = spec.cwd();
  start->set_tty(spec.tty());
  *start->mutable_terminal_size() = spec.terminal_size();
  start->set_term(spec.term());
  start->set_stdin_null(spec.stdin_null());
  start->set_timeout_ms(spec.timeout_ms());
  start->set_kill_grace_ms(opts_.kill_grace.count());
  if (PoolController* p = Pool(sit->second->pool); p && !spec.workspace().manifest().empty() &&
                                                    p->config().workspace.mode == config::WorkspaceConfig::Mode::kSync) {
    v1::WorkspaceStart* w = start->mutable_workspace();
    w->set_manifest(spec.workspace().manifest());
    w->set_gitignore(p->config().workspace.gitignore);
    w->set_cache_bytes(static_cast<uint64_t>(p->config().workspace.cache_bytes));
  }
  {
    std::lock_guard rl(routes_mu_);
    if (auto it = routes_.find(id); it != routes_.end()) {
      std::lock_guard l(it->second->mu);
      it->second->agent = sit->second->link;
    }
  }
  Session* session = sit->second;
  if (session->awaiting_first_start && spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("worker {}: first task {} sent {} us after its hello", session->worker, id,
                  session->link->MicrosSinceHello());
  }
  session->link->Send(std::move(m));
  t->dispatched = true;
  if (t->client) {
    v1::RunEvent e;
    e.mutable_started()->set_worker(t->assigned);
    t->client->Send(std::move(e));
  }
}

void Core::ReleaseSlot(Task* t) {
  if (t->assigned.empty()) return;
  if (Worker* w = t->pool ? t->pool->Find(t->assigned) : nullptr) {
    if (w->tasks.erase(t->id()) && w->used_slots > 0) w->used_slots--;
    t->pool->SlotsChanged(w, /*reconcile=*/false);
  }
  t->assigned.clear();
  t->dispatched = false;
  t->dispatch_pending = false;
  if (t->lost_timer) {
    timers_.Cancel(t->lost_timer);
    t->lost_timer = 0;
  }
}

// Tells each waiting vrun its place. Runs at every schedule of the pool, so it walks the queue
// only as far as its last entry with a vrun: a queue of 10,000 batch tasks costs nothing.
void Core::NotifyWaiting(PoolController* pool) {
  int to_visit = queued_clients_[pool->name()];
  if (to_visit == 0) return;
  auto& queue = queues_[pool->name()];
  int position = 0;
  int starting = -1, idle = 0;
  std::string err, detail;
  for (auto& [key, t] : queue) {
    if (to_visit == 0) break;
    ++position;
    if (!t->queued_with_client) continue;
    --to_visit;
    if (!t->client) continue;
    if (starting < 0) {
      starting = pool->starting_count();
      idle = pool->idle_worker_count();
      err = pool->last_error();
      detail = pool->starting_detail();
    }
    v1::Waiting w;
    w.set_pool(pool->name());
    w.set_starting(starting);
    w.set_idle(idle);
    w.set_position(position);
    w.set_allocation_error(err);
    w.set_starting_detail(detail);
    if (w.SerializeAsString() == t->last_waiting.SerializeAsString()) continue;
    t->last_waiting = w;
    v1::RunEvent e;
    *e.mutable_waiting() = std::move(w);
    t->client->Send(std::move(e));
  }
}

}  // namespace tidepool::server
