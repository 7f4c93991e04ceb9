// PoolController: what a backend answers, checked before the pool believes it (answers.h).
// A create that answers an invalid name or a name the pool already has is an error of that
// backend: the cooldown of a failed create, and the create still counts against max_agents for a
// while (it may have made a machine the pool cannot name). List entries that are not worker
// names are reported once, never tracked, never deleted. See pool_controller.h.
#include <algorithm>

#include <fmt/format.h>

#include "autoscaler/answers.h"
#include "autoscaler/pool_controller.h"
#include "common/worker_name.h"

namespace tidepool::autoscaler {

using backends::ErrorClass;

namespace {
constexpr size_t kRefusedAnswersKept = 32;
constexpr size_t kRefusedAnswerBytes = 4096;  // a longer one is kept (and matched) by its start
}  // namespace

void PoolController::OnCreateDone(uint64_t id, Result<std::string> result) {
  --creates_in_flight_;
  auto it = workers_.find(id);
  Worker* w = it == workers_.end() ? nullptr : it->second.get();
  if (w) w->create_in_flight = false;
  if (result.ok() && !result->empty()) {
    std::lock_guard lock(named_in_flight_->mu);
    named_in_flight_->by_name.erase(*result);
  }
  // Judged unless its agent told the name first (connected before the create returned).
  const bool judge = result.ok() && (!w || w->name.empty());
  Worker* found = judge && !result->empty() ? Find(*result) : nullptr;
  std::optional<NameHolder> holder;
  if (found) holder = NameHolder{found->phase, found->listed_unasked, found->recorded_at};
  const TimePoint launched = w ? w->create_launched_at : TimePoint::max();  // untracked: adopts nothing
  const CreateJudgement judged =
      judge ? JudgeCreateAnswer(*result, holder, launched) : CreateJudgement{CreateVerdict::kNameless, ""};
  const bool refused = judged.verdict == CreateVerdict::kInvalid || judged.verdict == CreateVerdict::kDuplicate;
  if (!w) {
    if (refused) {
      CreateAnswerRefused(nullptr, *result, judged.error, launched);
    } else if (result.ok() && !result->empty() && !found) {
      // Nobody tracks it any more; never leave it running unaccounted for.
      Worker* orphan = Add(Phase::kDeleting, *result);
      IssueDelete(orphan);
    }
    LaunchCreates();
    return;
  }
  if (!result.ok()) {
    bool timed_out = w->delete_when_named;
    if (w->name.empty()) {
      Forget(w);
    } else {
      // Its agent connected (and so named it) before the call answered: the machine exists,
      // whatever the call says. Forgetting it would leave a connected worker nobody knows, whose
      // tasks are never found lost when its agent dies. Kept, as a create that succeeded is.
      Event("create_failed_after_start",
            fmt::format("{}'s agent connected before its create failed; the worker is kept", w->name), false);
      if (w->delete_when_named) IssueDelete(w);
      else if (w->phase == Phase::kRequested) SetPhase(w, Phase::kStarting);
    }
    if (!timed_out) AllocationFailed("create failed: " + result.status().message(), backends::ClassOf(result.status()));
  } else if (refused) {
    // Never deleted by that name: it is another worker's, or no worker's at all.
    CreateAnswerRefused(w, *result, judged.error, launched);
  } else if (judged.verdict == CreateVerdict::kAdoptListed) {
    // A list saw this machine before its create returned and gave it a record of its own, as an
    // unknown worker: that record is the one we asked for. Keep it (it may be running work), drop
    // the placeholder, and never delete the machine twice.
    bool cancelled = w->delete_when_named;
    Forget(w);
    found->listed_unasked = false;
    if (found->phase == Phase::kUnknown) SetPhase(found, Phase::kStarting);
    hooks_.persist(*found);
    if (cancelled) Remove(found, "surplus capacity (cancelled while its create was in flight)");
  } else {
    const std::string& name = *result;
    if (!name.empty() && w->name.empty()) {
      w->name = name;
      by_name_[name] = w;
      hooks_.persist(*w);
    }
    if (w->delete_when_named) {
      IssueDelete(w);
    } else if (w->phase == Phase::kRequested) {
      SetPhase(w, Phase::kStarting);
    }
  }
  LaunchCreates();
  Reconcile();
  if (hooks_.changed) hooks_.changed();
}

void PoolController::CreateAnswerRefused(Worker* w, const std::string& answer, const std::string& error,
                                         TimePoint launched) {
  const TimePoint now = Clock::now();
  if (w) Forget(w);
  AllocationFailed("create " + error, ErrorClass::kTransient);  // even if it timed out or was cancelled meanwhile
  Millis cooldown = cooldown_until_ && *cooldown_until_ > now
                        ? std::chrono::duration_cast<Millis>(*cooldown_until_ - now)
                        : Millis(0);
  Millis register_timeout = cfg_.auto_scaler ? cfg_.auto_scaler->register_timeout : Millis(0);
  TimePoint until = RefusedCreateHeldUntil(now, register_timeout, cooldown);
  refused_holds_.insert(std::upper_bound(refused_holds_.begin(), refused_holds_.end(), until), until);
  std::string_view first = FirstFieldOfRefused(answer);
  if (first.empty()) return;
  // Its machine may be listed under this text; the first word of it is not a machine of its own.
  refused_answers_.push_back(answer.substr(0, kRefusedAnswerBytes));
  while (refused_answers_.size() > kRefusedAnswersKept) refused_answers_.pop_front();
  Worker* split = Find(std::string(first));
  if (split && split->listed_unasked && split->phase == Phase::kUnknown && !split->connected &&
      split->recorded_at >= launched) {
    // Listed while this create was in flight: that line was its machine, cut at the space.
    Event("worker_gone", fmt::format("{} was listed while a create was answering {}: the same machine, "
                                      "not one called {}; forgotten, not deleted",
                                      QuoteForLog(split->name), QuoteForLog(answer), QuoteForLog(split->name)));
    Forget(split);
  }
}

int PoolController::HeldCreates(TimePoint now) const {
  return static_cast<int>(refused_holds_.end() - std::upper_bound(refused_holds_.begin(), refused_holds_.end(), now));
}

void PoolController::DropExpiredHolds(TimePoint now) {
  refused_holds_.erase(refused_holds_.begin(), std::upper_bound(refused_holds_.begin(), refused_holds_.end(), now));
}

void PoolController::NoteListProblems(const std::vector<std::string>& problems) {
  if (problems.empty()) {
    list_problems_.clear();
    return;
  }
  last_error_ = "list: " + SummarizeListProblems(problems);
  last_error_at_ = Clock::now();
  // Each reported once while it lasts, not at every sync.
  std::vector<std::string> fresh;
  for (const std::string& p : problems) {
    if (!list_problems_.count(p)) fresh.push_back(p);
  }
  list_problems_ = std::set<std::string>(problems.begin(), problems.end());
  if (!fresh.empty()) Event("list_refused", "list: " + SummarizeListProblems(fresh), /*loud=*/true);
}

}  // namespace tidepool::autoscaler
