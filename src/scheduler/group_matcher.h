// The scheduler's match across pools: (queue, free slots, pool health) -> placements and demand.
//
// A pure function; the core feeds it one scheduling group (pools linked by shared selectors)
// at a time and executes what it returns.
//
// Rules (tasks.md, pools.md "Selectors and backups"):
//  1. Entries are taken in queue order: lower priority number first, FIFO (seq) within one.
//  2. An entry needs `slots` slots in ONE pool, all at once (1 for a plain task, N for a gang).
//     It may use any pool in `eligible` (ordered: a pool target is one pool; a selector's pools
//     come in selector_priority order, already filtered by the task's kind).
//  3. Idle slots anywhere first: the entry goes to the first eligible pool with enough free
//     slots, taking workers in that pool's given preference order. No slot is given twice.
//  4. Not placed: the entry's demand goes to one pool, the one that should grow for it:
//       - its current demand pool, if that pool is healthy (sticky: no churn between pools);
//       - else the first eligible pool that is healthy and has room for it;
//       - else the first healthy eligible pool; else the first eligible pool (it waits there).
//     Room is counted down as demand is assigned in this pass, so backups take the overflow.
//  5. Gangs and deadlock: in each pool, only the first unplaced gang (in queue order) whose demand
//     is there reserves that pool's free slots (up to its size); later entries cannot take
//     reserved slots; other gangs wait without reserving. Slots a gang does not need stay free
//     for smaller tasks, and two gangs can never hold part of what each other needs.
//  6. Batch entries (`batch` set) only use workers whose `batch` tag equals theirs, and every
//     such worker only serves that entry; they never take or reserve untagged slots. Tags are
//     unique per entry.
//  An entry with no eligible pool known to this call is skipped (no placement, no demand); a
//  sticky demand pool must still be eligible and healthy to keep the entry.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace tidepool::scheduler {

constexpr uint32_t kNoPool = std::numeric_limits<uint32_t>::max();

struct GroupWorker {
  uint32_t handle = 0;
  int32_t free_slots = 0;
  uint64_t batch = 0;  // 0 = an ordinary worker; else the batch entry it was made for
};

struct GroupPool {
  uint32_t id = 0;                   // the caller's pool index
  std::vector<GroupWorker> workers;  // with free slots, in preference order
  bool healthy = true;               // can create workers now (not in cooldown, has a backend, max > 0)
  // Slots it can still take demand for: what it could ever hold, less busy slots and less the
  // demand of queued entries that are not in this call (this call's entries count it down).
  int64_t room = 0;
};

struct GroupEntry {
  uint32_t handle = 0;
  int32_t priority = 0;
  uint64_t seq = 0;
  int32_t slots = 1;                  // all-or-nothing, in one pool
  std::vector<uint32_t> eligible;     // pool ids, in preference order
  uint32_t demand_pool = kNoPool;     // where its demand is now (sticky), or kNoPool
  uint64_t batch = 0;                 // non-zero: only workers tagged with this value
};

struct GroupPlacement {
  uint32_t entry = 0;                 // GroupEntry::handle
  uint32_t pool = 0;
  std::vector<uint32_t> workers;      // one worker handle per slot (a worker may repeat)
};

struct GroupDemand {
  uint32_t entry = 0;
  uint32_t pool = 0;
  int32_t slots = 0;
};

struct GroupMatch {
  std::vector<GroupPlacement> placements;  // in queue order
  std::vector<GroupDemand> demand;         // for every entry not placed, in queue order
};

// `queue` need not be sorted. `pools` are indexed by id through GroupPool::id.
GroupMatch MatchGroup(std::span<const GroupEntry> queue, std::span<const GroupPool> pools);

}  // namespace tidepool::scheduler
