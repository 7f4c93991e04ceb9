// The standard pool policy as a pure function: (pool snapshot, policy, now) -> plan.
//
// These are Velda's autoscaler rules, kept exactly (pools.md, "The standard policy"):
//   size  = requested + starting + idle + busy + unknown
//   idle  = free slots of requested, starting, idle and busy workers - tasks waiting
//   max_idle is raised to at least min_idle + slots_per_agent - 1
//   scale up, one create at a time, while (idle < min_idle or size < min_agents) and size < max_agents
//   remove at once while size > min_agents and idle > max_idle
//   surplus (idle - slots_per_agent >= min_idle, size > min_agents, some removable worker) is
//   removed one worker per idle_decay; the timer stops as soon as the surplus is gone.
//   victims: a worker not yet connected first (newest first), then the idle one idle longest,
//   and only if removing it keeps idle >= min_idle. A worker running a task is never a victim.
//   nothing is created while unknown workers exist, unless initial_delay has passed since start.
//
// And one rule of Tidepool's own, a hard cap over all of them: max_agents bounds the workers that
// may still be alive, not only `size`. A create is planned only while
//   alive = requested + starting + idle + busy + unknown + draining + deleting-but-connected
//           + lost within lost_grace of losing its connection
//           + creates whose answer was refused (Snapshot::held_creates, autoscaler/answers.h)
// is below max_agents. A lost worker may be a live machine the server merely could not hear (a
// cut link, a frozen server): until its grace has passed it still holds its place, and the plan
// asks to be woken when that grace ends.
//
// The planner never performs I/O and keeps no state: the decay timer's start is part of the
// snapshot it reads and of the plan it returns. The pool controller executes plans.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace tidepool::autoscaler {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Millis = std::chrono::milliseconds;

enum class Phase {
  kRequested,  // create issued, no name yet
  kStarting,   // named, agent not connected
  kIdle,
  kBusy,
  kDraining,
  kDeleting,
  kLost,
  kUnknown,
};

struct WorkerView {
  uint64_t id = 0;
  Phase phase = Phase::kIdle;
  int free_slots = 0;          // idle/busy: unused slots; ignored for other phases
  TimePoint since{};           // when it entered its phase (idle: idle since; not connected: created;
                               // lost: when its connection ended)
  bool connected = false;      // its agent is connected, or its create is still in flight (a deleting
                               // worker may still be up: it counts against max_agents)
};

struct Policy {
  int min_agents = 0;
  int max_agents = 0;
  int min_idle = 0;
  int max_idle = 0;            // as configured
  int slots_per_agent = 1;
  Millis idle_decay{0};
  Millis initial_delay{0};
  // How long a lost worker still counts against max_agents (the server's --worker-lost-grace:
  // its tasks wait that long for it to come back).
  Millis lost_grace{0};
};

struct Snapshot {
  std::vector<WorkerView> workers;
  int waiting_tasks = 0;                  // demand not placed on a worker yet
  std::optional<TimePoint> decay_started; // the idle-decay timer, as the last plan left it
  TimePoint started_at{};                 // when the pool started (for initial_delay)
  bool creates_blocked = false;           // e.g. a cooldown after failed creates
  // Creates whose answer was refused (an invalid name, or one the pool already has): each may
  // have made a machine the pool cannot name, so each still counts against max_agents.
  int held_creates = 0;
};

struct Plan {
  int creates = 0;                        // workers to request now
  std::vector<uint64_t> removals;         // victims, in the order chosen
  std::optional<TimePoint> decay_started; // new timer state
  std::optional<TimePoint> wake_at;       // plan again at this time (decay deadline)
  // The figures the rules were applied to, after the plan (for status and tests).
  int size = 0;
  int idle = 0;
  bool scale_up_held_by_unknown = false;  // demand exists but unknown workers block creates
  int alive = 0;                          // workers that may be alive, counting the planned creates
                                          // (<= max_agents whenever the plan creates)
};

// Whether this worker may still be alive as the max_agents cap counts it (see above).
bool CountsAgainstCap(const WorkerView& w, const Policy& policy, TimePoint now);

// max_idle as the rules use it.
int EffectiveMaxIdle(const Policy& policy);
// Slots per agent as the rules use it (0 or less means 1).
int EffectiveSlots(const Policy& policy);

Plan MakePlan(const Snapshot& snapshot, const Policy& policy, TimePoint now);

}  // namespace tidepool::autoscaler
