// Pools: made at the start from the config file, and declared, changed and retired while the
// server runs (AgentPool resources, k8s_pools.h). A retired pool keeps its object until the
// server stops (tasks and agent links hold pointers to it); declared again, it comes back.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backends/redacting_backend.h"
#include "backends/registry.h"
#include "common/process.h"
#include "server/core_internal.h"

namespace tidepool::server {

using autoscaler::PoolController;
using autoscaler::Worker;

std::unique_ptr<backends::Backend> Core::MakeBackend(const config::PoolConfig& pc,
                                                     const std::shared_ptr<const Redactor>& redactor) {
  const config::BackendConfig* bc = pc.backend();
  if (!bc) return nullptr;
  backends::BackendContext ctx{pc.name, opts_.data_dir, opts_.agent_binary, opts_.agent_address,
                               pc.auto_scaler ? std::max(1, pc.auto_scaler->default_slots_per_agent) : 1};
  std::unique_ptr<backends::Backend> backend;
  auto made = backends::Registry::Global().Create(*bc, ctx);
  if (made.ok()) {
    backend = std::move(made).value();
  } else {
    std::string why = redactor->Scrub(made.status().message());
    spdlog::error("pool {}: {}", pc.name, why);
    backend = std::make_unique<UnavailableBackend>(why);
  }
  return backends::Redacting(std::move(backend), redactor);
}

std::unique_ptr<PoolController> Core::MakePool(const config::PoolConfig& pc, std::shared_ptr<const Redactor> redactor) {
  std::unique_ptr<backends::Backend> backend = MakeBackend(pc, redactor);
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
                     "From the first task waiting for a pool to the backend create call it caused", {{"pool", name}},
                     metrics::FineSecondsBuckets())
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
  auto pool = std::make_unique<PoolController>(pc, std::move(backend), std::move(hooks), &executor_, &timers_,
                                               opts_.agent_address);
  pool->SetLostGrace(opts_.worker_lost_grace);
  return pool;
}

void Core::RegroupPools() {
  sched_group_.clear();
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
}

namespace {

std::string BackendIdentity(const config::PoolConfig& pc) {
  const config::BackendConfig* b = pc.backend();
  return b ? b->type + "\n" + b->Fingerprint() : "";
}

}  // namespace

Status Core::DeclarePool(const config::PoolConfig& pc) {
  std::lock_guard lock(mu_);
  if (stopped_) return Unavailable("the server is stopping");
  // Its backend's secrets are scrubbed from what that backend says, as the config file's are.
  config::Config with = opts_.config;
  with.pools.push_back(pc);
  auto redactor = backends::ServerRedactor(with, CurrentEnvironment());
  auto it = pools_.find(pc.name);
  if (it == pools_.end()) {
    pools_[pc.name] = MakePool(pc, redactor);
    queues_[pc.name];
    declared_.insert(pc.name);
    RegroupPools();
    std::vector<Worker> held;
    if (auto h = held_workers_.find(pc.name); h != held_workers_.end()) {
      held = std::move(h->second);
      held_workers_.erase(h);
    }
    spdlog::info("pool {}: declared ({} workers from before)", pc.name, held.size());
    pools_[pc.name]->Start(held);
    RetryHeldHellos(pools_[pc.name].get());  // its agents that came back before it
    ScheduleSoon(pc.name);
    return Status::Ok();
  }
  if (!declared_.count(pc.name)) {
    return FailedPrecondition(fmt::format("pool {} is defined in the server's config file; it cannot be declared again",
                                          pc.name));
  }
  PoolController* p = it->second.get();
  if (p->is_static() != (pc.backend() == nullptr)) {
    return FailedPrecondition(fmt::format("pool {} cannot change between static and autoscaled: delete it and "
                                          "declare it again",
                                          pc.name));
  }
  std::unique_ptr<backends::Backend> backend;
  if (BackendIdentity(p->config()) != BackendIdentity(pc)) backend = MakeBackend(pc, redactor);
  p->Reconfigure(pc, std::move(backend));
  RegroupPools();
  ScheduleSoon(pc.name);
  return Status::Ok();
}

Status Core::RetirePool(const std::string& name, const std::string& why) {
  std::lock_guard lock(mu_);
  auto it = pools_.find(name);
  if (it == pools_.end()) return Status::Ok();
  if (!declared_.count(name)) return FailedPrecondition(fmt::format("pool {} is defined in the server's config file", name));
  PoolController* p = it->second.get();
  if (p->retired()) return Status::Ok();
  p->Retire(why);
  // Queued tasks that only this pool (or other retired ones) could run fail now.
  std::vector<Task*> doomed;
  for (auto& [key, t] : queues_[name]) {
    bool elsewhere = std::any_of(t->eligible.begin(), t->eligible.end(),
                                 [](PoolController* e) { return !e->retired(); });
    if (!elsewhere) doomed.push_back(t);
  }
  for (Task* t : doomed) Finish(t, v1::TASK_STATE_FAILURE, fmt::format("pool {} was removed ({})", name, why));
  Rehome(p);  // the rest wait on the other pools they may run on
  spdlog::info("pool {}: retired ({}); {} queued task{} failed", name, why, doomed.size(), doomed.size() == 1 ? "" : "s");
  ScheduleSoon(name);
  return Status::Ok();
}

bool Core::PoolGone(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = pools_.find(name);
  // A pool of the config file is not the AgentPool's to drain (its declaration was refused).
  if (it == pools_.end() || !declared_.count(name)) return true;
  return it->second->retired() && it->second->Empty();
}

std::optional<v1::Pool> Core::PoolSnapshot(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = pools_.find(name);
  if (it == pools_.end()) return std::nullopt;
  return PoolProto(*it->second);
}

bool Core::HeldForDeclaration(const v1::AgentHello& hello) {
  auto it = held_workers_.find(hello.pool());
  if (it == held_workers_.end()) return false;
  bool known = std::any_of(it->second.begin(), it->second.end(), [&](const Worker& w) { return w.name == hello.name(); });
  return known && tokens_.VerifyWorker(hello.name(), hello.token());
}

void Core::ExpireUndeclaredHellos(const std::string& pool) {
  if (PoolController* p = Pool(pool)) return RetryHeldHellos(p);
  auto it = held_hellos_.find(pool);
  if (it == held_hellos_.end()) return;
  for (HeldHello& h : std::exchange(it->second, {})) {
    Status refusal = PermissionDenied(fmt::format("worker {}: pool not found: {} (no AgentPool declares it)",
                                                  h.hello.name(), pool));
    spdlog::warn("refused agent connection: {}", refusal.message());
    h.link->Close(refusal);
  }
}

void Core::ForgetHeldWorkers(const std::set<std::string>& declared) {
  std::lock_guard lock(mu_);
  for (auto it = held_workers_.begin(); it != held_workers_.end();) {
    if (declared.count(it->first)) {
      ++it;
      continue;
    }
    for (const Worker& w : it->second) {
      spdlog::warn("pool {} is declared nowhere any more: its worker {} is forgotten (if its machine still runs, "
                   "delete it by hand)",
                   it->first, w.name);
      batcher_.Submit(store::Mutation::DeleteWorker(w.name));
    }
    std::string pool = it->first;
    it = held_workers_.erase(it);
    ExpireUndeclaredHellos(pool);
  }
}

}  // namespace tidepool::server
