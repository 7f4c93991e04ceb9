#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/crypto.h"
#include "common/time.h"
#include "server/core_internal.h"

namespace tidepool::server {

namespace {

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

}  // namespace

// Whether `state`, the final state of dependency `dep`, lets a task with `spec` run:
// --after: any outcome; --after-success: SUCCESS; --after-fail: FAILURE.
bool DependencySatisfied(const v1::TaskSpec& spec, const std::string& dep, v1::TaskState state) {
  if (Contains(spec.after_success(), dep) && state != v1::TASK_STATE_SUCCESS) return false;
  if (Contains(spec.after_fail(), dep) && state != v1::TASK_STATE_FAILURE) return false;
  return true;
}

// ---- submission ------------------------------------------------------------------------------

Result<std::vector<PoolController*>> Core::ResolveTarget(v1::TaskSpec& spec, const Task* parent) {
  if (spec.pool().empty()) {
    if (parent) {
      spec.set_pool(parent->rec.spec.pool());  // a child runs where its parent was sent
    } else {
      const config::PoolConfig* def = opts_.config.DefaultPool();
      if (!def) return FailedPrecondition("no pool given and no default pool");
      spec.set_pool(def->name);
    }
  }
  const bool interactive = IsInteractive(spec);
  auto accepts = [&](const PoolController* p) {
    return interactive ? p->config().accepts_interactive : p->config().accepts_batch;
  };
  const char* kind = interactive ? "interactive" : "batch";
  if (PoolController* p = Pool(spec.pool())) {
    if (!accepts(p)) return FailedPrecondition(fmt::format("pool {} does not accept {} tasks", spec.pool(), kind));
    return std::vector<PoolController*>{p};
  }
  // A selector: the pools carrying it, by selector_priority then name.
  std::vector<PoolController*> carriers;
  for (auto& [name, p] : pools_) {
    const auto& sel = p->config().selectors;
    if (std::find(sel.begin(), sel.end(), spec.pool()) != sel.end()) carriers.push_back(p.get());
  }
  if (carriers.empty()) return NotFound(fmt::format("pool not found: {}", spec.pool()));
  std::stable_sort(carriers.begin(), carriers.end(), [](const PoolController* a, const PoolController* b) {
    return a->config().selector_priority < b->config().selector_priority;
  });
  std::erase_if(carriers, [&](const PoolController* p) { return !accepts(p); });
  if (carriers.empty()) {
    return FailedPrecondition(fmt::format("no pool of selector {} accepts {} tasks", spec.pool(), kind));
  }
  return carriers;
}

Status Core::RebuildUsedIds() {
  // Room for twice what it held (everything stored was added at the start or when made); a
  // start on a store bigger than the first guess reads the ids a second time.
  size_t capacity = std::max<size_t>({2 * used_ids_.size(), 2 * tasks_.size(), 1 << 16});
  while (true) {
    BloomFilter fresh(capacity);
    Status s = store_->ForEachTaskId([&](std::string_view id) { fresh.Add(id); });
    if (!s.ok()) return s;
    for (const auto& [id, t] : tasks_) fresh.Add(id);
    if (!fresh.full()) {
      used_ids_ = std::move(fresh);
      return Status::Ok();
    }
    capacity = 2 * fresh.size();
  }
}

Result<std::string> Core::AssignId(const v1::TaskSpec& spec, const Task* parent) {
  auto taken = [this](const std::string& id) -> Result<bool> {
    if (tasks_.count(id)) return true;
    if (!used_ids_.MayContain(id)) return false;
    auto r = store_->GetTask(id);
    if (!r.ok()) return r.status();
    return r->has_value();
  };
  if (spec.name().empty() && !parent) {
    for (int i = 0; i < 100; ++i) {
      std::string id = RandomId(i < 50 ? 6 : 10);
      auto t = taken(id);
      if (!t.ok()) return t.status();
      if (!*t) return id;
    }
    return Internal("could not find a free task id");
  }
  const std::string name = spec.name().empty() ? "task" : spec.name();
  if (name.size() > kMaxNameLength) return InvalidArgument(fmt::format("task name longer than {} characters", kMaxNameLength));
  for (unsigned char c : name) {
    if (c == '/') return InvalidArgument(fmt::format("task name {} contains '/'", name));
    if (c <= ' ' || c == 0x7f) return InvalidArgument(fmt::format("task name \"{}\" contains a space or control character", name));
  }
  // Children are PARENT/NAME; a name used before gets _2, _3, ... (among siblings for children).
  const std::string wanted = parent ? parent->id() + "/" + name : name;
  auto t = taken(wanted);
  if (!t.ok()) return t.status();
  if (!*t) return wanted;
  std::string prefix = wanted + "_";
  int highest = 1;
  auto consider = [&](const std::string& id) {
    if (id.rfind(prefix, 0) != 0) return;
    std::string rest = id.substr(prefix.size());
    if (rest.empty() || rest.size() > 9 || !std::all_of(rest.begin(), rest.end(), ::isdigit)) return;
    highest = std::max(highest, std::stoi(rest));
  };
  auto stored = store_->ListTasks({.id_prefix = prefix});
  if (!stored.ok()) return stored.status();
  for (const auto& r : *stored) consider(r.status.id());
  for (const auto& [id, task] : tasks_) consider(id);
  return fmt::format("{}{}", prefix, highest + 1);
}

void Core::Track(std::unique_ptr<Task> t) {
  t->charged_bytes = SpecBytes(t->rec.spec);
  budget_.Charge(t->st().owner(), t->charged_bytes);
  std::string id = t->id();
  tasks_[id] = std::move(t);
}

void Core::Forget(const std::string& id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  budget_.Release(it->second->st().owner(), it->second->charged_bytes);
  tasks_.erase(it);
}

Core::Task* Core::AddTask(const std::string& id, v1::TaskSpec spec, const std::string& owner) {
  auto t = std::make_unique<Task>();
  t->rec.seq = next_seq_++;
  v1::Task& st = t->rec.status;
  st.set_id(id);
  st.set_name(spec.name());
  st.set_parent(spec.parent());
  st.set_state(v1::TASK_STATE_QUEUEING);
  st.set_pool(spec.pool());
  st.set_priority(spec.priority());
  *st.mutable_argv() = spec.argv();
  st.set_created_at_ms(NowUnixMs());
  st.set_kind(spec.kind());
  *st.mutable_labels() = spec.labels();
  st.set_cwd(spec.cwd());
  st.set_timeout_ms(spec.timeout_ms());
  st.set_owner(owner);
  t->parent = spec.parent();
  t->rec.spec = std::move(spec);
  Task* raw = t.get();
  Track(std::move(t));
  used_ids_.Add(id);
  if (used_ids_.full()) {
    // Doubles, so rare; a filter that cannot be rebuilt still answers "maybe" (a store read).
    if (Status s = RebuildUsedIds(); !s.ok()) spdlog::warn("cannot rebuild the filter of used task ids: {}", s.message());
  }
  return raw;
}

Result<Core::Task*> Core::CreateTask(v1::TaskSpec spec, std::shared_ptr<RunClient> client, Committed on_commit,
                                     const Caller& caller) {
  if (spec.argv_size() == 0 || spec.argv(0).empty()) return InvalidArgument("no command given");
  if (spec.retries() < 0) return InvalidArgument("--retries must not be negative");
  if (spec.timeout_ms() < 0) return InvalidArgument("--timeout must not be negative");
  if (spec.shards() < 0) return InvalidArgument("-N must not be negative");
  if (spec.gang() && spec.shards() < 1) return InvalidArgument("--gang needs -N SHARDS");
  if (spec.shards() > kMaxShards) return InvalidArgument(fmt::format("-N {} is more than {} shards", spec.shards(), kMaxShards));
  if (Status s = budget_.CheckSpec(spec); !s.ok()) return s;
  Task* parent = nullptr;
  if (!spec.parent().empty()) {
    parent = FindTask(spec.parent());
    // Someone else's task answers as a missing one (no oracle).
    if (!parent || parent->final() || !MaySee(caller, parent->rec.status)) {
      return FailedPrecondition(fmt::format("parent task {} is not running", spec.parent()));
    }
  }
  auto eligible = ResolveTarget(spec, parent);
  if (!eligible.ok()) return eligible.status();
  // Only the pools the caller may submit to (a selector keeps the ones allowed).
  std::vector<PoolController*> allowed;
  for (PoolController* p : *eligible) {
    if (caller.Can(p->name(), Role::kSubmit)) allowed.push_back(p);
  }
  if (allowed.empty()) return caller.Denied(eligible->front()->name(), Role::kSubmit);
  *eligible = std::move(allowed);
  // A child belongs to its parent's owner; a task's own token replaces any the caller sent.
  std::string owner = parent ? parent->st().owner() : caller.name;
  if (opts_.auth) spec.mutable_env()->erase("TIDEPOOL_TOKEN");
  {
    // Everything this submission would hold (a group and its shards, each with the spec and its
    // shard variables), before any of it is made.
    const int64_t n = 1 + spec.shards();
    if (Status s = budget_.Admit(owner, n, n * (SpecBytes(spec) + 128)); !s.ok()) return s;
  }
  if (spec.gang()) {
    // A gang that can never fit is refused now rather than waiting forever.
    int most = 0;
    bool unbounded = false;
    for (PoolController* p : *eligible) {
      if (p->is_static()) unbounded = true;  // grows by hand
      most = std::max(most, p->PotentialSlots());
    }
    if (!unbounded && spec.shards() > most) {
      return FailedPrecondition(fmt::format("a gang of {} can never fit: {} holds at most {} slot{}", spec.shards(),
                                            spec.pool(), most, most == 1 ? "" : "s"));
    }
  }
  if (Status s = ResolveDependencies(spec, parent, caller); !s.ok()) return s;
  auto id = AssignId(spec, parent);
  if (!id.ok()) return id.status();

  const int shards = spec.shards();
  Task* t = AddTask(*id, spec, owner);
  t->eligible = *eligible;
  t->client = client;
  std::vector<Task*> created{t};
  if (shards > 0) {
    t->is_group = true;
    t->own_done = true;
    for (int i = 0; i < shards; ++i) {
      v1::TaskSpec cs = spec;
      cs.set_shards(0);
      cs.set_gang(false);
      cs.clear_after();
      cs.clear_after_success();
      cs.clear_after_fail();
      cs.set_parent(*id);
      cs.set_name(std::to_string(i));
      auto& env = *cs.mutable_env();
      env["TIDEPOOL_SHARD_ID"] = env["VELDA_SHARD_ID"] = std::to_string(i);
      env["TIDEPOOL_TOTAL_SHARDS"] = env["VELDA_TOTAL_SHARDS"] = std::to_string(shards);
      Task* c = AddTask(*id + "/" + std::to_string(i), std::move(cs), owner);
      c->eligible = *eligible;
      t->children.push_back(c->id());
      t->open_children++;
      created.push_back(c);
    }
  }
  if (parent) {
    parent->children.push_back(*id);
    parent->open_children++;
  }
  for (Task* c : created) {
    if (c->is_group) continue;
    auto route = std::make_shared<OutputRoute>();
    if (client) {
      route->client = client;
    } else if (auto sink = logs_.Sink(c->id()); sink.ok()) {
      route->log = *sink;
    }
    std::lock_guard rl(routes_mu_);
    routes_[c->id()] = route;
  }
  // PENDING, QUEUEING (queued), or already FAILED_UPSTREAM; nothing is scheduled yet, so the
  // records below are written before any dispatch of these tasks.
  EvaluateDependencies(t);
  std::string task_id = t->id(), pool = t->st().pool();
  for (size_t i = 0; i < created.size(); ++i) {
    store::WriteBatcher::Callback cb;
    if (i + 1 == created.size()) cb = [on_commit, task_id, pool](const Status& s) { on_commit(s, task_id, pool); };
    Persist(created[i], std::move(cb));
  }
  return t;
}

void Core::EvaluateDependencies(Task* t) {
  t->unmet_deps = 0;
  std::string violated;
  for (const auto* list : {&t->rec.spec.after(), &t->rec.spec.after_success(), &t->rec.spec.after_fail()}) {
    for (const std::string& dep : *list) {
      v1::TaskState state;
      if (Task* d = FindTask(dep)) {
        if (!d->final()) {
          t->unmet_deps++;
          auto& w = dependents_[dep];
          if (std::find(w.begin(), w.end(), t->id()) == w.end()) w.push_back(t->id());
          continue;
        }
        state = d->st().state();
      } else {
        auto r = store_->GetTask(dep);
        if (!r.ok() || !r->has_value()) {
          violated = fmt::format("dependency {} cannot be read", dep);
          continue;
        }
        state = (*r)->status.state();
      }
      // Already final: evaluated now.
      if (!DependencySatisfied(t->rec.spec, dep, state) && violated.empty()) {
        violated = fmt::format("dependency {} ended {}", dep, api::StateName(state));
      }
    }
  }
  if (!violated.empty()) {
    Finish(t, v1::TASK_STATE_FAILED_UPSTREAM, violated);
  } else if (t->unmet_deps > 0) {
    t->st().set_state(v1::TASK_STATE_PENDING);
    for (const std::string& cid : t->children) {
      if (Task* c = FindTask(cid)) c->st().set_state(v1::TASK_STATE_PENDING);
    }
  } else {
    Release(t);
  }
}

void Core::Release(Task* t) {
  if (!t->is_group) {
    t->st().set_state(v1::TASK_STATE_QUEUEING);
    Enqueue(t);
    Notify(t);
    return;
  }
  // A group has no command: it waits for its shards. A gang's shards wait as one entry.
  t->st().set_state(v1::TASK_STATE_RUNNING_SUBTASKS);
  if (t->st().started_at_ms() == 0) t->st().set_started_at_ms(NowUnixMs());
  for (const std::string& cid : t->children) {
    Task* c = FindTask(cid);
    if (!c || c->final()) continue;
    if (t->gang()) {
      c->st().set_state(v1::TASK_STATE_QUEUEING);
      Notify(c);
    } else {
      Release(c);
    }
  }
  if (t->gang()) Enqueue(t);
  Notify(t);
}

void Core::Submit(v1::TaskSpec spec, std::function<void(Result<std::string>)> done, const Caller& caller) {
  std::unique_lock lock(mu_);
  if (stopped_) {
    lock.unlock();
    done(Unavailable("the server is shutting down"));
    return;
  }
  if (Status h = StoreTakesWork(); !h.ok()) {
    lock.unlock();
    done(h);
    return;
  }
  // The task's records and, when a slot is free, its assignment (Schedule below) go into one
  // commit: the acknowledgement and the dispatch both wait for it, one fsync instead of two.
  std::optional<store::WriteBatcher::Hold> group(&batcher_);
  spec.set_kind(v1::TASK_KIND_BATCH);
  spec.set_tty(false);
  spec.set_stdin_null(true);
  auto created = CreateTask(std::move(spec), nullptr, [this, done](const Status& s, const std::string& id, const std::string&) {
    if (s.ok()) {
      done(id);
      return;
    }
    done(Status(s.code(), fmt::format("the task could not be stored: {}", s.message())));
    Post([this, id] {
      // Never acknowledged, so never run: cancel it (and its shards) and let it go.
      if (Task* t = FindTask(id); t && !t->final()) {
        std::vector<std::string> ignored;
        CancelTree(t, "the task could not be stored", &ignored);
      }
    });
  }, caller);
  if (!created.ok()) {
    group.reset();
    lock.unlock();
    done(created.status());
    return;
  }
  for (PoolController* p : (*created)->eligible) Schedule(p);
}

Result<v1::Task> Core::GetTask(const std::string& id, const Caller& caller) {
  v1::Task t;
  {
    std::lock_guard lock(mu_);
    if (Task* found = FindTask(id)) t = found->rec.status;
  }
  if (t.id().empty()) {
    auto r = store_->GetTask(id);
    if (!r.ok()) return r.status();
    if (!r->has_value()) return TaskNotFound(id);
    t = (*r)->status;
  }
  std::lock_guard lock(mu_);
  if (!MaySee(caller, t)) return TaskNotFound(id);  // exactly as a missing one
  return t;
}

std::string Core::TaskOwner(const std::string& id) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(id);
  return t && !t->final() ? t->st().owner() : "";
}

Result<uint64_t> Core::Watch(const std::string& id, std::function<void(const v1::Task&)> fn, const Caller& caller) {
  std::unique_lock lock(mu_);
  if (Task* t = FindTask(id)) {
    if (!MaySee(caller, t->rec.status)) return TaskNotFound(id);
    uint64_t wid = next_watch_++;
    fn(t->rec.status);
    if (!api::IsFinal(t->st().state())) t->watchers[wid] = std::move(fn);
    return wid;
  }
  lock.unlock();
  auto r = store_->GetTask(id);
  if (!r.ok()) return r.status();
  if (!r->has_value()) return TaskNotFound(id);
  lock.lock();
  if (!MaySee(caller, (*r)->status)) return TaskNotFound(id);
  lock.unlock();
  fn((*r)->status);
  return UINT64_MAX;
}

void Core::Unwatch(const std::string& id, uint64_t watch_id) {
  std::lock_guard lock(mu_);
  if (Task* t = FindTask(id)) t->watchers.erase(watch_id);
}

Result<std::pair<std::shared_ptr<LogSink>, bool>> Core::Logs(const std::string& id, const Caller& caller) {
  bool final = true;
  {
    std::lock_guard lock(mu_);
    if (Task* t = FindTask(id)) {
      if (!MaySee(caller, t->rec.status)) return TaskNotFound(id);
      final = api::IsFinal(t->st().state());
      auto sink = logs_.Sink(id);
      if (!sink.ok()) return sink.status();
      return std::make_pair(*sink, final);
    }
  }
  auto r = store_->GetTask(id);
  if (!r.ok()) return r.status();
  if (!r->has_value()) return TaskNotFound(id);
  {
    std::lock_guard lock(mu_);
    if (!MaySee(caller, (*r)->status)) return TaskNotFound(id);
  }
  auto sink = logs_.Sink(id);
  if (!sink.ok()) return sink.status();
  logs_.Release(id);
  return std::make_pair(*sink, true);
}

Status Core::StoreTakesWork() const {
  if (Status h = store_->Health(); !h.ok()) return h;
  return batcher_.stalled();  // its disk is full: a commit waits for space
}

void Core::Persist(Task* t, store::WriteBatcher::Callback cb) {
  batcher_.Submit(store::Mutation::PutTask(t->rec), std::move(cb));
}

void Core::Changed(Task* t) {
  Persist(t);
  for (auto& [id, fn] : t->watchers) fn(t->rec.status);
}

Result<std::vector<std::string>> Core::CancelTask(const std::string& id, const Caller& caller) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(id);
  if (!t) {
    auto r = store_->GetTask(id);
    if (!r.ok()) return r.status();
    if (!r->has_value()) return TaskNotFound(id);
    if (!MaySee(caller, (*r)->status)) return TaskNotFound(id);
    return std::vector<std::string>{};  // already final
  }
  if (!MaySee(caller, t->rec.status)) return TaskNotFound(id);
  std::vector<std::string> cancelled;
  CancelTree(t, "cancelled", &cancelled);
  for (auto& [name, pool] : pools_) ScheduleSoon(name);
  return cancelled;
}

void Core::CancelTree(Task* t, const std::string& reason, std::vector<std::string>* cancelled) {
  if (t->final()) return;
  cancelled->push_back(t->id());
  t->cancel_requested = true;
  t->cancel_reason = reason;
  for (const std::string& cid : std::vector<std::string>(t->children)) {
    if (Task* c = FindTask(cid)) CancelTree(c, reason, cancelled);
  }
  if (t->final()) return;  // a group whose last open child was just cancelled has resolved
  if (t->is_group) {
    Dequeue(t);  // a gang waiting as one entry
    if (t->open_children == 0) Finish(t, v1::TASK_STATE_CANCELLED, reason);
  } else if (t->queued || t->st().state() == v1::TASK_STATE_PENDING || t->parked ||
             (t->st().state() == v1::TASK_STATE_QUEUEING)) {
    Finish(t, v1::TASK_STATE_CANCELLED, reason);
  } else if (t->own_done) {
    if (t->open_children == 0) Finish(t, v1::TASK_STATE_CANCELLED, reason);
  } else if (t->dispatched) {
    v1::ServerMessage c;
    c.mutable_cancel()->set_task_id(t->id());
    c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
    c.mutable_cancel()->set_reason(reason);
    SendToWorker(t->assigned, std::move(c));
  }
  // Otherwise its dispatch is being committed: OnDispatchCommitted sees the flag.
}

void Core::Notify(Task* t) {
  for (auto& [wid, fn] : t->watchers) fn(t->rec.status);
}

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
  v1::TaskState state;
  std::string reason;
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
  uint64_t batch_worker = w ? w->batch : 0;
  ReleaseSlot(t);
  // A batch pool's worker did its shard: it is not reused.
  if (batch_worker && (w = pool->Find(s->worker))) pool->Retire(w, "its batch task is done");
  Task* group = t->parent.empty() ? nullptr : FindTask(t->parent);
  if (group && group->gang() && group->gang_stopping) {
    GangShardStopped(t, "stopped with its gang");
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
