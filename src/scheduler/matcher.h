// The scheduler's match as a pure function: (queue, free slots) -> assignments.
//
// Rules: tasks go in queue order, lower priority number first and FIFO (submission sequence)
// within a priority; each assignment takes one free slot; no slot is given twice; a task is
// never skipped for a later one of the same or lower precedence (no starvation within a pool).
// Workers are filled in the order given; PreferWorkers() produces the standard order.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

namespace tidepool::scheduler {

struct QueuedTask {
  uint32_t handle = 0;  // the caller's reference (an index into its own table)
  int32_t priority = 0;
  uint64_t seq = 0;     // submission order
};

struct FreeWorker {
  uint32_t handle = 0;
  int32_t free_slots = 0;
};

struct Assignment {
  uint32_t task = 0;    // QueuedTask::handle
  uint32_t worker = 0;  // FreeWorker::handle
};

// True if a runs before b.
inline bool RunsBefore(const QueuedTask& a, const QueuedTask& b) {
  return a.priority != b.priority ? a.priority < b.priority : a.seq < b.seq;
}

// Assignments in queue order. The queue need not be sorted.
std::vector<Assignment> Match(std::span<const QueuedTask> queue, std::span<const FreeWorker> workers);

struct WorkerCandidate {
  uint32_t handle = 0;
  int32_t free_slots = 0;
  bool busy = false;  // already running something
  std::chrono::steady_clock::time_point idle_since{};
};

// The standard fill order: workers already busy first (packing keeps others idle so they can be
// released), fewest free slots first; then idle workers, most recently active first, so the
// longest-idle ones age out under idle_decay. Workers without free slots are dropped.
std::vector<FreeWorker> PreferWorkers(std::vector<WorkerCandidate> candidates);

}  // namespace tidepool::scheduler
