// A worker as its pool tracks it.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "autoscaler/planner.h"

namespace tidepool::autoscaler {

struct Worker {
  uint64_t id = 0;                // stable within this server process
  std::string name;               // "" while requested and the backend has not named it
  std::string pool;
  Phase phase = Phase::kRequested;
  int slots = 1;                  // reported by the agent; the pool default before it connects
  int used_slots = 0;
  std::set<std::string> tasks;    // task ids running here
  std::map<std::string, std::string> labels;
  std::string address;            // reported by the agent
  bool connected = false;
  bool agent_stopping = false;    // its agent said it is stopping (its machine going away): no new
                                  // work on this connection

  TimePoint phase_since{};        // steady clock: when the phase was entered
  TimePoint recorded_at{};        // steady clock: when the pool first recorded it (from a list: when it was taken)
  bool listed_unasked = false;    // recorded from a list as a machine nobody asked for (unknown)
  int64_t created_at_ms = 0;      // wall clock, for listings
  int64_t last_seen_ms = 0;

  // Lifecycle bookkeeping.
  bool create_launched = false;   // its backend create call was made (not just queued)
  TimePoint create_launched_at{}; // ... when
  bool create_in_flight = false;  // ... and has not returned (its agent may connect before it does)
  bool delete_when_named = false; // chosen as a victim while its create was in flight: delete it
                                  // once the create has returned (never before: the backend
                                  // cannot delete what, as far as it knows, it has not made yet)
  bool delete_in_flight = false;
  bool delete_done = false;       // the backend acknowledged the delete; awaiting the list's confirmation
  uint64_t delete_done_gen = 0;   // lists issued before the delete finished cannot confirm it
  TimePoint delete_done_at{};     // when the backend acknowledged it (a delete still listed
                                  // three sync intervals later is issued again)
  bool drain_requested = false;   // `worker drain`: delete when idle
  uint64_t batch = 0;             // MODE_BATCH: the batch (task group) it was created for; 0 = none
  int missing_lists = 0;          // consecutive backend lists without it
  bool restored = false;          // loaded from the store at start: created by an earlier server run
  std::string detail;             // the backend's own words for it at the last list ("pending: Resources")
  TimePoint held_pending_at{};    // the last list that showed it pending in its backend (a queued
                                  // Slurm job): register_timeout counts only from after that
  int64_t ends_at_ms = 0;         // its walltime, as its agent told (walltime.h); 0 = none
  int64_t drain_at_ms = 0;        // ... and from when it takes no new tasks

  int free_slots() const { return slots > used_slots ? slots - used_slots : 0; }
  bool schedulable() const {
    return connected && !agent_stopping && (phase == Phase::kIdle || phase == Phase::kBusy);
  }
};

// What the planner's WorkerView::connected means for the max_agents cap: its agent is connected,
// or its create is still in flight (a create cancelled meanwhile may still make a machine).
inline bool MayBeUp(const Worker& w) { return w.connected || w.create_in_flight; }

const char* PhaseName(Phase p);  // requested, starting, idle, ...

}  // namespace tidepool::autoscaler
