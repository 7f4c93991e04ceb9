#include "scheduler/matcher.h"

#include <algorithm>

namespace tidepool::scheduler {

std::vector<Assignment> Match(std::span<const QueuedTask> queue, std::span<const FreeWorker> workers) {
  std::vector<Assignment> out;
  if (queue.empty() || workers.empty()) return out;
  std::vector<QueuedTask> sorted;
  std::span<const QueuedTask> ordered = queue;
  if (!std::is_sorted(queue.begin(), queue.end(), RunsBefore)) {
    sorted.assign(queue.begin(), queue.end());
    std::sort(sorted.begin(), sorted.end(), RunsBefore);
    ordered = sorted;
  }
  size_t w = 0;
  int32_t left = workers[0].free_slots;
  for (const QueuedTask& t : ordered) {
    while (left <= 0) {
      if (++w == workers.size()) return out;
      left = workers[w].free_slots;
    }
    out.push_back({t.handle, workers[w].handle});
    --left;
  }
  return out;
}

std::vector<FreeWorker> PreferWorkers(std::vector<WorkerCandidate> c) {
  std::erase_if(c, [](const WorkerCandidate& w) { return w.free_slots <= 0; });
  std::sort(c.begin(), c.end(), [](const WorkerCandidate& a, const WorkerCandidate& b) {
    if (a.busy != b.busy) return a.busy;
    if (a.busy) {
      if (a.free_slots != b.free_slots) return a.free_slots < b.free_slots;
    } else if (a.idle_since != b.idle_since) {
      return a.idle_since > b.idle_since;
    }
    return a.handle < b.handle;
  });
  std::vector<FreeWorker> out;
  out.reserve(c.size());
  for (const auto& w : c) out.push_back({w.handle, w.free_slots});
  return out;
}

}  // namespace tidepool::scheduler
