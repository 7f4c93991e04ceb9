#include "server/core.h"

#include <signal.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/crypto.h"
#include "common/time.h"
#include "scheduler/matcher.h"

namespace tidepool::server {

using autoscaler::Phase;
using autoscaler::PoolController;
using autoscaler::Worker;

namespace {

constexpr int kMaxNameLength = 128;
// How long a hello with a valid token but a name its pool does not know yet may wait for it.
constexpr std::chrono::seconds kHelloHold{60};

v1::WorkerState ToProto(Phase p) {
  switch (p) {
    case Phase::kRequested: return v1::WORKER_STATE_REQUESTED;
    case Phase::kStarting: return v1::WORKER_STATE_STARTING;
    case Phase::kIdle: return v1::WORKER_STATE_IDLE;
    case Phase::kBusy: return v1::WORKER_STATE_BUSY;
    case Phase::kDraining: return v1::WORKER_STATE_DRAINING;
    case Phase::kDeleting: return v1::WORKER_STATE_DELETING;
    case Phase::kLost: return v1::WORKER_STATE_LOST;
    case Phase::kUnknown: return v1::WORKER_STATE_UNKNOWN;
  }
  return v1::WORKER_STATE_UNSPECIFIED;
}

Phase FromProto(v1::WorkerState s) {
  switch (s) {
    case v1::WORKER_STATE_REQUESTED: return Phase::kRequested;
    case v1::WORKER_STATE_STARTING: return Phase::kStarting;
    case v1::WORKER_STATE_IDLE: return Phase::kIdle;
    case v1::WORKER_STATE_BUSY: return Phase::kBusy;
    case v1::WORKER_STATE_DRAINING: return Phase::kDraining;
    case v1::WORKER_STATE_DELETING: return Phase::kDeleting;
    case v1::WORKER_STATE_LOST: return Phase::kLost;
    default: return Phase::kUnknown;
  }
}

// A pool whose backend is configured but not built into this version: every call says so, the
// pool shows the error, and tasks for it wait (and can be cancelled) instead of vanishing.
class UnavailableBackend final : public backends::Backend {
 public:
  explicit UnavailableBackend(std::string why) : why_(std::move(why)) {}
  Result<std::string> Create(const backends::CreateRequest&) override { return Unimplemented(why_); }
  Status Delete(const std::string&) override { return Unimplemented(why_); }
  Result<std::vector<backends::ListedWorker>> List() override { return std::vector<backends::ListedWorker>{}; }

 private:
  std::string why_;
};

bool IsInteractive(const v1::TaskSpec& s) { return s.kind() == v1::TASK_KIND_INTERACTIVE; }

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Core::Task {
  store::TaskRecord rec;
  PoolController* pool = nullptr;
  std::string assigned;            // worker holding a slot for it ("" = none)
  bool dispatch_pending = false;   // assignment written, not yet committed
  bool dispatched = false;         // StartTask sent
  bool cancel_requested = false;
  std::string cancel_reason;
  bool exit_sent = false;          // the vrun client has its Exited
  std::shared_ptr<RunClient> client;
  std::map<uint64_t, std::function<void(const v1::Task&)>> watchers;
  TimerQueue::TimerId lost_timer = 0;
  v1::Waiting last_waiting;
  bool queued = false;

  const std::string& id() const { return rec.status.id(); }
  v1::Task& st() { return rec.status; }
  int attempt() const { return rec.status.attempts(); }
};

struct Core::Session {
  std::shared_ptr<AgentLink> link;
  std::string worker;
  std::string pool;
  std::string instance_id;
};

// Where a task's output goes: its log files, or the attached vrun. Used without the core lock.
class Core::OutputRoute {
 public:
  std::mutex mu;
  int attempt = 0;
  std::shared_ptr<LogSink> log;
  std::shared_ptr<RunClient> client;
  std::weak_ptr<AgentLink> agent;
  uint64_t forwarded[3] = {0, 0, 0};  // interactive: bytes handed to the client, per stream
};

// ---------------------------------------------------------------------------------------------

Core::Core(CoreOptions options, std::unique_ptr<store::Store> store, TokenAuthority tokens)
    : opts_(std::move(options)),
      store_(std::move(store)),
      tokens_(std::move(tokens)),
      batcher_(store_.get()),
      logs_(opts_.data_dir + "/logs"),
      executor_("backend", 16),
      posts_("core", 1) {}

Core::~Core() { Stop(); }

void Core::Post(std::function<void()> fn) {
  posts_.Submit([this, fn = std::move(fn)] {
    std::lock_guard lock(mu_);
    if (!stopped_) fn();
  });
}

Status Core::Start() {
  backends::RegisterBuiltinBackends();
  auto max_seq = store_->MaxSeq();
  if (!max_seq.ok()) return max_seq.status();
  auto workers = store_->ListWorkers();
  if (!workers.ok()) return workers.status();
  auto unfinished = store_->ListTasks({.unfinished_only = true});
  if (!unfinished.ok()) return unfinished.status();

  std::lock_guard lock(mu_);
  next_seq_ = *max_seq + 1;
  for (const config::PoolConfig& pc : opts_.config.pools) {
    std::unique_ptr<backends::Backend> backend;
    if (const config::BackendConfig* bc = pc.backend()) {
      backends::BackendContext ctx{pc.name, opts_.data_dir, opts_.agent_binary, opts_.agent_address,
                                   pc.auto_scaler ? std::max(1, pc.auto_scaler->default_slots_per_agent) : 1};
      auto made = backends::Registry::Global().Create(*bc, ctx);
      if (made.ok()) {
        backend = std::move(made).value();
      } else {
        spdlog::error("pool {}: {}", pc.name, made.status().message());
        backend = std::make_unique<UnavailableBackend>(made.status().message());
      }
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
    queues_[name];
  }

  // Tasks that were not final when the server stopped.
  for (store::TaskRecord& rec : *unfinished) {
    PoolController* pool = Pool(rec.status.pool());
    auto t = std::make_unique<Task>();
    t->rec = std::move(rec);
    t->pool = pool;
    Task* raw = t.get();
    tasks_[raw->id()] = std::move(t);
    if (!pool) {
      Finish(raw, v1::TASK_STATE_FAILURE, fmt::format("pool {} no longer exists", raw->st().pool()));
      continue;
    }
    bool interactive = IsInteractive(raw->rec.spec);
    if (raw->st().state() == v1::TASK_STATE_QUEUEING) {
      if (interactive) {
        Finish(raw, v1::TASK_STATE_CANCELLED, "server restarted before the task started; its vrun is gone");
      } else {
        Enqueue(raw);
      }
    } else if (raw->st().state() == v1::TASK_STATE_RUNNING) {
      raw->assigned = raw->st().worker();
      raw->dispatched = true;
      auto route = std::make_shared<OutputRoute>();
      route->attempt = raw->attempt();
      if (!interactive) {
        auto sink = logs_.Sink(raw->id());
        if (sink.ok()) route->log = *sink;
      } else {
        // Its vrun went with the old server: stop it when its agent comes back.
        raw->cancel_requested = true;
        raw->cancel_reason = "server restarted; the attached vrun is gone";
      }
      {
        std::lock_guard rl(routes_mu_);
        routes_[raw->id()] = route;
      }
      // Until its agent reattaches, the task is on a worker we cannot see.
      std::string id = raw->id();
      int attempt = raw->attempt();
      raw->lost_timer = timers_.After(opts_.worker_lost_grace, [this, id, attempt] {
        Post([this, id, attempt] { LostGraceExpired(id, attempt); });
      });
    }
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
  for (auto& [name, pool] : pools_) {
    pool->Start(by_pool[name]);
    // Restored tasks hold slots on their (not yet reconnected) workers.
    for (auto& [id, t] : tasks_) {
      if (t->pool == pool.get() && !t->assigned.empty()) {
        if (Worker* w = pool->Find(t->assigned)) {
          w->used_slots++;
          w->tasks.insert(id);
        }
      }
    }
    Schedule(pool.get());
  }
  if (opts_.metrics) opts_.metrics->AddCollector([this](metrics::GaugeWriter& g) { CollectMetrics(g); });
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
  posts_.Shutdown();
  batcher_.Flush();
  batcher_.Stop();
  executor_.Shutdown();
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

int Core::WaitingFor(const std::string& pool) const {
  auto it = queues_.find(pool);
  return it == queues_.end() ? 0 : static_cast<int>(it->second.size());
}

Core::Session* Core::SessionOf(AgentLink* link) {
  auto it = sessions_.find(link);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void Core::SendToWorker(const std::string& worker, v1::ServerMessage m) {
  auto it = session_by_worker_.find(worker);
  if (it != session_by_worker_.end()) it->second->link->Send(std::move(m));
}

void Core::ScheduleSoon(const std::string& pool) {
  if (!schedule_pending_.insert(pool).second) return;
  Post([this, pool] {
    schedule_pending_.erase(pool);
    if (PoolController* p = Pool(pool)) Schedule(p);
  });
}

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

void Core::Enqueue(Task* t) {
  queues_[t->st().pool()][{t->st().priority(), t->rec.seq}] = t;
  t->queued = true;
}

void Core::Dequeue(Task* t) {
  if (!t->queued) return;
  queues_[t->st().pool()].erase({t->st().priority(), t->rec.seq});
  t->queued = false;
}

// ---- clients ---------------------------------------------------------------------------------

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

// ---- scheduling ------------------------------------------------------------------------------

void Core::Schedule(PoolController* pool) {
  RetryHeldHellos(pool);
  auto& queue = queues_[pool->name()];
  if (!queue.empty()) {
    std::vector<Worker*> workers = pool->SchedulableWorkers();
    if (!workers.empty()) {
      std::vector<scheduler::WorkerCandidate> cands;
      int total_free = 0;
      for (uint32_t i = 0; i < workers.size(); ++i) {
        cands.push_back({i, workers[i]->free_slots(), workers[i]->used_slots > 0, workers[i]->phase_since});
        total_free += workers[i]->free_slots();
      }
      std::vector<scheduler::FreeWorker> free = scheduler::PreferWorkers(std::move(cands));
      std::vector<scheduler::QueuedTask> head;
      std::vector<Task*> head_tasks;
      for (auto& [key, t] : queue) {
        if (static_cast<int>(head.size()) >= total_free) break;
        head.push_back({static_cast<uint32_t>(head_tasks.size()), key.first, key.second});
        head_tasks.push_back(t);
      }
      for (const scheduler::Assignment& a : scheduler::Match(head, free)) {
        Dispatch(head_tasks[a.task], workers[a.worker]);
      }
    }
  }
  pool->Reconcile();
  NotifyWaiting(pool);
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

// ---- agents ----------------------------------------------------------------------------------

HelloOutcome Core::AgentHello(std::shared_ptr<AgentLink> link, const v1::AgentHello& hello, Status* refusal) {
  std::lock_guard lock(mu_);
  if (stopped_) {
    *refusal = Unavailable("the server is shutting down");
    return HelloOutcome::kRefused;
  }
  PoolController* pool = Pool(hello.pool());
  if (!pool) {
    *refusal = PermissionDenied(fmt::format("worker {}: pool not found: {}", hello.name(), hello.pool()));
    spdlog::warn("refused agent connection: {}", refusal->message());
    return HelloOutcome::kRefused;
  }
  bool worker_ok = tokens_.VerifyWorker(hello.name(), hello.token());
  bool join_ok = pool->is_static() && tokens_.VerifyJoin(hello.pool(), hello.token());
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
  Session* s = session.get();
  sessions_[link.get()] = std::move(session);
  session_by_worker_[w->name] = s;
  last_instance_[w->name] = hello.instance_id();
  agents_connected_++;

  v1::ServerMessage welcome;
  welcome.mutable_welcome()->set_worker_name(w->name);
  welcome.mutable_welcome()->set_heartbeat_interval_ms(opts_.heartbeat_interval.count());
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
}

void Core::AgentMessage(AgentLink* link, const v1::AgentMessage& msg) {
  std::lock_guard lock(mu_);
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
  if (route->log) {
    auto log = route->log;
    l.unlock();
    return log->Write(out.stream(), out.offset(), out.data());
  }
  if (!route->client) return end;
  int idx = out.stream() == v1::OUTPUT_STREAM_STDERR ? 2 : 1;
  uint64_t& forwarded = route->forwarded[idx];
  if (end <= forwarded) return forwarded;
  if (out.offset() > forwarded) return forwarded;  // a gap: ask for a resend
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

// ---- metrics and status ----------------------------------------------------------------------

void Core::CollectMetrics(metrics::GaugeWriter& g) {
  std::lock_guard lock(mu_);
  g.Gauge("tidepool_agents_connected", "Agents connected now", {}, agents_connected_.load());
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

std::string Core::StatusPage() {
  auto esc = [](const std::string& in) {
    std::string out;
    for (char c : in) {
      if (c == '<') out += "&lt;";
      else if (c == '>') out += "&gt;";
      else if (c == '&') out += "&amp;";
      else out += c;
    }
    return out;
  };
  std::string html =
      "<!doctype html><html><head><meta charset=utf-8><title>Tidepool</title>"
      "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style></head><body>"
      "<h1>Tidepool</h1><h2>Pools</h2><table><tr><th>pool</th><th>backend</th><th>status</th><th>workers</th>"
      "<th>queued</th><th>idle slots</th><th>busy slots</th><th>last error</th></tr>";
  for (const v1::Pool& p : ListPools()) {
    std::string workers;
    for (const auto& [state, n] : p.workers()) {
      if (n) workers += fmt::format("{} {} ", n, state);
    }
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(p.name()), esc(p.backend().empty() ? "static" : p.backend()), esc(p.status()),
                        esc(workers), p.queued(), p.idle_slots(), p.busy_slots(), esc(p.last_error()));
  }
  html += "</table><h2>Workers</h2><table><tr><th>worker</th><th>pool</th><th>state</th><th>slots</th></tr>";
  for (const v1::Worker& w : ListWorkers("")) {
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td></tr>", esc(w.name()), esc(w.pool()),
                        api::WorkerStateName(w.state()), w.used_slots(), w.slots());
  }
  html += "</table><p><a href=\"/metrics\">metrics</a></p></body></html>";
  return html;
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

std::vector<v1::Pool> Core::ListPools() {
  std::lock_guard lock(mu_);
  std::vector<v1::Pool> out;
  for (auto& [name, pool] : pools_) out.push_back(PoolProto(*pool));
  return out;
}

Result<v1::PoolDetail> Core::GetPool(const std::string& name) {
  std::lock_guard lock(mu_);
  PoolController* pool = Pool(name);
  if (!pool) return NotFound(fmt::format("pool not found: {}", name));
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

std::vector<v1::Worker> Core::ListWorkers(const std::string& pool_name) {
  std::lock_guard lock(mu_);
  std::vector<v1::Worker> out;
  for (auto& [name, pool] : pools_) {
    if (!pool_name.empty() && name != pool_name) continue;
    for (Worker* w : pool->Workers()) out.push_back(WorkerProto(*w));
  }
  return out;
}

Result<v1::Worker> Core::DrainWorker(const std::string& name) {
  std::lock_guard lock(mu_);
  for (auto& [pname, pool] : pools_) {
    if (Worker* w = pool->Find(name)) {
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

Result<v1::Worker> Core::DeleteWorker(const std::string& name, bool force) {
  std::lock_guard lock(mu_);
  for (auto& [pname, pool] : pools_) {
    if (pool->Find(name)) {
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
