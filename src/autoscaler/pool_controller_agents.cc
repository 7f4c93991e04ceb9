// PoolController: who is connected: an agent proving it is a worker this pool made (or may join),
// its heartbeats, its slots, its going away. See pool_controller.h.
#include <algorithm>

#include <fmt/format.h>

#include "autoscaler/pool_controller.h"
#include "common/time.h"

namespace tidepool::autoscaler {

Result<Worker*> PoolController::AgentConnected(const std::string& name, bool worker_token_ok, bool join_token_ok,
                                               int slots, const std::map<std::string, std::string>& labels,
                                               const std::string& address) {
  Worker* w = Find(name);
  if (!w) {
    uint64_t id = 0;
    {
      std::lock_guard lock(named_in_flight_->mu);
      auto it = named_in_flight_->by_name.find(name);
      if (it != named_in_flight_->by_name.end()) id = it->second;
    }
    auto it = workers_.find(id);
    if (id && it != workers_.end() && it->second->name.empty()) {
      w = it->second.get();  // connected before its create call returned
      w->name = name;
      by_name_[name] = w;
    }
  }
  if (!w && worker_token_ok && !is_static()) {
    // The backend created a worker without a name: the first agent with a valid token is it.
    for (auto& [id, cand] : workers_) {
      if (cand->name.empty() && cand->phase == Phase::kStarting) {
        w = cand.get();
        w->name = name;
        by_name_[name] = w;
        hooks_.persist(*w);
        break;
      }
    }
  }
  if (is_static()) {
    if (!join_token_ok && !(worker_token_ok && w)) {
      return PermissionDenied(fmt::format("worker {}: pool {} needs its join token", name, cfg_.name));
    }
    if (!w) w = Add(Phase::kIdle, name);
  } else {
    if (!worker_token_ok) return PermissionDenied(fmt::format("worker {}: invalid token", name));
    if (!w) return PermissionDenied(fmt::format("worker {} was not created by pool {}", name, cfg_.name));
  }
  w->connected = true;
  w->agent_stopping = false;
  w->slots = slots > 0 ? slots : std::max(1, policy().slots_per_agent);
  w->labels = labels;
  w->address = address;
  w->last_seen_ms = NowUnixMs();
  w->missing_lists = 0;
  if (w->phase != Phase::kDeleting && w->phase != Phase::kDraining) {
    SetPhase(w, w->used_slots > 0 ? Phase::kBusy : Phase::kIdle);
  }
  hooks_.persist(*w);
  // A connecting worker proves the backend works again.
  last_error_.clear();
  consecutive_create_failures_ = 0;
  cooldown_until_.reset();
  Event("worker_connected", fmt::format("{} ({} slot{})", name, w->slots, w->slots > 1 ? "s" : ""));
  return w;
}

void PoolController::AgentDisconnected(Worker* w) {
  w->connected = false;
  w->last_seen_ms = NowUnixMs();
  if (w->phase == Phase::kIdle || w->phase == Phase::kBusy) {
    SetPhase(w, Phase::kLost);
    Event("worker_lost", fmt::format("{} disconnected", w->name));
    // A lost worker holds its place under max_agents until its grace ends or its backend says
    // the machine is gone: ask the backend now rather than at the next sync interval.
    ScheduleSync(Millis(0));
  }
  // A list may already have shown it gone while it was still connected (OnListed keeps a
  // connected worker): look again now rather than at the next sync interval.
  if (w->phase == Phase::kDeleting && w->delete_done) ScheduleSync(Millis(0));
  Reconcile();
}

void PoolController::Heartbeat(Worker* w) { w->last_seen_ms = NowUnixMs(); }

void PoolController::SlotsChanged(Worker* w, bool reconcile) {
  if (w->connected && (w->phase == Phase::kIdle || w->phase == Phase::kBusy)) {
    SetPhase(w, w->used_slots > 0 ? Phase::kBusy : Phase::kIdle);
  }
  if (w->phase == Phase::kDraining && w->used_slots == 0) Remove(w, "drained");
  if (reconcile) Reconcile();
}

}  // namespace tidepool::autoscaler
