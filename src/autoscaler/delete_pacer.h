// Delete pacing: backend deletes go out at the pool's create limits, never as a storm.
//
// Deletes wait in a queue and start only with a token from a bucket refilled at `create_rate`
// (burst `max_concurrent_creates`) and while fewer than `max_concurrent_creates` deletes are in
// flight: the same limits as creates (the spec names no delete rate of its own). A backend list
// that suddenly shows 100,000 machines nobody asked for then costs the infrastructure a steady
// trickle of delete calls at the create rate, not a thousand a second.
//
// Pure: time is passed in; the pool controller owns the timer and the backend calls.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <unordered_set>

#include "autoscaler/planner.h"
#include "autoscaler/token_bucket.h"

namespace tidepool::autoscaler {

class DeletePacer {
 public:
  DeletePacer(double rate_per_second, int max_in_flight);

  // Queues the delete of a worker (by id). Idempotent: a worker queued twice is deleted once.
  void Enqueue(uint64_t id);
  bool queued(uint64_t id) const { return queued_.count(id) > 0; }
  // The next delete that may start at `now`, taking a token and an in-flight slot for it. Queued
  // ids `wanted` rejects (the worker is gone, or no longer to be deleted) are dropped on the way
  // without spending a token. nullopt: nothing may start now (see WaitFor).
  std::optional<uint64_t> Next(TimePoint now, const std::function<bool(uint64_t)>& wanted);
  // A delete Next handed out has ended (either way): its slot is free again.
  void Done();
  // When deletes are queued but held only by the rate: how long until the next token. nullopt
  // when nothing is queued or the in-flight limit holds them (Done frees a slot).
  std::optional<Millis> WaitFor(TimePoint now);

  size_t queued_count() const { return queued_.size(); }
  int in_flight() const { return in_flight_; }

 private:
  TokenBucket bucket_;
  int max_in_flight_;
  int in_flight_ = 0;
  std::deque<uint64_t> order_;          // may hold ids no longer queued (dropped lazily)
  std::unordered_set<uint64_t> queued_;
};

// A list that suddenly shows far more machines than the pool ever made: more new unknown names
// in one list than twice what the pool could have made (the larger of `max_agents` and the
// workers it did make), plus 10. Such a list is logged loudly, once; its machines are deleted
// like any unknown worker, at the create rate.
bool IsListFlood(size_t new_unknown, int max_agents, uint64_t workers_made);

}  // namespace tidepool::autoscaler
