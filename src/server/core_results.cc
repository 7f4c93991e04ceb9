// How tasks end (core.h): an agent's exit report, a command's own end and its parent's, lost
// workers' tasks, requeues, and gangs that stop and start again as one.
#include <signal.h>

#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/exit_reasons.h"
#include "common/time.h"
#include "server/core_internal.h"

namespace tidepool::server {

// ---- results ---------------------------------------------------------------------------------

void Core::Finish(Task* t, v1::TaskState state, const std::string& reason) {
  if (t->final()) return;
  Dequeue(t);
  v1::Task& st = t->st();
  st.set_state(state);
  finished_[{st.pool(), state}]++;
  if (!reason.empty()) st.set_reason(reason);
  st.set_finished_at_ms(NowUnixMs());
  if (t->lost_timer) {
    timers_.Cancel(t->lost_timer);
    t->lost_timer = 0;
  }
  if (t->detach_timer) {
    timers_.Cancel(t->detach_timer);
    t->detach_timer = 0;
  }
  if (t->client) {
    SendExited(t->client.get(), st, &t->exit_sent);
    t->client.reset();
  }
  std::shared_ptr<OutputRoute> route;
  {
    std::lock_guard rl(routes_mu_);
    auto it = routes_.find(t->id());
    if (it != routes_.end()) {
      route = it->second;
      routes_.erase(it);
    }
  }
  if (route && route->log) {
    route->log->Complete();
  } else if (!IsInteractive(t->rec.spec)) {
    // Never dispatched since it was stored (cancelled in the queue, failed upstream): a follower
    // (`task logs -f`) holds the same sink and ends when it completes.
    if (auto sink = logs_.Sink(t->id()); sink.ok()) (*sink)->Complete();
  }
  std::string id = t->id();
  Persist(t, [this, id](const Status&) {
    // Committed (or failed, logged by the writer): the store is now the reference.
    Post([this, id] {
      Task* t = FindTask(id);
      if (t && api::IsFinal(t->st().state())) {
        Forget(id);
        logs_.Release(id);
      }
    });
  });
  for (auto& [wid, fn] : t->watchers) fn(st);
  t->watchers.clear();
  const std::string id2 = t->id();
  // A group or parent that ends before its children (cancelled, failed upstream) takes them along.
  for (const std::string& cid : std::vector<std::string>(t->children)) {
    Task* c = FindTask(cid);
    if (c && !c->final() && (c->queued || c->st().state() == v1::TASK_STATE_PENDING || c->parked)) {
      Finish(c, state == v1::TASK_STATE_CANCELLED ? state : v1::TASK_STATE_FAILED_UPSTREAM,
             fmt::format("{} ended {}", id2, api::StateName(state)));
    }
  }
  // A batch pool's workers for this entry are no longer needed.
  if (t->batch && t->pool && t->pool->batch_mode()) t->pool->ReleaseBatch(t->batch);
  // The parent hears of this task before its dependants fail upstream because of it, so that
  // a parent's reason names the subtask that failed, not a sibling it took along.
  if (!t->parent.empty()) {
    if (Task* p = FindTask(t->parent)) ChildFinal(p, t);
  }
  // Dependants: released, or failed upstream (which propagates down their chains).
  if (auto it = dependents_.find(id2); it != dependents_.end()) {
    std::vector<std::string> waiting = std::move(it->second);
    dependents_.erase(it);
    for (const std::string& did : waiting) {
      Task* d = FindTask(did);
      if (!d || d->st().state() != v1::TASK_STATE_PENDING) continue;
      if (!DependencySatisfied(d->rec.spec, id2, state)) {
        Finish(d, v1::TASK_STATE_FAILED_UPSTREAM, fmt::format("dependency {} ended {}", id2, api::StateName(state)));
      } else if (--d->unmet_deps == 0) {
        Release(d);
        Persist(d);
        for (const std::string& cid : d->children) {
          if (Task* c = FindTask(cid)) Persist(c);
        }
        if (d->pool) ScheduleSoon(d->pool->name());
      }
    }
  }
}

void Core::ChildFinal(Task* p, Task* child) {
  if (p->open_children > 0) p->open_children--;
  if (child->st().state() != v1::TASK_STATE_SUCCESS && p->failed_child.empty()) {
    p->failed_child = fmt::format("{} ended {}", child->id(), api::StateName(child->st().state()));
  }
  if (p->gang() && p->gang_stopping) {
    MaybeRestartGang(p);
    return;
  }
  if (p->own_done && p->open_children == 0) ResolveParent(p);
}

void Core::ResolveParent(Task* t) {
  // SUCCESS iff its own command (if any) and all its children succeeded.
  if (t->cancel_requested) {
    Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
  } else if (t->own_state != v1::TASK_STATE_SUCCESS) {
    Finish(t, t->own_state, t->own_reason);
  } else if (!t->failed_child.empty()) {
    Finish(t, v1::TASK_STATE_FAILURE, "subtask " + t->failed_child);
  } else {
    Finish(t, v1::TASK_STATE_SUCCESS, "");
  }
}

// Its own command is over: final now, or RUNNING_SUBTASKS until its children are.
void Core::OwnCommandEnded(Task* t, v1::TaskState state, const std::string& reason) {
  t->own_done = true;
  t->own_state = state;
  t->own_reason = reason;
  if (t->open_children == 0) {
    ResolveParent(t);  // its children (if any) may have ended first, and not all well
    return;
  }
  t->st().set_state(v1::TASK_STATE_RUNNING_SUBTASKS);
  if (!reason.empty()) t->st().set_reason(reason);
  Changed(t);
}

void Core::Requeue(Task* t, const std::string& why) {
  spdlog::info("task {}: {}; requeued (attempt {} of {})", t->id(), why, t->attempt() + 1, t->rec.spec.retries() + 1);
  t->st().set_state(v1::TASK_STATE_QUEUEING);
  t->st().set_worker("");
  t->st().set_reason(why + "; requeued");
  t->cancel_requested = false;
  Changed(t);
  Enqueue(t);
}

bool Core::OutputStored(const Task& t, const v1::TaskExited& e) {
  std::shared_ptr<OutputRoute> route;
  {
    std::lock_guard rl(routes_mu_);
    auto it = routes_.find(t.id());
    if (it == routes_.end()) return true;
    route = it->second;
  }
  std::lock_guard l(route->mu);
  if (!route->log || route->attempt != e.attempt()) return true;
  return route->log->size(v1::OUTPUT_STREAM_STDOUT) >= route->base[1] + e.stdout_bytes() &&
         route->log->size(v1::OUTPUT_STREAM_STDERR) >= route->base[2] + e.stderr_bytes();
}

void Core::OnExited(Session* s, const v1::TaskExited& e) {
  Task* t = FindTask(e.task_id());
  v1::ServerMessage ack;
  ack.mutable_exit_ack()->set_task_id(e.task_id());
  ack.mutable_exit_ack()->set_attempt(e.attempt());
  if (!t || t->assigned != s->worker || t->attempt() != e.attempt() || t->st().state() != v1::TASK_STATE_RUNNING) {
    s->link->Send(std::move(ack));  // stale: nothing to record, let the agent forget it
    return;
  }
  if (!OutputStored(*t, e)) {
    // Not taken (no ExitAck): the agent sends the report again once all its output is stored.
    spdlog::info("task {}: its exit waits for its output to be stored", t->id());
    return;
  }
  if (HoldExitForVrun(t, e)) {
    // Not taken either: taken when its vrun reattaches (ResumeOutput) or stops waiting for one.
    spdlog::info("task {}: its exit waits for its vrun to reattach", t->id());
    t->held_exit = e;
    return;
  }
  t->held_exit.reset();
  v1::Task& st = t->st();
  st.set_has_exit_code(e.has_exit_code());
  st.set_exit_code(e.exit_code());
  st.set_signal(e.signal());
  st.set_workspace_result(e.workspace_result());
  v1::TaskState state;
  std::string reason;
  // Its agent was stopped under it (the machine going away: a Slurm job cancelled or preempted,
  // a VM shutting down): lost with its worker, not failed by its command.
  const bool worker_stopped = e.reason() == kAgentStopped && !t->cancel_requested;
  if (!e.error().empty()) {
    state = v1::TASK_STATE_FAILURE;
    reason = e.error();
    if (e.command_not_found()) {
      st.set_has_exit_code(true);
      st.set_exit_code(127);
    }
  } else if (t->cancel_requested && !(e.reason().empty() && e.signal() == 0 && e.has_exit_code())) {
    // Stopped by the cancel. A command that ran to its own end before the cancel took effect
    // (its report has no reason and an exit code) is recorded as it ended, never CANCELLED.
    state = v1::TASK_STATE_CANCELLED;
    reason = t->cancel_reason;
  } else if (e.reason() == "timeout") {
    state = v1::TASK_STATE_FAILURE;
    reason = "timeout";
  } else if (worker_stopped) {
    state = v1::TASK_STATE_FAILURE;
    reason = fmt::format("worker {} stopped", s->worker);
  } else if (e.signal() > 0) {
    state = v1::TASK_STATE_FAILURE;
    reason = fmt::format("killed by signal {} ({})", e.signal(), strsignal(e.signal()));
  } else if (e.has_exit_code() && e.exit_code() == 0) {
    state = v1::TASK_STATE_SUCCESS;
  } else {
    state = v1::TASK_STATE_FAILURE;
    reason = fmt::format("exit code {}", e.exit_code());
  }
  PoolController* pool = t->pool;
  Worker* w = pool ? pool->Find(t->assigned) : nullptr;
  if (worker_stopped && w) pool->AgentStopping(w);
  uint64_t batch_worker = w ? w->batch : 0;
  ReleaseSlot(t);
  // A batch pool's worker did its shard: it is not reused.
  if (batch_worker && (w = pool->Find(s->worker))) pool->Retire(w, "its batch task is done");
  Task* group = t->parent.empty() ? nullptr : FindTask(t->parent);
  if (group && group->gang() && group->gang_stopping) {
    GangShardStopped(t, "stopped with its gang");
  } else if (worker_stopped && group && group->gang()) {
    GangShardStopped(t, fmt::format("lost with worker {} (its agent stopped)", s->worker));
  } else if (worker_stopped && t->attempt() <= t->rec.spec.retries() && !IsInteractive(t->rec.spec)) {
    Requeue(t, reason);
  } else if (state == v1::TASK_STATE_FAILURE && !t->cancel_requested && t->rec.spec.retry_on_failure() &&
             t->attempt() <= t->rec.spec.retries() && !IsInteractive(t->rec.spec) && !(group && group->gang())) {
    Requeue(t, reason);
  } else {
    OwnCommandEnded(t, state, reason);
  }
  // The agent may forget the exit only once what it reported is durable.
  std::weak_ptr<AgentLink> link = s->link;
  batcher_.Submit(store::Mutation::PutTask(t->rec), [link, ack](const Status& st) {
    if (!st.ok()) return;  // it will report again after reconnecting
    if (auto l = link.lock()) l->Send(ack);
  });
  if (pool) Schedule(pool);
}

void Core::LostGraceExpired(const std::string& id, int attempt) {
  Task* t = FindTask(id);
  if (!t || t->attempt() != attempt || t->st().state() != v1::TASK_STATE_RUNNING) return;
  t->lost_timer = 0;
  if (session_by_worker_.count(t->assigned) && t->dispatched) {
    // Reattached meanwhile; nothing to do unless it was not reported (handled at hello).
    return;
  }
  PoolController* pool = t->pool;
  std::string worker = t->assigned;
  ReleaseSlot(t);
  Task* group = t->parent.empty() ? nullptr : FindTask(t->parent);
  if (group && group->gang()) {
    GangShardStopped(t, fmt::format("lost with worker {}", worker));
  } else if (t->cancel_requested) {
    OwnCommandEnded(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
  } else if (t->attempt() <= t->rec.spec.retries() && !IsInteractive(t->rec.spec)) {
    Requeue(t, fmt::format("worker {} lost", worker));
  } else {
    OwnCommandEnded(t, v1::TASK_STATE_FAILURE, "worker lost");
  }
  if (pool) Schedule(pool);
}

// ---- gangs -----------------------------------------------------------------------------------

// A shard of a running gang stopped (its worker was lost, or it was stopped with its gang):
// the whole gang stops, and is requeued as a whole if its retries allow.
void Core::GangShardStopped(Task* shard, const std::string& why) {
  Task* g = FindTask(shard->parent);
  shard->parked = true;
  shard->st().set_state(v1::TASK_STATE_QUEUEING);
  shard->st().set_worker("");
  shard->st().set_reason(why);
  Changed(shard);
  if (!g) return;
  if (!g->gang_stopping) {
    g->gang_stopping = true;
    g->gang_stop_reason = fmt::format("shard {} {}", shard->id(), why);
    spdlog::info("gang {}: {}; stopping its other shards", g->id(), g->gang_stop_reason);
    for (const std::string& cid : g->children) {
      Task* c = FindTask(cid);
      if (!c || c == shard || c->final() || c->parked || c->assigned.empty()) continue;
      c->cancel_requested = true;
      c->cancel_reason = "gang stopped: " + g->gang_stop_reason;
      if (c->dispatched) {
        v1::ServerMessage m;
        m.mutable_cancel()->set_task_id(c->id());
        m.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
        m.mutable_cancel()->set_reason(c->cancel_reason);
        SendToWorker(c->assigned, std::move(m));
      }
    }
  }
  MaybeRestartGang(g);
}

void Core::MaybeRestartGang(Task* g) {
  bool all_stopped = true, any_final = false;
  for (const std::string& cid : g->children) {
    Task* c = FindTask(cid);
    if (!c || c->final()) {
      any_final = true;
      continue;
    }
    if (!c->parked) all_stopped = false;
  }
  if (!all_stopped) return;  // shards still stopping
  g->gang_stopping = false;
  if (!any_final && !g->cancel_requested && g->attempt() <= g->rec.spec.retries()) {
    spdlog::info("gang {}: requeued as a whole (attempt {} of {})", g->id(), g->attempt() + 1, g->rec.spec.retries() + 1);
    for (const std::string& cid : g->children) {
      Task* c = FindTask(cid);
      c->parked = false;
      c->cancel_requested = false;
      c->st().set_state(v1::TASK_STATE_QUEUEING);
      Changed(c);
    }
    g->st().set_reason(g->gang_stop_reason + "; requeued");
    Changed(g);
    Enqueue(g);
    return;
  }
  for (const std::string& cid : std::vector<std::string>(g->children)) {
    Task* c = FindTask(cid);
    if (!c || c->final()) continue;
    c->parked = false;
    bool lost = c->st().reason().rfind("lost", 0) == 0;
    Finish(c, g->cancel_requested ? v1::TASK_STATE_CANCELLED : v1::TASK_STATE_FAILURE,
           g->cancel_requested ? g->cancel_reason : (lost ? "worker lost" : "gang stopped: " + g->gang_stop_reason));
  }
}

}  // namespace tidepool::server
