#include "autoscaler/planner.h"

#include <algorithm>

namespace tidepool::autoscaler {

int EffectiveSlots(const Policy& policy) { return policy.slots_per_agent > 0 ? policy.slots_per_agent : 1; }

int EffectiveMaxIdle(const Policy& policy) {
  return std::max(policy.max_idle, policy.min_idle + EffectiveSlots(policy) - 1);
}

bool CountsAgainstCap(const WorkerView& w, const Policy& policy, TimePoint now) {
  switch (w.phase) {
    case Phase::kRequested:
    case Phase::kStarting:
    case Phase::kIdle:
    case Phase::kBusy:
    case Phase::kUnknown:
    case Phase::kDraining:
      return true;
    case Phase::kDeleting:
      return w.connected;
    case Phase::kLost:
      return now < w.since + policy.lost_grace;
  }
  return true;
}

namespace {

bool NotConnected(Phase p) { return p == Phase::kRequested || p == Phase::kStarting; }

bool CountsInSize(Phase p) {
  return p == Phase::kRequested || p == Phase::kStarting || p == Phase::kIdle ||
         p == Phase::kBusy || p == Phase::kUnknown;
}

int OfferedSlots(const WorkerView& w, int slots_per_agent) {
  switch (w.phase) {
    case Phase::kRequested:
    case Phase::kStarting:
      return slots_per_agent;
    case Phase::kIdle:
    case Phase::kBusy:
      return std::max(0, w.free_slots);
    default:
      return 0;
  }
}

// A victim candidate, by value (sorting pointers into the snapshot costs a cache miss per
// comparison at 100k workers).
struct Candidate {
  TimePoint since;
  uint64_t id;
  uint32_t index;      // position in the snapshot: the tie-break a stable sort would keep
  bool not_connected;
  bool requested;
  int offered;
};

// Preference order: not connected first (newest first, requested before starting), then idle
// (longest idle first, then by id); ties in snapshot order. A strict total order.
bool Before(const Candidate& a, const Candidate& b) {
  if (a.not_connected != b.not_connected) return a.not_connected;
  if (a.not_connected) {
    if (a.since != b.since) return a.since > b.since;
    if (a.requested != b.requested) return a.requested;
  } else {
    if (a.since != b.since) return a.since < b.since;
    if (a.id != b.id) return a.id < b.id;
  }
  return a.index < b.index;
}

// Working state while a plan is built. Candidates are ordered lazily: most plans take no victim,
// so the order is only paid for when one is taken (a heap: O(n) to build, O(log n) per victim).
struct State {
  int size = 0;
  int idle = 0;
  std::vector<Candidate> heap;  // candidates not yet taken or ruled out
  bool heapified = false;
  size_t remaining = 0;         // candidates not taken (ruled-out ones still count, as before)
};

bool HeapAfter(const Candidate& a, const Candidate& b) { return Before(b, a); }

// Picks and removes the next victim; false when none may go.
// An idle candidate that would leave idle below min_idle is ruled out for the rest of the plan:
// idle only goes down once victims are being taken, so it could never qualify later.
bool TakeVictim(State& st, const Policy& policy, Candidate* out) {
  if (!st.heapified) {
    std::make_heap(st.heap.begin(), st.heap.end(), HeapAfter);
    st.heapified = true;
  }
  while (!st.heap.empty()) {
    std::pop_heap(st.heap.begin(), st.heap.end(), HeapAfter);
    Candidate c = st.heap.back();
    st.heap.pop_back();
    if (!c.not_connected && st.idle - c.offered < policy.min_idle) continue;  // ruled out
    st.remaining -= 1;
    st.size -= 1;
    st.idle -= c.offered;
    *out = c;
    return true;
  }
  return false;
}

bool SurplusRemovable(const State& st, const Policy& policy, int slots) {
  return st.size > policy.min_agents && st.idle - slots >= policy.min_idle && st.remaining > 0;
}

}  // namespace

Plan MakePlan(const Snapshot& snap, const Policy& policy, TimePoint now) {
  const int slots = EffectiveSlots(policy);
  const int max_idle = EffectiveMaxIdle(policy);
  Plan plan;
  State st;
  bool has_unknown = false;
  int alive = std::max(0, snap.held_creates);
  std::optional<TimePoint> first_grace_end;  // the earliest lost worker's grace end
  for (size_t i = 0; i < snap.workers.size(); ++i) {
    const WorkerView& w = snap.workers[i];
    if (CountsInSize(w.phase)) st.size += 1;
    if (CountsAgainstCap(w, policy, now)) {
      alive += 1;
      if (w.phase == Phase::kLost && (!first_grace_end || w.since + policy.lost_grace < *first_grace_end)) {
        first_grace_end = w.since + policy.lost_grace;
      }
    }
    int offered = OfferedSlots(w, slots);
    st.idle += offered;
    if (w.phase == Phase::kUnknown) has_unknown = true;
    if (NotConnected(w.phase) || w.phase == Phase::kIdle) {
      st.heap.push_back({w.since, w.id, static_cast<uint32_t>(i), NotConnected(w.phase),
                         w.phase == Phase::kRequested, offered});
    }
  }
  st.remaining = st.heap.size();
  st.idle -= snap.waiting_tasks;

  // Scale up.
  const bool held_by_unknown = has_unknown && now < snap.started_at + policy.initial_delay;
  const bool wants_more = (st.idle < policy.min_idle || st.size < policy.min_agents) && st.size < policy.max_agents;
  if (wants_more && held_by_unknown) plan.scale_up_held_by_unknown = true;
  bool held_by_cap = false;
  if (!held_by_unknown && !snap.creates_blocked) {
    while ((st.idle < policy.min_idle || st.size < policy.min_agents) && st.size < policy.max_agents) {
      if (alive >= policy.max_agents) {
        held_by_cap = true;  // the hard cap: a lost worker in its grace still holds its place
        break;
      }
      plan.creates += 1;
      st.size += 1;
      st.idle += slots;
      alive += 1;
    }
  }

  // Remove at once what exceeds max_idle.
  bool removed_now = false;
  Candidate v;
  while (st.size > policy.min_agents && st.idle > max_idle) {
    if (!TakeVictim(st, policy, &v)) break;
    plan.removals.push_back(v.id);
    removed_now = true;
  }

  // Idle decay: surplus between min and max idle goes one worker per idle_decay.
  std::optional<TimePoint> timer = removed_now ? std::nullopt : snap.decay_started;
  while (SurplusRemovable(st, policy, slots)) {
    if (!timer) timer = now;
    if (now < *timer + policy.idle_decay) break;
    if (!TakeVictim(st, policy, &v)) {
      timer.reset();
      break;
    }
    plan.removals.push_back(v.id);
    timer = now;  // the next surplus worker waits a full idle_decay again
    if (policy.idle_decay.count() > 0) break;
  }
  if (!SurplusRemovable(st, policy, slots)) timer.reset();
  plan.decay_started = timer;
  if (timer) plan.wake_at = *timer + policy.idle_decay;
  // Held by a lost worker's grace: look again when the first one's grace ends.
  if (held_by_cap && first_grace_end && (!plan.wake_at || *first_grace_end < *plan.wake_at)) {
    plan.wake_at = first_grace_end;
  }
  plan.size = st.size;
  plan.alive = alive;
  plan.idle = st.idle;
  return plan;
}

}  // namespace tidepool::autoscaler
