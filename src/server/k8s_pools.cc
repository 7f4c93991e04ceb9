// AgentPoolController: AgentPool resources reconciled into pools (k8s_pools.h).
#include "server/k8s_pools.h"

#include <spdlog/spdlog.h>

#include <set>

#include "backends/toolkit/http_client.h"
#include "common/time.h"
#include "server/core.h"

namespace tidepool::server {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

bool HasFinalizer(const json& finalizers) {
  if (!finalizers.is_array()) return false;
  for (const json& f : finalizers) {
    if (f == kAgentPoolFinalizer) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<AgentPoolController>> AgentPoolController::Make(Core* core, const std::string& ns) {
  auto access = backends::kube::Access::Resolve("", "");
  if (!access.ok()) return Status(access.status().code(), "--k8s-pools: " + access.status().message());
  auto api = std::make_shared<backends::kube::Api>(*access, std::make_shared<backends::HttpClient>());
  return std::make_unique<AgentPoolController>(core, ns, std::move(api));
}

AgentPoolController::AgentPoolController(Core* core, std::string ns, std::shared_ptr<backends::kube::Api> api)
    : core_(core), ns_(std::move(ns)), api_(std::move(api)) {}

AgentPoolController::~AgentPoolController() { Stop(); }

void AgentPoolController::Start() {
  spdlog::info("AgentPools of namespace {} (through {}) are pools of this server", ns_, api_->access().source());
  thread_ = std::thread([this] { Run(); });
}

void AgentPoolController::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  api_->http().Abandon();
  if (thread_.joinable()) thread_.join();
}

bool AgentPoolController::Pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

std::string AgentPoolController::Path(const std::string& name) const {
  std::string p = "/apis/tidepool.dev/v1/namespaces/" + backends::UrlEscape(ns_) + "/agentpools";
  return name.empty() ? p : p + "/" + backends::UrlEscape(name);
}

void AgentPoolController::Run() {
  std::chrono::milliseconds backoff(500);
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (rv_.empty() && !ListAll()) {
      if (!Pause(backoff)) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
      continue;
    }
    auto end = api_->Watch(
        Path(), "", &rv_,
        [this](const std::string& type, const json& object) {
          if (type == "DELETED") {
            Gone(object.value("metadata", json::object()).value("name", ""));
          } else if (type == "ADDED" || type == "MODIFIED") {
            Handle(object);
          }
          return true;
        },
        Clock::now() + std::chrono::seconds(4));
    if (!end.ok()) {
      spdlog::warn("AgentPools: {}", end.status().message());
      if (!Pause(backoff)) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    } else {
      backoff = std::chrono::milliseconds(500);
      if (*end == backends::kube::WatchEnd::kExpired) rv_.clear();
    }
    Tend();
  }
}

bool AgentPoolController::ListAll() {
  auto list = api_->List(Path(), "", Clock::now() + std::chrono::seconds(30));
  if (!list.ok()) {
    spdlog::warn("AgentPools: {}", list.status().message());
    return false;
  }
  std::set<std::string> names;
  for (const json& item : list->items) {
    names.insert(item.value("metadata", json::object()).value("name", ""));
    Handle(item);
  }
  std::vector<std::string> gone;
  for (const auto& [name, k] : known_) {
    if (!names.count(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) Gone(name);
  if (!listed_once_) {
    core_->ForgetHeldWorkers(names);
    listed_once_ = true;
  }
  rv_ = list->resource_version;
  return true;
}

void AgentPoolController::Handle(const json& object) {
  const json meta = object.value("metadata", json::object());
  const std::string name = meta.value("name", "");
  if (name.empty()) return;
  Known& k = known_[name];
  k.finalizers = meta.value("finalizers", json::array());
  if (object.contains("status") && object["status"].is_object() && k.status.is_null()) k.status = object["status"];
  const bool deleting = meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null();
  if (deleting) {
    if (!k.deleting) {
      k.deleting = true;
      Status s = core_->RetirePool(name, "its AgentPool was deleted");
      if (!s.ok()) spdlog::warn("AgentPool {}: {}", name, s.message());
    }
    return;  // Tend removes the finalizer once the pool's workers are gone
  }
  if (!HasFinalizer(k.finalizers)) {
    json finalizers = k.finalizers.is_array() ? k.finalizers : json::array();
    finalizers.push_back(kAgentPoolFinalizer);
    // The resourceVersion makes the patch fail (409) rather than drop someone else's finalizer.
    json patch = {{"metadata", {{"finalizers", finalizers}, {"resourceVersion", meta.value("resourceVersion", "")}}}};
    auto done = api_->MergePatch(Path(name), patch, Clock::now() + std::chrono::seconds(30));
    if (!done.ok()) spdlog::warn("AgentPool {}: adding its finalizer: {}", name, done.status().message());
    else k.finalizers = finalizers;
  }
  const int64_t generation = meta.value("generation", int64_t{0});
  if (generation == k.handled_generation) return;
  k.handled_generation = generation;
  k.declared = ReadAgentPool(object, config::ProcessEnv());
  if (k.declared.config) {
    Status s = core_->DeclarePool(*k.declared.config);
    if (!s.ok()) {
      k.declared.error = s.message();
      k.declared.config.reset();
    }
  }
  if (!k.declared.error.empty()) spdlog::warn("AgentPool {}: {}", name, k.declared.error);
}

void AgentPoolController::Gone(const std::string& name) {
  if (name.empty()) return;
  // Deleted without our finalizer's wait (it was removed by hand): the pool still goes.
  Status s = core_->RetirePool(name, "its AgentPool was deleted");
  if (!s.ok()) spdlog::warn("AgentPool {}: {}", name, s.message());
  known_.erase(name);
}

void AgentPoolController::Tend() {
  const int64_t now = NowUnixMs();
  for (auto it = known_.begin(); it != known_.end();) {
    const std::string& name = it->first;
    Known& k = it->second;
    if (k.deleting) {
      if (core_->PoolGone(name) && HasFinalizer(k.finalizers)) {
        json rest = json::array();
        for (const json& f : k.finalizers) {
          if (f != kAgentPoolFinalizer) rest.push_back(f);
        }
        auto done = api_->MergePatch(Path(name), {{"metadata", {{"finalizers", rest}}}},
                                     Clock::now() + std::chrono::seconds(30));
        if (done.ok() || done.status().code() == StatusCode::kNotFound) {
          spdlog::info("AgentPool {}: its pool is drained; the resource may go", name);
          it = known_.erase(it);
          continue;
        }
        spdlog::warn("AgentPool {}: removing its finalizer: {}", name, done.status().message());
      }
      ++it;
      continue;
    }
    std::optional<v1::Pool> snapshot;
    if (k.declared.config) snapshot = core_->PoolSnapshot(name);
    json status = AgentPoolStatus(k.declared, snapshot ? &*snapshot : nullptr, k.status, now);
    if (status != k.status) {
      json patch = status;
      if (k.status.is_object()) {
        for (const auto& [key, value] : k.status.items()) {
          if (!patch.contains(key)) patch[key] = nullptr;  // a merge patch removes what is null
        }
      }
      auto done = api_->MergePatch(Path(name) + "/status", {{"status", patch}}, Clock::now() + std::chrono::seconds(30));
      if (done.ok()) {
        k.status = status;
      } else if (done.status().code() != StatusCode::kNotFound) {
        spdlog::warn("AgentPool {}: writing its status: {}", name, done.status().message());
      }
    }
    ++it;
  }
}

}  // namespace tidepool::server
