// PoolController: workers made together for one gang (a batch create): requested, created in one
// backend call where the backend can, and let go when the batch is done. See pool_controller.h.
#include <algorithm>

#include <fmt/format.h>

#include "autoscaler/answers.h"
#include "autoscaler/pool_controller.h"
#include "common/time.h"

namespace tidepool::autoscaler {

using backends::ErrorClass;

void PoolController::RequestBatch(uint64_t batch, int count) {
  if (batches_.count(batch)) return;
  batches_[batch] = {count, false, false};
  for (const auto& [id, w] : workers_) {
    if (w->batch == batch) {
      batches_[batch].created = true;  // made before a restart
      return;
    }
  }
  Event("scale_up", fmt::format("requesting a batch of {} worker{} (batch {})", count, count > 1 ? "s" : "", batch));
  if (!(cooldown_until_ && Clock::now() < *cooldown_until_)) LaunchBatch(batch);
}

void PoolController::LaunchBatch(uint64_t batch) {
  auto it = batches_.find(batch);
  if (it == batches_.end() || it->second.in_flight || it->second.created) return;
  it->second.in_flight = true;
  it->second.launched_at = Clock::now();
  int count = it->second.count;
  backends::CreateRequest req;
  req.pool = cfg_.name;
  req.server_address = server_address_;
  req.slots = std::max(1, policy().slots_per_agent);
  req.token_for = hooks_.token_for;
  std::shared_ptr<backends::Backend> backend = backend_;
  auto alive = alive_;
  auto post = hooks_.post;
  auto record = hooks_.backend_call;
  last_create_attempt_ = Clock::now();
  executor_->Submit([=, this] {
    auto t0 = Clock::now();
    auto names = backend->CreateBatch(req, count, std::to_string(batch), t0 + backend->CallTimeout());
    if (record) record("create_batch", names.ok() ? "ok" : "error", std::chrono::duration<double>(Clock::now() - t0).count());
    post([=, this] {
      if (*alive) OnBatchCreated(batch, names);
    });
  });
}

void PoolController::OnBatchCreated(uint64_t batch, Result<std::vector<std::string>> names) {
  auto it = batches_.find(batch);
  bool wanted = it != batches_.end();
  if (wanted) it->second.in_flight = false;
  if (!names.ok()) {
    AllocationFailed("batch create failed: " + names.status().message(), backends::ClassOf(names.status()));
    Reconcile();
    if (hooks_.changed) hooks_.changed();
    return;
  }
  std::string refused;  // the first name refused (answers.h), one error for the batch
  for (const std::string& name : *names) {
    Worker* w = Find(name);
    std::optional<NameHolder> holder;
    if (w) holder = NameHolder{w->phase, w->listed_unasked, w->recorded_at};
    CreateJudgement judged = JudgeCreateAnswer(name, holder, wanted ? it->second.launched_at : TimePoint::max());
    if (judged.verdict == CreateVerdict::kInvalid || judged.verdict == CreateVerdict::kDuplicate) {
      if (refused.empty()) refused = "batch create " + judged.error;
      continue;
    }
    if (!w) w = Add(Phase::kStarting, name);
    w->listed_unasked = false;
    w->batch = batch;
    w->labels["batch"] = std::to_string(batch);
    hooks_.persist(*w);
    if (!wanted) Remove(w, "its batch is no longer needed");
  }
  if (wanted) it->second.created = true;
  if (!refused.empty()) AllocationFailed(refused, ErrorClass::kTransient);
  if (hooks_.changed) hooks_.changed();
}

void PoolController::ReleaseBatch(uint64_t batch) {
  batches_.erase(batch);
  for (Worker* w : Workers()) {
    if (w->batch == batch && w->used_slots == 0 && w->phase != Phase::kDeleting) Remove(w, "its batch is done");
  }
}

}  // namespace tidepool::autoscaler
