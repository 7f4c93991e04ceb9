// PoolController: removing workers. Backend deletes are paced by DeletePacer at the create limits
// (delete_pacer.h); a list flooded with unknown machines is reported once. See pool_controller.h.
#include <algorithm>

#include <fmt/format.h>

#include "autoscaler/pool_controller.h"

namespace tidepool::autoscaler {

void PoolController::Remove(Worker* w, const std::string& why, bool quiet) {
  switch (w->phase) {
    case Phase::kBusy:
      return;  // never: the planner does not choose busy workers, and drain waits for them
    case Phase::kRequested:
      if (w->name.empty() && !w->create_launched) {
        // Still queued behind the create limits: nothing exists to delete.
        Event("scale_down", fmt::format("cancelling a requested worker before its create ({})", why));
        Forget(w);
        return;
      }
      if (w->name.empty()) {
        w->delete_when_named = true;
        SetPhase(w, Phase::kDeleting);
        Event("scale_down", fmt::format("cancelling a requested worker ({})", why));
        return;
      }
      break;
    default:
      break;
  }
  if (!quiet) Event("scale_down", fmt::format("deleting {} ({}, was {})", w->name, why, PhaseName(w->phase)));
  // Graceful: no new work from here on; the backend delete follows, as the pacing allows.
  SetPhase(w, Phase::kDeleting);
  IssueDelete(w);
}

void PoolController::IssueDelete(Worker* w) {
  if (w->name.empty() || w->create_in_flight) {
    w->delete_when_named = true;  // OnCreateDone issues it
    return;
  }
  if (w->delete_in_flight || !backend_) return;
  delete_pacer_.Enqueue(w->id);
  LaunchDeletes();
}

void PoolController::LaunchDeletes() {
  if (!*alive_ || !backend_) return;
  const TimePoint now = Clock::now();
  auto wanted = [this](uint64_t id) {
    auto it = workers_.find(id);
    if (it == workers_.end()) return false;
    const Worker& w = *it->second;
    return w.phase == Phase::kDeleting && !w.name.empty() && !w.create_in_flight && !w.delete_in_flight;
  };
  while (std::optional<uint64_t> next = delete_pacer_.Next(now, wanted)) {
    Worker* w = workers_.at(*next).get();
    w->delete_in_flight = true;
    w->delete_done = false;
    std::shared_ptr<backends::Backend> backend = backend_;
    auto alive = alive_;
    auto post = hooks_.post;
    uint64_t id = w->id;
    std::string name = w->name;
    auto record = hooks_.backend_call;
    executor_->Submit([=, this] {
      auto t0 = Clock::now();
      Status s = backend->Delete(name, t0 + backend->CallTimeout());
      if (record) record("delete", s.ok() ? "ok" : "error", std::chrono::duration<double>(Clock::now() - t0).count());
      post([=, this] {
        if (*alive) OnDeleteDone(id, s);
      });
    });
  }
  // Held by the rate: come back when the next token is there (a slot freed by a delete that
  // ends comes back through OnDeleteDone).
  std::optional<Millis> wait = delete_pacer_.WaitFor(now);
  if (wait && !delete_timer_) ArmTimer(&delete_timer_, Clock::now() + *wait, [this] { LaunchDeletes(); });
}

void PoolController::OnDeleteDone(uint64_t id, Status status) {
  delete_pacer_.Done();
  auto it = workers_.find(id);
  if (it != workers_.end()) {
    Worker* w = it->second.get();
    w->delete_in_flight = false;
    if (status.ok()) {
      w->delete_done = true;
      w->delete_done_gen = list_generation_;
      w->delete_done_at = Clock::now();
      ScheduleSync(Millis(0));  // confirm with a list rather than assume
    } else {
      last_error_ = fmt::format("delete {}: {}", w->name, status.message());
      last_error_at_ = Clock::now();
      Event("delete_failed", last_error_);
    }
  }
  LaunchDeletes();
}

void PoolController::NoteUnknownNames(const std::vector<std::string>& names) {
  const int max_agents = cfg_.auto_scaler ? cfg_.auto_scaler->max_agents : cfg_.fixed ? cfg_.fixed->count : 0;
  const bool flood = IsListFlood(names.size(), max_agents, workers_made_);
  if (flood && !flood_reported_) {
    Event("list_flood",
          fmt::format("the backend's list shows {} machines this pool never asked for, far more than the {} it "
                      "could have made (max_agents {}, workers made {}): they are unknown workers, deleted "
                      "after kill_unknown_after at no more than the create rate ({}/s)",
                      names.size(), std::max<uint64_t>(static_cast<uint64_t>(std::max(0, max_agents)), workers_made_),
                      max_agents, workers_made_,
                      cfg_.auto_scaler ? cfg_.auto_scaler->create_rate_per_second : 0.0),
          /*loud=*/true);
  }
  flood_reported_ = flood;
  for (const std::string& name : names) {
    // Recorded as of when the list was taken: a create launched after that cannot have made it
    // (answers.h: its answer with this name is then a duplicate, never an adoption).
    Add(Phase::kUnknown, name)->recorded_at = list_issued_at_;
    if (!flood) Event("unknown_worker", fmt::format("{} exists in the backend but was not asked for", name));
  }
}

}  // namespace tidepool::autoscaler
