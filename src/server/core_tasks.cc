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

Status Core::ValidateSpec(v1::TaskSpec& spec, PoolController** pool) {
  if (spec.argv_size() == 0 || spec.argv(0).empty()) return InvalidArgument("no command given");
  if (spec.shards() > 1 || spec.gang()) {
    return Unimplemented("sharding (-N) and gang scheduling (--gang) are not supported by this server yet");
  }
  if (spec.after_size() || spec.after_success_size() || spec.after_fail_size()) {
    return Unimplemented("task dependencies (--after...) are not supported by this server yet");
  }
  if (!spec.parent().empty()) return Unimplemented("nested tasks are not supported by this server yet");
  if (spec.retries() < 0) return InvalidArgument("--retries must not be negative");
  if (spec.timeout_ms() < 0) return InvalidArgument("--timeout must not be negative");
  if (spec.pool().empty()) {
    const config::PoolConfig* def = opts_.config.DefaultPool();
    if (!def) return FailedPrecondition("no pool given and no default pool");
    spec.set_pool(def->name);
  }
  *pool = Pool(spec.pool());
  if (!*pool) return NotFound(fmt::format("pool not found: {}", spec.pool()));
  return Status::Ok();
}

Result<std::string> Core::AssignId(const v1::TaskSpec& spec) {
  auto taken = [this](const std::string& id) -> Result<bool> {
    if (tasks_.count(id)) return true;
    auto r = store_->GetTask(id);
    if (!r.ok()) return r.status();
    return r->has_value();
  };
  if (spec.name().empty()) {
    for (int i = 0; i < 100; ++i) {
      std::string id = RandomId(i < 50 ? 6 : 10);
      auto t = taken(id);
      if (!t.ok()) return t.status();
      if (!*t) return id;
    }
    return Internal("could not find a free task id");
  }
  const std::string& name = spec.name();
  if (name.size() > kMaxNameLength) return InvalidArgument(fmt::format("task name longer than {} characters", kMaxNameLength));
  for (unsigned char c : name) {
    if (c == '/') return InvalidArgument(fmt::format("task name {} contains '/'", name));
    if (c <= ' ' || c == 0x7f) return InvalidArgument(fmt::format("task name \"{}\" contains a space or control character", name));
  }
  auto t = taken(name);
  if (!t.ok()) return t.status();
  if (!*t) return name;
  // name_2, name_3, ...: one past the highest suffix in use.
  std::string prefix = name + "_";
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

Core::Task* Core::AddTask(const std::string& id, v1::TaskSpec spec, PoolController* pool) {
  auto t = std::make_unique<Task>();
  t->pool = pool;
  t->rec.seq = next_seq_++;
  v1::Task& st = t->rec.status;
  st.set_id(id);
  st.set_name(spec.name());
  st.set_state(v1::TASK_STATE_QUEUEING);
  st.set_pool(spec.pool());
  st.set_priority(spec.priority());
  *st.mutable_argv() = spec.argv();
  st.set_created_at_ms(NowUnixMs());
  st.set_kind(spec.kind());
  *st.mutable_labels() = spec.labels();
  st.set_cwd(spec.cwd());
  st.set_timeout_ms(spec.timeout_ms());
  t->rec.spec = std::move(spec);
  Task* raw = t.get();
  tasks_[id] = std::move(t);
  return raw;
}

void Core::Persist(Task* t, store::WriteBatcher::Callback cb) {
  batcher_.Submit(store::Mutation::PutTask(t->rec), std::move(cb));
}

void Core::Changed(Task* t) {
  Persist(t);
  for (auto& [id, fn] : t->watchers) fn(t->rec.status);
}

void Core::Submit(v1::TaskSpec spec, std::function<void(Result<std::string>)> done) {
  std::unique_lock lock(mu_);
  if (stopped_) {
    lock.unlock();
    done(Unavailable("the server is shutting down"));
    return;
  }
  spec.set_kind(v1::TASK_KIND_BATCH);
  spec.set_tty(false);
  spec.set_stdin_null(true);
  PoolController* pool = nullptr;
  if (Status s = ValidateSpec(spec, &pool); !s.ok()) {
    lock.unlock();
    done(s);
    return;
  }
  auto id = AssignId(spec);
  if (!id.ok()) {
    lock.unlock();
    done(id.status());
    return;
  }
  Task* t = AddTask(*id, std::move(spec), pool);
  if (auto sink = logs_.Sink(*id); sink.ok()) {
    auto route = std::make_shared<OutputRoute>();
    route->log = *sink;
    std::lock_guard rl(routes_mu_);
    routes_[*id] = route;
  }
  std::string task_id = *id;
  Persist(t, [this, task_id, done](const Status& s) {
    if (s.ok()) {
      done(task_id);
      return;
    }
    done(Status(s.code(), fmt::format("the task could not be stored: {}", s.message())));
    Post([this, task_id] {
      // Never acknowledged, so never run: take it back out.
      if (Task* t = FindTask(task_id); t && t->st().state() == v1::TASK_STATE_QUEUEING) {
        Dequeue(t);
        tasks_.erase(task_id);
      }
    });
  });
  Enqueue(t);
  Schedule(pool);
}

std::string Core::Run(std::shared_ptr<RunClient> client, v1::TaskSpec spec) {
  std::lock_guard lock(mu_);
  if (stopped_) {
    client->Finish(Unavailable("the server is shutting down"));
    return "";
  }
  spec.set_kind(v1::TASK_KIND_INTERACTIVE);
  PoolController* pool = nullptr;
  if (Status s = ValidateSpec(spec, &pool); !s.ok()) {
    client->Finish(s);
    return "";
  }
  auto id = AssignId(spec);
  if (!id.ok()) {
    client->Finish(id.status());
    return "";
  }
  Task* t = AddTask(*id, std::move(spec), pool);
  t->client = client;
  auto route = std::make_shared<OutputRoute>();
  route->client = client;
  {
    std::lock_guard rl(routes_mu_);
    routes_[*id] = route;
  }
  std::string task_id = *id;
  std::string pool_name = pool->name();
  Persist(t, [client, task_id, pool_name](const Status& s) {
    if (!s.ok()) {
      client->Finish(Status(s.code(), fmt::format("the task could not be stored: {}", s.message())));
      return;
    }
    v1::RunEvent e;
    e.mutable_accepted()->set_task_id(task_id);
    e.mutable_accepted()->set_pool(pool_name);
    client->Send(std::move(e));
  });
  Enqueue(t);
  Schedule(pool);
  return task_id;
}

void Core::RunInput(const std::string& task_id, const v1::RunRequest& req) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(task_id);
  if (!t || api::IsFinal(t->st().state())) return;
  v1::ServerMessage m;
  switch (req.request_case()) {
    case v1::RunRequest::kStdin:
      m.mutable_stdin()->set_task_id(task_id);
      m.mutable_stdin()->set_data(req.stdin());
      break;
    case v1::RunRequest::kStdinEof:
      m.mutable_stdin()->set_task_id(task_id);
      m.mutable_stdin()->set_eof(true);
      break;
    case v1::RunRequest::kSignal:
      if (!t->dispatched) {
        // Before it runs, any forwarded signal means "never mind".
        t->cancel_requested = true;
        t->cancel_reason = fmt::format("cancelled by signal {} while queued", req.signal());
        if (t->queued) Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
        return;
      }
      m.mutable_signal()->set_task_id(task_id);
      m.mutable_signal()->set_signal(req.signal());
      break;
    case v1::RunRequest::kResize:
      m.mutable_resize()->set_task_id(task_id);
      *m.mutable_resize()->mutable_size() = req.resize();
      break;
    case v1::RunRequest::kCancel:
      t->cancel_requested = true;
      t->cancel_reason = "cancelled";
      if (t->queued) {
        Finish(t, v1::TASK_STATE_CANCELLED, "cancelled while queued");
      } else if (t->dispatched) {
        v1::ServerMessage c;
        c.mutable_cancel()->set_task_id(task_id);
        c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
        SendToWorker(t->assigned, std::move(c));
      }
      return;
    default:
      return;
  }
  if (t->dispatched && !t->assigned.empty()) SendToWorker(t->assigned, std::move(m));
}

void Core::RunClientGone(const std::string& task_id) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(task_id);
  if (!t) return;
  t->client.reset();
  {
    std::lock_guard rl(routes_mu_);
    auto it = routes_.find(task_id);
    if (it != routes_.end()) {
      std::lock_guard l(it->second->mu);
      it->second->client.reset();
    }
  }
  if (api::IsFinal(t->st().state())) return;
  t->cancel_requested = true;
  t->cancel_reason = "its vrun disconnected";
  if (t->queued) {
    Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
  } else if (t->dispatched) {
    v1::ServerMessage c;
    c.mutable_cancel()->set_task_id(task_id);
    c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
    c.mutable_cancel()->set_reason(t->cancel_reason);
    SendToWorker(t->assigned, std::move(c));
  }
}

Result<v1::Task> Core::GetTask(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    if (Task* t = FindTask(id)) return t->rec.status;
  }
  auto r = store_->GetTask(id);
  if (!r.ok()) return r.status();
  if (!r->has_value()) return NotFound(fmt::format("task not found: {}", id));
  return (*r)->status;
}

Result<std::vector<v1::Task>> Core::ListTasks(const v1::ListTasksRequest& req) {
  store::TaskQuery q;
  if (!req.all()) q.finished_after_ms = NowUnixMs() - 3600 * 1000;  // unfinished + the last hour
  q.state = req.state();
  q.pool = req.pool();
  auto stored = store_->ListTasks(q);
  if (!stored.ok()) return stored.status();
  std::vector<v1::Task> out;
  std::set<std::string> seen;
  {
    // The in-memory copy is the freshest (its latest write may not be committed yet).
    std::lock_guard lock(mu_);
    for (auto& r : *stored) {
      const Task* t = FindTask(r.status.id());
      out.push_back(t ? t->rec.status : r.status);
      seen.insert(r.status.id());
    }
    for (auto& [id, t] : tasks_) {
      if (!seen.count(id)) out.push_back(t->rec.status);
    }
  }
  std::erase_if(out, [&](const v1::Task& t) {
    if (req.state() != v1::TASK_STATE_UNSPECIFIED && t.state() != req.state()) return true;
    if (!req.pool().empty() && t.pool() != req.pool()) return true;
    for (const auto& [k, v] : req.labels()) {
      auto it = t.labels().find(k);
      if (it == t.labels().end() || it->second != v) return true;
    }
    return false;
  });
  std::stable_sort(out.begin(), out.end(), [](const v1::Task& a, const v1::Task& b) {
    return a.created_at_ms() < b.created_at_ms();
  });
  if (req.limit() > 0 && out.size() > static_cast<size_t>(req.limit())) {
    out.erase(out.begin(), out.end() - req.limit());
  }
  return out;
}

Result<std::vector<std::string>> Core::CancelTask(const std::string& id) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(id);
  if (!t) {
    auto r = store_->GetTask(id);
    if (!r.ok()) return r.status();
    if (!r->has_value()) return NotFound(fmt::format("task not found: {}", id));
    return std::vector<std::string>{};  // already final
  }
  if (api::IsFinal(t->st().state())) return std::vector<std::string>{};
  t->cancel_requested = true;
  t->cancel_reason = "cancelled";
  if (t->queued || t->st().state() == v1::TASK_STATE_PENDING) {
    Finish(t, v1::TASK_STATE_CANCELLED, "cancelled");
  } else if (t->dispatched) {
    v1::ServerMessage c;
    c.mutable_cancel()->set_task_id(id);
    c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
    c.mutable_cancel()->set_reason("cancelled");
    SendToWorker(t->assigned, std::move(c));
  }
  // Otherwise its dispatch is being committed: OnDispatchCommitted sees the flag.
  return std::vector<std::string>{id};
}

uint64_t Core::Watch(const std::string& id, std::function<void(const v1::Task&)> fn) {
  std::unique_lock lock(mu_);
  if (Task* t = FindTask(id)) {
    uint64_t wid = next_watch_++;
    fn(t->rec.status);
    if (!api::IsFinal(t->st().state())) t->watchers[wid] = std::move(fn);
    return wid;
  }
  lock.unlock();
  auto r = store_->GetTask(id);
  if (!r.ok() || !r->has_value()) return 0;
  fn((*r)->status);
  return UINT64_MAX;
}

void Core::Unwatch(const std::string& id, uint64_t watch_id) {
  std::lock_guard lock(mu_);
  if (Task* t = FindTask(id)) t->watchers.erase(watch_id);
}

Result<std::pair<std::shared_ptr<LogSink>, bool>> Core::Logs(const std::string& id) {
  bool final = true;
  {
    std::lock_guard lock(mu_);
    if (Task* t = FindTask(id)) {
      final = api::IsFinal(t->st().state());
      auto sink = logs_.Sink(id);
      if (!sink.ok()) return sink.status();
      return std::make_pair(*sink, final);
    }
  }
  auto r = store_->GetTask(id);
  if (!r.ok()) return r.status();
  if (!r->has_value()) return NotFound(fmt::format("task not found: {}", id));
  auto sink = logs_.Sink(id);
  if (!sink.ok()) return sink.status();
  logs_.Release(id);
  return std::make_pair(*sink, true);
}

void Core::Finish(Task* t, v1::TaskState state, const std::string& reason) {
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
  if (t->client) {
    if (!t->exit_sent) {
      v1::RunEvent e;
      v1::Exited* x = e.mutable_exited();
      x->set_state(state);
      x->set_has_exit_code(st.has_exit_code());
      x->set_exit_code(st.exit_code());
      x->set_signal(st.signal());
      x->set_reason(st.reason());
      x->set_command_not_found(st.exit_code() == 127 && st.reason().rfind("command not found", 0) == 0);
      t->client->Send(std::move(e));
      t->exit_sent = true;
    }
    t->client->Finish(Status::Ok());
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
  if (route && route->log) route->log->Complete();
  std::string id = t->id();
  Persist(t, [this, id](const Status&) {
    // Committed (or failed, logged by the writer): the store is now the reference.
    Post([this, id] {
      Task* t = FindTask(id);
      if (t && api::IsFinal(t->st().state())) {
        tasks_.erase(id);
        logs_.Release(id);
      }
    });
  });
  for (auto& [wid, fn] : t->watchers) fn(st);
  t->watchers.clear();
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
  } else if (t->cancel_requested) {
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
  ReleaseSlot(t);
  Finish(t, state, reason);
  // The agent may forget the exit only once the final state is durable.
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
  if (t->cancel_requested) {
    Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
  } else if (t->attempt() <= t->rec.spec.retries() && !IsInteractive(t->rec.spec)) {
    spdlog::info("task {}: worker {} lost; requeued (attempt {} of {})", id, worker, t->attempt(),
                 t->rec.spec.retries() + 1);
    t->st().set_state(v1::TASK_STATE_QUEUEING);
    t->st().set_worker("");
    Changed(t);
    Enqueue(t);
  } else {
    Finish(t, v1::TASK_STATE_FAILURE, "worker lost");
  }
  if (pool) Schedule(pool);
}

}  // namespace tidepool::server
