#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/crypto.h"
#include "common/time.h"
#include "scheduler/matcher.h"
#include "server/core_internal.h"

namespace tidepool::server {

void Core::Enqueue(Task* t) {
  queues_[t->st().pool()][{t->st().priority(), t->rec.seq}] = t;
  t->queued = true;
}

void Core::Dequeue(Task* t) {
  if (!t->queued) return;
  queues_[t->st().pool()].erase({t->st().priority(), t->rec.seq});
  t->queued = false;
}

void Core::ScheduleSoon(const std::string& pool) {
  if (!schedule_pending_.insert(pool).second) return;
  Post([this, pool] {
    schedule_pending_.erase(pool);
    if (PoolController* p = Pool(pool)) Schedule(p);
  });
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
    route->attempt = st.attempts();
    route->forwarded[1] = route->forwarded[2] = 0;
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
        Finish(t, v1::TASK_STATE_FAILURE, fmt::format("could not record the dispatch: {}", s.message()));
      }
      return;
    }
    OnDispatchCommitted(id, attempt);
  });
  for (auto& [wid, fn] : t->watchers) fn(st);
}

void Core::OnDispatchCommitted(const std::string& id, int attempt) {
  Task* t = FindTask(id);
  if (!t || !t->dispatch_pending || t->attempt() != attempt || t->st().state() != v1::TASK_STATE_RUNNING) return;
  t->dispatch_pending = false;
  if (t->cancel_requested) {
    ReleaseSlot(t);
    Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
    if (t->pool) Schedule(t->pool);
    return;
  }
  auto sit = session_by_worker_.find(t->assigned);
  if (sit == session_by_worker_.end()) return;  // its worker went away meanwhile: the loss grace runs
  const v1::TaskSpec& spec = t->rec.spec;
  v1::ServerMessage m;
  v1::StartTask* start = m.mutable_start();
  start->set_task_id(id);
  start->set_attempt(attempt);
  *start->mutable_argv() = spec.argv();
  start->set_cwd(spec.cwd());
  *start->mutable_env() = spec.env();
  auto& env = *start->mutable_env();
  env["TIDEPOOL_TASK_ID"] = id;
  env["TIDEPOOL_POOL"] = t->st().pool();
  env["TIDEPOOL_WORKER_NAME"] = t->assigned;
  env["TIDEPOOL_SERVER"] = opts_.agent_address;
  if (!spec.cwd().empty()) env["PWD"] = spec.cwd();
  start->set_tty(spec.tty());
  *start->mutable_terminal_size() = spec.terminal_size();
  start->set_term(spec.term());
  start->set_stdin_null(spec.stdin_null());
  start->set_timeout_ms(spec.timeout_ms());
  start->set_kill_grace_ms(opts_.kill_grace.count());
  {
    std::lock_guard rl(routes_mu_);
    if (auto it = routes_.find(id); it != routes_.end()) {
      std::lock_guard l(it->second->mu);
      it->second->agent = sit->second->link;
    }
  }
  sit->second->link->Send(std::move(m));
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

void Core::NotifyWaiting(PoolController* pool) {
  auto& queue = queues_[pool->name()];
  if (queue.empty()) return;
  int position = 0;
  int starting = -1, idle = 0;
  std::string err;
  for (auto& [key, t] : queue) {
    ++position;
    if (!t->client) continue;
    if (starting < 0) {
      starting = pool->starting_count();
      idle = pool->idle_worker_count();
      err = pool->last_error();
    }
    v1::Waiting w;
    w.set_pool(pool->name());
    w.set_starting(starting);
    w.set_idle(idle);
    w.set_position(position);
    w.set_allocation_error(err);
    if (w.SerializeAsString() == t->last_waiting.SerializeAsString()) continue;
    t->last_waiting = w;
    v1::RunEvent e;
    *e.mutable_waiting() = std::move(w);
    t->client->Send(std::move(e));
  }
}

}  // namespace tidepool::server
