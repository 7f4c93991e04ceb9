// PoolController: workers that take no new work: drained by an operator (`worker drain`) or by
// their walltime (walltime.h), or whose agent is stopping. See pool_controller.h.
#include <fmt/format.h>

#include "autoscaler/pool_controller.h"
#include "autoscaler/walltime.h"
#include "common/time.h"

namespace tidepool::autoscaler {

void PoolController::DrainWorker(Worker* w, const std::string& why) {
  w->drain_requested = true;
  if (w->used_slots == 0) {
    Remove(w, why);
  } else if (w->phase == Phase::kIdle || w->phase == Phase::kBusy) {
    SetPhase(w, Phase::kDraining);
    Event("draining", fmt::format("{} takes no new work ({}); deleted when its tasks end", w->name, why));
  }
}

Status PoolController::Drain(const std::string& name) {
  Worker* w = Find(name);
  if (!w) return NotFound(fmt::format("worker not found: {}", name));
  DrainWorker(w, "drained");
  Reconcile();
  return Status::Ok();
}

void PoolController::AgentStopping(Worker* w) {
  if (w->agent_stopping) return;
  w->agent_stopping = true;
  Event("agent_stopping", fmt::format("{}: its agent is stopping; no new work there", w->name));
}

void PoolController::SetWalltime(Worker* w, int64_t ends_at_ms, int64_t drain_at_ms) {
  if (w->ends_at_ms == ends_at_ms && w->drain_at_ms == drain_at_ms) return;
  w->ends_at_ms = ends_at_ms;
  w->drain_at_ms = drain_at_ms;
  if (ends_at_ms > 0) {
    Event("walltime", fmt::format("{} ends at {} and takes no new tasks from {}", w->name, FormatRfc3339(ends_at_ms),
                                  FormatRfc3339(drain_at_ms)));
  }
  Reconcile();
}

void PoolController::CheckWalltimes() {
  std::vector<WalltimeView> views;
  for (const auto& [id, w] : workers_) {
    if (w->drain_at_ms <= 0) continue;
    bool takes_work = w->connected && !w->drain_requested && (w->phase == Phase::kIdle || w->phase == Phase::kBusy);
    views.push_back({id, w->drain_at_ms, takes_work});
  }
  if (views.empty()) return;
  const int64_t now_ms = NowUnixMs();
  WalltimeDue due = DueForDrain(views, now_ms);
  for (uint64_t id : due.drain) {
    Worker* w = workers_.at(id).get();
    DrainWorker(w, fmt::format("its walltime ends at {}", FormatRfc3339(w->ends_at_ms)));
  }
  if (!due.next_ms || *due.next_ms == walltime_wake_ms_) return;
  if (walltime_timer_) timers_->Cancel(walltime_timer_);
  walltime_wake_ms_ = *due.next_ms;
  ArmTimer(&walltime_timer_, Clock::now() + Millis(*due.next_ms - now_ms), [this] {
    walltime_wake_ms_ = 0;
    Reconcile();
  });
}

}  // namespace tidepool::autoscaler
