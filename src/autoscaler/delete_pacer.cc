#include "autoscaler/delete_pacer.h"

#include <algorithm>

namespace tidepool::autoscaler {

DeletePacer::DeletePacer(double rate_per_second, int max_in_flight)
    : bucket_(rate_per_second > 0 ? rate_per_second : 1e9, std::max(1, max_in_flight)),
      max_in_flight_(std::max(1, max_in_flight)) {}

void DeletePacer::Enqueue(uint64_t id) {
  if (queued_.insert(id).second) order_.push_back(id);
}

std::optional<uint64_t> DeletePacer::Next(TimePoint now, const std::function<bool(uint64_t)>& wanted) {
  if (in_flight_ >= max_in_flight_) return std::nullopt;
  while (!order_.empty()) {
    uint64_t id = order_.front();
    if (!queued_.count(id) || !wanted(id)) {
      order_.pop_front();
      queued_.erase(id);
      continue;
    }
    if (!bucket_.TryTake(now)) return std::nullopt;
    order_.pop_front();
    queued_.erase(id);
    ++in_flight_;
    return id;
  }
  return std::nullopt;
}

void DeletePacer::Done() {
  if (in_flight_ > 0) --in_flight_;
}

std::optional<Millis> DeletePacer::WaitFor(TimePoint now) {
  if (queued_.empty() || in_flight_ >= max_in_flight_) return std::nullopt;
  return bucket_.WaitFor(now);
}

bool IsListFlood(size_t new_unknown, int max_agents, uint64_t workers_made) {
  uint64_t could_have_made = std::max<uint64_t>(static_cast<uint64_t>(std::max(0, max_agents)), workers_made);
  return new_unknown > 2 * could_have_made + 10;
}

}  // namespace tidepool::autoscaler
