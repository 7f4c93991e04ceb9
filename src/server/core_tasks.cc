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
    if (p->retired()) return NotFound(fmt::format("pool {} was removed", spec.pool()));
    if (!accepts(p)) return FailedPrecondition(fmt::format("pool {} does not accept {} tasks", spec.pool(), kind));
    return std::vector<PoolController*>{p};
  }
  // A selector: the pools carrying it, by selector_priority then name.
  std::vector<PoolController*> carriers;
  for (auto& [name, p] : pools_) {
    const auto& sel = p->config().selectors;
    if (std::find(sel.begin(), sel.end(), spec.pool()) != sel.end() && !p->retired()) carriers.push_back(p.get());
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
  if (spec.has_workspace()) *st.mutable_workspace() = spec.workspace();
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
  if (!caller.tree.empty() && spec.parent().empty()) {
    return PermissionDenied(fmt::format(
        "a task's token submits only into its own task's tree ({}): name a parent task there ($TIDEPOOL_TASK_ID)",
        caller.tree));
  }
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
  if (Status s = CheckWorkspace(spec, *eligible, owner); !s.ok()) return s;
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

}  // namespace tidepool::server
