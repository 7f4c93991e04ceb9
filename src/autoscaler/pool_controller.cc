#include "autoscaler/pool_controller.h"

#include "autoscaler/answers.h"

#include <algorithm>
#include <climits>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "common/time.h"

namespace tidepool::autoscaler {

using backends::ErrorClass;

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kRequested: return "requested";
    case Phase::kStarting: return "starting";
    case Phase::kIdle: return "idle";
    case Phase::kBusy: return "busy";
    case Phase::kDraining: return "draining";
    case Phase::kDeleting: return "deleting";
    case Phase::kLost: return "lost";
    case Phase::kUnknown: return "unknown";
  }
  return "?";
}

namespace {

constexpr size_t kMaxEvents = 50;
constexpr Millis kMaxCooldown = std::chrono::minutes(10);

}  // namespace

PoolController::PoolController(config::PoolConfig cfg, std::unique_ptr<backends::Backend> backend, Hooks hooks,
                               Executor* executor, TimerQueue* timers, std::string server_address)
    : cfg_(std::move(cfg)),
      backend_(std::move(backend)),
      hooks_(std::move(hooks)),
      executor_(executor),
      timers_(timers),
      server_address_(std::move(server_address)),
      alive_(std::make_shared<bool>(true)),
      named_in_flight_(std::make_shared<NamedInFlight>()),
      create_bucket_(cfg_.auto_scaler && cfg_.auto_scaler->create_rate_per_second > 0
                         ? cfg_.auto_scaler->create_rate_per_second
                         : 1e9,
                     cfg_.auto_scaler ? std::max(1, cfg_.auto_scaler->max_concurrent_creates) : 10),
      // Deletes at the create limits: the spec names no delete rate of its own.
      delete_pacer_(cfg_.auto_scaler ? cfg_.auto_scaler->create_rate_per_second : 1e9,
                    cfg_.auto_scaler ? std::max(1, cfg_.auto_scaler->max_concurrent_creates) : 10),
      started_at_(Clock::now()) {}

PoolController::~PoolController() { Stop(); }

Policy PoolController::policy() const {
  Policy p;
  if (retired_) {
    p.lost_grace = lost_grace_;  // nothing wanted: every worker may go
  } else if (cfg_.auto_scaler) {
    const auto& a = *cfg_.auto_scaler;
    p.min_agents = a.min_agents;
    p.max_agents = a.max_agents;
    p.min_idle = a.min_idle_agents;
    p.max_idle = a.max_idle_agents;
    p.slots_per_agent = a.default_slots_per_agent;
    p.idle_decay = a.idle_decay;
    p.initial_delay = a.initial_delay;
    p.lost_grace = lost_grace_;
  } else if (cfg_.fixed) {
    // A fixed pool is the standard policy pinned at its size: never grows, never shrinks.
    p.min_agents = p.max_agents = cfg_.fixed->count;
    p.max_idle = INT_MAX / 2;
    p.lost_grace = lost_grace_;
  }
  return p;
}

void PoolController::Start(const std::vector<Worker>& persisted) {
  for (const Worker& old : persisted) {
    Phase phase = old.phase;
    // Connected before the restart: capacity that should come back. Until it reconnects (or the
    // backend's list says it is gone) it counts like a worker that is starting.
    if (phase == Phase::kIdle || phase == Phase::kBusy || phase == Phase::kRequested) phase = Phase::kStarting;
    if (phase == Phase::kDraining) phase = Phase::kDeleting;
    Worker* w = Add(phase, old.name);
    w->restored = true;
    w->created_at_ms = old.created_at_ms;
    w->labels = old.labels;
    w->address = old.address;
    if (auto it = old.labels.find("batch"); it != old.labels.end() && batch_mode()) {
      w->batch = std::strtoull(it->second.c_str(), nullptr, 10);
    }
  }
  if (is_static()) return;
  WatchBackend();
  Sync();
  Reconcile();
}

void PoolController::Stop() {
  if (!*alive_) return;
  *alive_ = false;
  for (TimerQueue::TimerId* t : {&wake_timer_, &sync_timer_, &create_timer_, &delete_timer_, &walltime_timer_}) {
    if (*t) timers_->Cancel(*t);
    *t = 0;
  }
  KeepNamedInFlight();
  if (backend_) backend_->Abandon();
}

void PoolController::KeepNamedInFlight() {
  std::lock_guard lock(named_in_flight_->mu);
  for (const auto& [name, id] : named_in_flight_->by_name) {
    auto it = workers_.find(id);
    if (it == workers_.end() || !it->second->name.empty() || by_name_.count(name)) continue;
    Worker* w = it->second.get();
    w->name = name;
    by_name_[name] = w;
    hooks_.persist(*w);  // requested (restored as starting) or deleting (deleted at the next start)
  }
}

Worker* PoolController::Add(Phase phase, const std::string& name) {
  auto w = std::make_unique<Worker>();
  w->id = next_id_++;
  w->name = name;
  w->pool = cfg_.name;
  w->phase = phase;
  w->phase_since = w->recorded_at = Clock::now();
  w->listed_unasked = phase == Phase::kUnknown;
  w->created_at_ms = NowUnixMs();
  w->slots = std::max(1, policy().slots_per_agent);
  Worker* raw = w.get();
  workers_[raw->id] = std::move(w);
  if (!name.empty()) by_name_[name] = raw;
  if (!name.empty()) hooks_.persist(*raw);
  if (phase != Phase::kUnknown) ++workers_made_;
  return raw;
}

void PoolController::SetPhase(Worker* w, Phase p) {
  if (w->phase == p) return;
  w->phase = p;
  w->phase_since = Clock::now();
  if (!w->name.empty()) hooks_.persist(*w);
}

void PoolController::Forget(Worker* w) {
  if (!w->name.empty()) {
    by_name_.erase(w->name);
    hooks_.forget(w->name);
  }
  workers_.erase(w->id);
}

void PoolController::Event(const std::string& kind, const std::string& message, bool loud) {
  int64_t now = NowUnixMs();
  last_event_ms_[kind] = now;
  events_.push_back({now, kind, message});
  while (events_.size() > kMaxEvents) events_.pop_front();
  spdlog::log(loud ? spdlog::level::err : spdlog::level::info, "pool {}: {}: {}", cfg_.name, kind, message);
}

void PoolController::NoteDemand(bool waiting) {
  if (!waiting) {
    demand_since_.reset();
  } else if (!demand_since_) {
    demand_since_ = Clock::now();
  }
}

void PoolController::Reconcile() {
  if (is_static() || !*alive_) return;
  CheckWalltimes();
  const TimePoint now = Clock::now();
  if (batch_mode()) {
    // Batch pools never scale by the standard rules: workers come in batches for one task group
    // and go when their shard is done. Here only failed batch creates are retried.
    bool blocked = cooldown_until_ && now < *cooldown_until_;
    for (auto& [batch, req] : batches_) {
      if (!req.created && !req.in_flight && !blocked) LaunchBatch(batch);
    }
    ArmWake(blocked ? cooldown_until_ : std::nullopt);
    return;
  }
  Snapshot snap;
  snap.workers.reserve(workers_.size());
  for (const auto& [id, w] : workers_) {
    snap.workers.push_back({id, w->phase, w->free_slots(), w->phase_since, MayBeUp(*w)});
  }
  snap.waiting_tasks = hooks_.waiting_tasks ? hooks_.waiting_tasks() : 0;
  snap.decay_started = decay_started_;
  snap.started_at = started_at_;
  snap.creates_blocked = cooldown_until_ && now < *cooldown_until_;
  DropExpiredHolds(now);
  snap.held_creates = HeldCreates(now);
  // An allocation error is history once nothing has been attempted for allocation_error_reset_after.
  std::optional<TimePoint> error_reset_at;
  if (!last_error_.empty() && creates_in_flight_ == 0 && !snap.creates_blocked) {
    Millis reset = cfg_.auto_scaler ? cfg_.auto_scaler->allocation_error_reset_after : Millis(90000);
    TimePoint since = std::max(last_create_attempt_, last_error_at_);
    if (now >= since + reset) {
      last_error_.clear();
      consecutive_create_failures_ = 0;
    } else {
      error_reset_at = since + reset;
    }
  }
  Plan plan = MakePlan(snap, policy(), now);
  decay_started_ = plan.decay_started;
  held_by_unknown_ = plan.scale_up_held_by_unknown;

  if (plan.creates > 0) {
    for (int i = 0; i < plan.creates; ++i) create_queue_.push_back(Add(Phase::kRequested, "")->id);
    Event("scale_up", fmt::format("requesting {} worker{} (demand {}, size {})", plan.creates,
                                  plan.creates > 1 ? "s" : "", snap.waiting_tasks, plan.size));
    LaunchCreates();
  }
  for (uint64_t id : plan.removals) {
    auto it = workers_.find(id);
    if (it != workers_.end()) Remove(it->second.get(), "surplus idle capacity");
  }
  std::optional<TimePoint> wake = plan.wake_at;
  if (snap.creates_blocked && (!wake || *cooldown_until_ < *wake)) wake = cooldown_until_;
  if (error_reset_at && (!wake || *error_reset_at < *wake)) wake = error_reset_at;
  if (!refused_holds_.empty() && (!wake || refused_holds_.front() < *wake)) wake = refused_holds_.front();
  ArmWake(wake);
}

void PoolController::ArmWake(std::optional<TimePoint> at) {
  if (at == wake_at_ && (wake_timer_ || !at)) return;
  if (wake_timer_) timers_->Cancel(wake_timer_);
  wake_timer_ = 0;
  wake_at_ = at;
  if (!at) return;
  ArmTimer(&wake_timer_, *at, [this] {
    wake_at_.reset();
    Reconcile();
  });
}

void PoolController::ArmTimer(TimerQueue::TimerId* timer, TimePoint when, std::function<void()> fire) {
  auto alive = alive_;
  *timer = timers_->At(when, [this, alive, timer, fire = std::move(fire)] {
    hooks_.post([alive, timer, fire] {
      if (!*alive) return;
      *timer = 0;
      fire();
    });
  });
}

void PoolController::LaunchCreates() {
  const int max_in_flight = cfg_.auto_scaler ? std::max(1, cfg_.auto_scaler->max_concurrent_creates) : 10;
  const TimePoint now = Clock::now();
  while (!create_queue_.empty() && creates_in_flight_ < max_in_flight) {
    uint64_t id = create_queue_.front();
    auto it = workers_.find(id);
    if (it == workers_.end() || it->second->phase != Phase::kRequested) {
      create_queue_.pop_front();
      continue;
    }
    if (!MayLaunchCreate(now)) {
      // Something came back to life (an unknown machine listed) since the plan: max_agents is a
      // hard cap, so this request goes rather than the pool growing past it.
      create_queue_.pop_front();
      Remove(it->second.get(), "max_agents reached");
      continue;
    }
    if (!create_bucket_.TryTake(now)) {
      // Rate-limited: come back when the next token is there.
      if (!create_timer_) {
        Millis wait = create_bucket_.WaitFor(now);
        ArmTimer(&create_timer_, Clock::now() + wait, [this] { LaunchCreates(); });
      }
      break;
    }
    create_queue_.pop_front();
    it->second->create_launched = true;
    it->second->create_launched_at = now;
    it->second->create_in_flight = true;
    std::optional<TimePoint> demand = std::exchange(demand_since_, std::nullopt);
    auto latency = hooks_.scale_up_latency;
    ++creates_in_flight_;
    last_create_attempt_ = now;
    backends::CreateRequest req;
    req.pool = cfg_.name;
    req.server_address = server_address_;
    req.slots = std::max(1, policy().slots_per_agent);
    auto named = named_in_flight_;
    auto token_for = hooks_.token_for;
    req.token_for = [named, token_for, id](const std::string& name) {
      {
        std::lock_guard lock(named->mu);
        named->by_name[name] = id;
      }
      return token_for(name);
    };
    std::shared_ptr<backends::Backend> backend = backend_;
    auto alive = alive_;
    auto post = hooks_.post;
    auto done = std::make_shared<std::atomic<bool>>(false);
    auto record = hooks_.backend_call;
    executor_->Submit([=, this] {
      auto t0 = Clock::now();
      if (demand && latency) latency(std::chrono::duration<double>(t0 - *demand).count());
      Result<std::string> r = backend->Create(req, t0 + backend->CallTimeout());
      if (record) record("create", r.ok() ? "ok" : "error", std::chrono::duration<double>(Clock::now() - t0).count());
      // Even after a timeout the result is delivered: a worker that was made after the pool
      // gave up on it must not be orphaned (OnCreateDone deletes it).
      done->store(true);
      post([=, this] {
        if (*alive) OnCreateDone(id, r);
      });
    });
    const Millis call_timeout = backend->CallTimeout();
    timers_->After(call_timeout, [=, this] {
      if (done->load()) return;
      post([=, this] {
        if (!*alive) return;
        auto wit = workers_.find(id);
        if (wit == workers_.end() || wit->second->phase != Phase::kRequested) return;
        Worker* w = wit->second.get();
        if (hooks_.backend_call) {
          hooks_.backend_call("create", "timeout", std::chrono::duration<double>(call_timeout).count());
        }
        AllocationFailed(fmt::format("create timed out after {}", FormatDuration(call_timeout)), ErrorClass::kTransient);
        w->delete_when_named = true;  // if the create still succeeds, delete what it made
        SetPhase(w, Phase::kDeleting);
        Reconcile();
        if (hooks_.changed) hooks_.changed();
      });
    });
  }
}

// A failed or timed-out create: shown (pool get, metrics, waiting vruns) and a cooldown chosen by
// the failure's class (answers.h, RespondToCreateFailure): transient ones are retried after
// scale_up_error_retry_delay doubled per consecutive failure up to 10 min; auth and bad-request
// ones wait the longest cooldown at once; for every class but transient the creates still queued
// are dropped, so the demand they stood for goes to the selector's backup pools now (the pool is
// not Healthy() while cooling down). The pool retries by itself when the cooldown ends.
void PoolController::AllocationFailed(const std::string& error, ErrorClass cls) {
  last_error_ = cls == ErrorClass::kTransient ? error : fmt::format("{} [{}]", error, backends::ErrorClassName(cls));
  last_error_at_ = Clock::now();
  ++consecutive_create_failures_;
  const CreateFailureResponse r = RespondToCreateFailure(
      cls, cfg_.auto_scaler ? cfg_.auto_scaler->scale_up_error_retry_delay : Millis(60000),
      consecutive_create_failures_, kMaxCooldown);
  cooldown_until_ = Clock::now() + r.cooldown;
  int dropped = 0;
  if (r.drop_queued) {
    for (uint64_t id : std::exchange(create_queue_, {})) {
      auto it = workers_.find(id);
      if (it == workers_.end() || it->second->phase != Phase::kRequested || it->second->create_launched) continue;
      Forget(it->second.get());
      ++dropped;
    }
  }
  Event("allocation_error", fmt::format("{} (retry in {}{})", last_error_, FormatDuration(r.cooldown),
                                        dropped ? fmt::format("; {} queued create{} dropped", dropped, dropped > 1 ? "s" : "")
                                                : std::string()));
}

Status PoolController::Delete(const std::string& name, bool force) {
  Worker* w = Find(name);
  if (!w) return NotFound(fmt::format("worker not found: {}", name));
  if (w->used_slots > 0 && !force) {
    return FailedPrecondition(fmt::format("worker {} is running {} task{}; drain it or use --force", name,
                                          w->used_slots, w->used_slots > 1 ? "s" : ""));
  }
  if (is_static()) return FailedPrecondition(fmt::format("pool {} is static: stop the agent on {} by hand", cfg_.name, name));
  Event("scale_down", fmt::format("deleting {} (requested by an operator)", name));
  SetPhase(w, Phase::kDeleting);
  IssueDelete(w);
  Reconcile();
  return Status::Ok();
}

bool PoolController::Healthy() const {
  if (!backend_) return false;
  if (cfg_.auto_scaler && cfg_.auto_scaler->max_agents <= 0) return false;
  return !(cooldown_until_ && Clock::now() < *cooldown_until_);
}

int PoolController::PotentialSlots() const {
  int slots = std::max(1, policy().slots_per_agent);
  if (cfg_.auto_scaler) return cfg_.auto_scaler->max_agents * slots;
  if (cfg_.fixed) return cfg_.fixed->count * slots;
  int n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->connected) n += w->slots;
  }
  return n;
}

void PoolController::Retire(Worker* w, const std::string& why) {
  if (w->used_slots > 0) return;
  Remove(w, why);
}

bool PoolController::AwaitingNames() const {
  // After a restart, an agent may reconnect before the first list says its machine exists.
  if (backend_ && !listed_once_) return true;
  for (const auto& [batch, req] : batches_) {
    if (req.in_flight) return true;
  }
  for (const auto& [id, w] : workers_) {
    if (w->name.empty() && (w->phase == Phase::kRequested || w->phase == Phase::kStarting)) return true;
  }
  return false;
}

void PoolController::GhostRejected(const std::string& why) {
  ++ghosts_;
  Event("ghost_rejected", why);
}

Worker* PoolController::Find(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<Worker*> PoolController::Workers() {
  std::vector<Worker*> out;
  out.reserve(workers_.size());
  for (auto& [id, w] : workers_) out.push_back(w.get());
  return out;
}

std::vector<Worker*> PoolController::SchedulableWorkers() {
  std::vector<Worker*> out;
  for (auto& [id, w] : workers_) {
    if (w->schedulable() && w->free_slots() > 0) out.push_back(w.get());
  }
  return out;
}

std::map<std::string, int> PoolController::CountByPhase() const {
  std::map<std::string, int> out;
  for (Phase p : {Phase::kRequested, Phase::kStarting, Phase::kIdle, Phase::kBusy, Phase::kDraining,
                  Phase::kDeleting, Phase::kLost, Phase::kUnknown}) {
    out[PhaseName(p)] = 0;
  }
  for (const auto& [id, w] : workers_) out[PhaseName(w->phase)]++;
  return out;
}

int PoolController::requested_slots() const {
  int n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->phase == Phase::kRequested || w->phase == Phase::kStarting) n += w->slots;
  }
  return n;
}

int PoolController::idle_slots() const {
  int n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->schedulable()) n += w->free_slots();
  }
  return n;
}

int PoolController::busy_slots() const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w->used_slots;
  return n;
}

int PoolController::starting_count() const {
  int n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->phase == Phase::kRequested || w->phase == Phase::kStarting) ++n;
  }
  return n;
}

std::string PoolController::starting_detail() const {
  for (const auto& [id, w] : workers_) {
    if ((w->phase == Phase::kRequested || w->phase == Phase::kStarting) && !w->detail.empty()) return w->detail;
  }
  return "";
}

int PoolController::idle_worker_count() const {
  int n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->phase == Phase::kIdle) ++n;
  }
  return n;
}

std::string PoolController::status() const {
  if (retired_) return "retired";
  if (is_static()) return "static";
  if (cooldown_until_ && Clock::now() < *cooldown_until_) return "cooldown";
  if (held_by_unknown_) return "held";
  if (starting_count() > 0) return "scaling";
  return "ready";
}

}  // namespace tidepool::autoscaler
