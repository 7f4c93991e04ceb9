#include "scheduler/group_matcher.h"

#include <algorithm>
#include <unordered_map>

// One pass in queue order. Per pool: a cursor over its untagged workers (each slot is handed out
// once, in preference order), the count of untagged free slots not yet given out, the slots
// reserved by the pool's first waiting gang, and the room left for demand. Batch-tagged workers
// live apart, grouped by (tag, pool). Every entry costs O(|eligible|) plus the slots it takes, so
// a pass is O(queue + workers).
//
// Readings of the contract where it leaves a choice:
//  - An entry whose `eligible` holds no known pool id is skipped: no placement and no demand.
//    Unknown ids in `eligible` are ignored; the first pool with a repeated id wins.
//  - A sticky `demand_pool` is kept only if it is still among the entry's eligible pools (a pool
//    that no longer accepts the task must not grow for it) and healthy.
//  - Room is counted down by every demand assigned in this pass, sticky ones included; it may go
//    below zero (sticky demand ignores room).
//  - `slots` below 1 counts as 1; workers with free_slots below 1 give nothing.

namespace tidepool::scheduler {
namespace {

constexpr int32_t kNoIndex = -1;

bool EntryBefore(const GroupEntry& a, const GroupEntry& b) {
  return a.priority != b.priority ? a.priority < b.priority : a.seq < b.seq;
}

// Untagged free slots of one pool, handed out in worker order.
struct PoolState {
  const GroupPool* pool = nullptr;
  size_t cursor = 0;     // the worker slots are taken from next
  int32_t left = 0;      // slots left on workers[cursor] (valid once positioned)
  bool positioned = false;
  int64_t free = 0;      // untagged slots not given out yet
  int64_t reserved = 0;  // of `free`, held for the pool's first waiting gang
  bool reserving = false;
  int64_t room = 0;

  int64_t Available() const { return free - reserved; }

  // Appends n worker handles; the caller checked Available() >= n.
  void Take(int32_t n, std::vector<uint32_t>& out) {
    const auto& ws = pool->workers;
    while (n > 0) {
      if (!positioned || left <= 0) {
        if (positioned) ++cursor;
        while (cursor < ws.size() && (ws[cursor].batch != 0 || ws[cursor].free_slots <= 0)) ++cursor;
        positioned = true;
        left = cursor < ws.size() ? ws[cursor].free_slots : 0;
        if (left <= 0) return;  // unreachable when the caller checked Available()
      }
      int32_t k = std::min(left, n);
      out.insert(out.end(), static_cast<size_t>(k), ws[cursor].handle);
      left -= k;
      n -= k;
      free -= k;
    }
  }
};

// The workers of one pool tagged for one batch entry.
struct TagGroup {
  int32_t pool = 0;                // index into the pool states
  std::vector<uint32_t> workers;   // indices into the pool's workers, in order
  std::vector<int32_t> left;       // slots left per worker above
  int64_t free = 0;

  void Take(const GroupPool& p, int32_t n, std::vector<uint32_t>& out) {
    for (size_t i = 0; i < workers.size() && n > 0; ++i) {
      int32_t k = std::min(left[i], n);
      if (k <= 0) continue;
      out.insert(out.end(), static_cast<size_t>(k), p.workers[workers[i]].handle);
      left[i] -= k;
      n -= k;
      free -= k;
    }
  }
};

}  // namespace

GroupMatch MatchGroup(std::span<const GroupEntry> queue, std::span<const GroupPool> pools) {
  GroupMatch out;
  if (queue.empty() || pools.empty()) return out;

  // Pool id -> index into `states`: a dense table when ids are small, else a hash map.
  std::vector<PoolState> states(pools.size());
  uint32_t max_id = 0;
  for (const GroupPool& p : pools) max_id = std::max(max_id, p.id);
  const bool dense = max_id < 4 * pools.size() + 1024;
  std::vector<int32_t> dense_index;
  std::unordered_map<uint32_t, int32_t> sparse_index;
  if (dense) dense_index.assign(static_cast<size_t>(max_id) + 1, kNoIndex);
  auto index_of = [&](uint32_t id) -> int32_t {
    if (dense) return id <= max_id ? dense_index[id] : kNoIndex;
    auto it = sparse_index.find(id);
    return it == sparse_index.end() ? kNoIndex : it->second;
  };

  // Tagged workers by tag, then by pool.
  std::unordered_map<uint64_t, std::vector<TagGroup>> tagged;
  int64_t total_free = 0;
  for (size_t i = 0; i < pools.size(); ++i) {
    const GroupPool& p = pools[i];
    if (index_of(p.id) != kNoIndex) continue;  // a repeated id: the first pool wins
    const auto idx = static_cast<int32_t>(i);
    if (dense) {
      dense_index[p.id] = idx;
    } else {
      sparse_index.emplace(p.id, idx);
    }
    PoolState& s = states[i];
    s.pool = &p;
    s.room = p.room;
    for (size_t w = 0; w < p.workers.size(); ++w) {
      const GroupWorker& gw = p.workers[w];
      if (gw.free_slots <= 0) continue;
      total_free += gw.free_slots;
      if (gw.batch == 0) {
        s.free += gw.free_slots;
        continue;
      }
      auto& groups = tagged[gw.batch];
      if (groups.empty() || groups.back().pool != idx) groups.emplace_back().pool = idx;
      TagGroup& g = groups.back();
      g.workers.push_back(static_cast<uint32_t>(w));
      g.left.push_back(gw.free_slots);
      g.free += gw.free_slots;
    }
  }

  auto process = [&](const GroupEntry& e) {
    const int32_t slots = std::max<int32_t>(e.slots, 1);

    // Rule 3 (and 6): the first eligible pool with enough free slots the entry may use.
    if (e.batch == 0) {
      for (uint32_t id : e.eligible) {
        int32_t pi = index_of(id);
        if (pi == kNoIndex || states[pi].Available() < slots) continue;
        GroupPlacement& pl = out.placements.emplace_back();
        pl.entry = e.handle;
        pl.pool = id;
        pl.workers.reserve(static_cast<size_t>(slots));
        states[pi].Take(slots, pl.workers);
        return;
      }
    } else if (auto it = tagged.find(e.batch); it != tagged.end()) {
      for (uint32_t id : e.eligible) {
        int32_t pi = index_of(id);
        if (pi == kNoIndex) continue;
        for (TagGroup& g : it->second) {
          if (g.pool != pi || g.free < slots) continue;
          GroupPlacement& pl = out.placements.emplace_back();
          pl.entry = e.handle;
          pl.pool = id;
          pl.workers.reserve(static_cast<size_t>(slots));
          g.Take(*states[pi].pool, slots, pl.workers);
          return;
        }
      }
    }

    // Rule 4: one demand pool. Candidates in order: sticky, healthy with room, healthy, any.
    int32_t sticky = kNoIndex, with_room = kNoIndex, healthy = kNoIndex, any = kNoIndex;
    for (uint32_t id : e.eligible) {
      int32_t pi = index_of(id);
      if (pi == kNoIndex) continue;
      const PoolState& s = states[pi];
      if (any == kNoIndex) any = pi;
      if (!s.pool->healthy) continue;
      if (id == e.demand_pool) sticky = pi;
      if (healthy == kNoIndex) healthy = pi;
      if (with_room == kNoIndex && s.room >= slots) with_room = pi;
    }
    if (any == kNoIndex) return;  // no known eligible pool: skipped, no demand
    int32_t chosen = sticky != kNoIndex ? sticky : with_room != kNoIndex ? with_room
                     : healthy != kNoIndex ? healthy : any;
    PoolState& s = states[chosen];
    s.room -= slots;
    out.demand.push_back({e.handle, s.pool->id, slots});

    // Rule 5: the pool's first waiting gang holds what is free there, up to its size.
    if (slots > 1 && e.batch == 0 && !s.reserving) {
      s.reserving = true;
      s.reserved = std::min<int64_t>(slots, s.free);
    }
  };

  out.placements.reserve(static_cast<size_t>(std::min<int64_t>(total_free, std::ssize(queue))));
  if (std::is_sorted(queue.begin(), queue.end(), EntryBefore)) {
    for (const GroupEntry& e : queue) process(e);
  } else {
    std::vector<const GroupEntry*> order;
    order.reserve(queue.size());
    for (const GroupEntry& e : queue) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const GroupEntry* a, const GroupEntry* b) {
      if (a->priority != b->priority) return a->priority < b->priority;
      if (a->seq != b->seq) return a->seq < b->seq;
      return a < b;  // equal keys keep their input order
    });
    for (const GroupEntry* e : order) process(*e);
  }
  return out;
}

}  // namespace tidepool::scheduler
