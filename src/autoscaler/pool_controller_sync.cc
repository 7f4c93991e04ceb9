// PoolController: the loop that reconciles, like a Kubernetes controller: what the backend lists
// against the workers the pool knows (a worker is gone only once its backend says so), and the
// timeouts of workers that never connected or stayed unknown. See pool_controller.h.
#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "autoscaler/answers.h"
#include "autoscaler/pool_controller.h"
#include "common/duration.h"
#include "common/time.h"

namespace tidepool::autoscaler {
namespace {

constexpr Millis kConfirmRestoredGone = std::chrono::seconds(1);  // see OnListed

}  // namespace

void PoolController::ScheduleSync(Millis delay) {
  if (is_static() || !*alive_) return;
  if (sync_timer_) timers_->Cancel(sync_timer_);
  ArmTimer(&sync_timer_, Clock::now() + delay, [this] { Sync(); });
}

void PoolController::Sync() {
  if (is_static() || !*alive_) return;
  if (sync_in_flight_) {
    sync_requested_ = true;
    return;
  }
  sync_in_flight_ = true;
  list_issued_at_ = Clock::now();
  sync_requested_ = false;
  uint64_t gen = ++list_generation_;
  std::shared_ptr<backends::Backend> backend = backend_;
  auto alive = alive_;
  auto post = hooks_.post;
  auto record = hooks_.backend_call;
  executor_->Submit([=, this] {
    auto t0 = Clock::now();
    auto listed = backend->List(t0 + backend->CallTimeout());
    if (record) record("list", listed.ok() ? "ok" : "error", std::chrono::duration<double>(Clock::now() - t0).count());
    post([=, this] {
      if (*alive) OnListed(listed, gen);
    });
  });
}

void PoolController::OnListed(Result<std::vector<backends::ListedWorker>> listed, uint64_t gen) {
  sync_in_flight_ = false;
  Millis interval = cfg_.auto_scaler ? cfg_.auto_scaler->sync_loop_interval : Millis(60000);
  if (interval.count() <= 0) interval = Millis(60000);
  if (!listed.ok()) {
    // A list error changes nothing: nobody is forgotten or created on its account.
    last_error_ = fmt::format("list: {}", listed.status().message());
    last_error_at_ = Clock::now();
    Event("list_failed", last_error_);
    ScheduleSync(interval);
    return;
  }
  listed_once_ = true;
  // Entries that are not workers (stopping, stopped) say why a worker went ("Evicted: The node
  // was low on resource: memory."): kept for the event that forgets it.
  for (const auto& lw : *listed) {
    if (backends::IsWorker(lw.state) || lw.detail.empty()) continue;
    if (Worker* w = Find(lw.name)) w->detail = lw.detail;
  }
  CheckedList checked = CheckListed(std::move(*listed), refused_answers_);
  NoteListProblems(checked.problems);
  std::set<std::string> present;
  std::vector<std::string> unknown;
  for (const auto& lw : checked.workers) {
    if (!present.insert(lw.name).second) continue;  // a name listed twice is one machine
    if (Worker* w = Find(lw.name)) {
      w->missing_lists = 0;
      w->detail = lw.detail;
      if (lw.state == backends::WorkerState::kPending) w->held_pending_at = Clock::now();
      if (lw.failing && !w->connected && (w->phase == Phase::kStarting || w->phase == Phase::kRequested)) {
        // It will not start (backend.h, ListedWorker::failing): a failed create, and gone.
        AllocationFailed(fmt::format("{}: {}", w->name, lw.detail), *lw.failing);
        Remove(w, lw.detail);
        continue;
      }
      if (w->phase == Phase::kDeleting && w->delete_done && gen > w->delete_done_gen &&
          Clock::now() - w->delete_done_at >= 3 * interval) {
        // Acknowledged three sync intervals ago, yet still listed: ask again (CheckTimeouts below).
        // A machine merely slow to go gets a harmless second delete; one that stays is not
        // left "deleting" forever.
        w->delete_done = false;
      }
      continue;
    }
    {
      std::lock_guard lock(named_in_flight_->mu);
      if (named_in_flight_->by_name.count(lw.name)) continue;  // its create has not returned yet
    }
    unknown.push_back(lw.name);
  }
  NoteUnknownNames(unknown);
  std::vector<Worker*> all = Workers();
  bool look_again_soon = false;
  // A watch event, not list lag, says it went: the second look comes soon too.
  const bool watch_poked = watch_poked_ && gen > watch_poked_at_gen_;
  if (watch_poked) watch_poked_ = false;
  for (Worker* w : all) {
    if (w->name.empty() || present.count(w->name) || w->connected) continue;
    if (w->phase == Phase::kDeleting && w->delete_done && gen > w->delete_done_gen) {
      Event("worker_gone", fmt::format("{} deleted", w->name));
      Forget(w);
      continue;
    }
    if (w->phase == Phase::kStarting || w->phase == Phase::kLost || w->phase == Phase::kUnknown ||
        w->phase == Phase::kDeleting) {
      if (++w->missing_lists >= 2) {
        Event("worker_gone", fmt::format("{} no longer exists in the backend (was {}{})", w->name, PhaseName(w->phase),
                                         w->detail.empty() ? "" : "; last listed: " + w->detail));
        Forget(w);
      } else if (w->restored || w->phase == Phase::kLost || watch_poked) {
        // Made by an earlier run of the server, or listed before it was lost, so no list lag can
        // hide it: the second look that confirms it gone need not wait a whole interval, while it
        // holds capacity (max_agents counts a lost worker) demand waits for.
        look_again_soon = true;
      }
    }
  }
  CheckTimeouts();
  Reconcile();
  if (hooks_.changed) hooks_.changed();
  if (sync_requested_) {
    Sync();
  } else {
    ScheduleSync(look_again_soon ? std::min(interval, kConfirmRestoredGone) : interval);
  }
}

void PoolController::CheckTimeouts() {
  if (!cfg_.auto_scaler && !cfg_.fixed) return;
  const TimePoint now = Clock::now();
  Millis kill_unknown = cfg_.auto_scaler ? cfg_.auto_scaler->kill_unknown_after : Millis(0);
  Millis register_timeout = cfg_.auto_scaler ? cfg_.auto_scaler->register_timeout : Millis(600000);
  auto unknown_expired = [&](const Worker* w) {
    return w->phase == Phase::kUnknown && kill_unknown.count() > 0 && now - w->phase_since >= kill_unknown;
  };
  // Many at once (a flooded list): one event, not one per machine.
  size_t expired = 0;
  for (const auto& [id, w] : workers_) expired += unknown_expired(w.get());
  const bool quiet = expired > 10;
  if (quiet) {
    Event("scale_down", fmt::format("deleting {} unknown workers (unknown for longer than kill_unknown_after), "
                                    "paced at the create rate", expired));
  }
  for (Worker* w : Workers()) {
    Millis age = std::chrono::duration_cast<Millis>(now - w->phase_since);
    if (unknown_expired(w)) {
      Remove(w, "unknown for longer than kill_unknown_after", quiet);
    } else if (w->phase == Phase::kLost && kill_unknown.count() > 0 && age >= kill_unknown) {
      Remove(w, "lost for longer than kill_unknown_after");
    } else if (w->phase == Phase::kStarting && register_timeout.count() > 0 &&
               now - std::max(w->phase_since, w->held_pending_at) >= register_timeout) {
      Event("register_timeout", fmt::format("{} did not connect within {}", w->name, FormatDuration(register_timeout)));
      Remove(w, "register timeout");
    } else if (w->phase == Phase::kDeleting && !w->delete_in_flight && !w->delete_done && !w->name.empty()) {
      IssueDelete(w);  // a failed delete is retried at every sync
    }
  }
}

}  // namespace tidepool::autoscaler
