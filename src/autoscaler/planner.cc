#include "autoscaler/planner.h"

#include <algorithm>

namespace tidepool::autoscaler {

int EffectiveSlots(const Policy& policy) { return policy.slots_per_agent > 0 ? policy.slots_per_agent : 1; }

int EffectiveMaxIdle(const Policy& policy) {
  return std::max(policy.max_idle, policy.min_idle + EffectiveSlots(policy) - 1);
}

namespace {

bool NotConnected(Phase p) { return p == Phase::kRequested || p == Phase::kStarting; }

bool CountsInSize(Phase p) {
  return p == Phase::kRequested || p == Phase::kStarting || p == Phase::kIdle ||
         p == Phase::kBusy || p == Phase::kUnknown;
}

// Working state while a plan is built; victims leave `candidates` as they are chosen.
struct State {
  int size = 0;
  int idle = 0;
  // Victim candidates in preference order: not connected (newest first), then idle (longest first).
  std::vector<const WorkerView*> candidates;
};

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

// Picks and removes the next victim; nullptr when none may go.
const WorkerView* TakeVictim(State& st, const Policy& policy, int slots) {
  for (auto it = st.candidates.begin(); it != st.candidates.end(); ++it) {
    const WorkerView* w = *it;
    int offered = OfferedSlots(*w, slots);
    // An idle victim must leave the pool at or above min_idle (a not-connected one always goes first).
    if (w->phase == Phase::kIdle && st.idle - offered < policy.min_idle) continue;
    st.candidates.erase(it);
    st.size -= 1;
    st.idle -= offered;
    return w;
  }
  return nullptr;
}

bool SurplusRemovable(const State& st, const Policy& policy, int slots) {
  return st.size > policy.min_agents && st.idle - slots >= policy.min_idle && !st.candidates.empty();
}

}  // namespace

Plan MakePlan(const Snapshot& snap, const Policy& policy, TimePoint now) {
  const int slots = EffectiveSlots(policy);
  const int max_idle = EffectiveMaxIdle(policy);
  Plan plan;
  State st;
  bool has_unknown = false;
  std::vector<const WorkerView*> not_connected, idle;
  for (const WorkerView& w : snap.workers) {
    if (CountsInSize(w.phase)) st.size += 1;
    st.idle += OfferedSlots(w, slots);
    if (w.phase == Phase::kUnknown) has_unknown = true;
    if (NotConnected(w.phase)) not_connected.push_back(&w);
    if (w.phase == Phase::kIdle) idle.push_back(&w);
  }
  st.idle -= snap.waiting_tasks;
  // Newest not-connected first (least invested), requested before starting on ties.
  std::stable_sort(not_connected.begin(), not_connected.end(), [](const WorkerView* a, const WorkerView* b) {
    if (a->since != b->since) return a->since > b->since;
    return a->phase == Phase::kRequested && b->phase != Phase::kRequested;
  });
  // Idle longest first; ties by id for determinism.
  std::stable_sort(idle.begin(), idle.end(), [](const WorkerView* a, const WorkerView* b) {
    if (a->since != b->since) return a->since < b->since;
    return a->id < b->id;
  });
  st.candidates = std::move(not_connected);
  st.candidates.insert(st.candidates.end(), idle.begin(), idle.end());

  // Scale up.
  const bool held_by_unknown = has_unknown && now < snap.started_at + policy.initial_delay;
  const bool wants_more = (st.idle < policy.min_idle || st.size < policy.min_agents) && st.size < policy.max_agents;
  if (wants_more && held_by_unknown) plan.scale_up_held_by_unknown = true;
  if (!held_by_unknown && !snap.creates_blocked) {
    while ((st.idle < policy.min_idle || st.size < policy.min_agents) && st.size < policy.max_agents) {
      plan.creates += 1;
      st.size += 1;
      st.idle += slots;
    }
  }

  // Remove at once what exceeds max_idle.
  bool removed_now = false;
  while (st.size > policy.min_agents && st.idle > max_idle) {
    const WorkerView* v = TakeVictim(st, policy, slots);
    if (!v) break;
    plan.removals.push_back(v->id);
    removed_now = true;
  }

  // Idle decay: surplus between min and max idle goes one worker per idle_decay.
  std::optional<TimePoint> timer = removed_now ? std::nullopt : snap.decay_started;
  while (SurplusRemovable(st, policy, slots)) {
    if (!timer) timer = now;
    if (now < *timer + policy.idle_decay) break;
    const WorkerView* v = TakeVictim(st, policy, slots);
    if (!v) {
      timer.reset();
      break;
    }
    plan.removals.push_back(v->id);
    timer = now;  // the next surplus worker waits a full idle_decay again
    if (policy.idle_decay.count() > 0) break;
  }
  if (!SurplusRemovable(st, policy, slots)) timer.reset();
  plan.decay_started = timer;
  if (timer) plan.wake_at = *timer + policy.idle_decay;
  plan.size = st.size;
  plan.idle = st.idle;
  return plan;
}

}  // namespace tidepool::autoscaler
