// Property tests for MatchGroup over random inputs (fixed seeds, so failures reproduce).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "scheduler/group_matcher.h"

namespace tidepool::scheduler {
namespace {

struct Scenario {
  std::vector<GroupPool> pools;
  std::vector<GroupEntry> queue;
};

Scenario RandomScenario(std::mt19937_64& rng, int round) {
  Scenario s;
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  const int npools = 1 + static_cast<int>(pick(4));
  const int nentries = static_cast<int>(pick(41));
  const bool sparse_ids = round % 10 == 0;
  uint32_t next_worker = 100;
  std::vector<uint32_t> ids;
  for (int i = 0; i < npools; ++i) {
    GroupPool p;
    p.id = static_cast<uint32_t>(i * 3 + pick(3)) + (sparse_ids ? 3000000000u : 0u);
    p.healthy = pick(4) != 0;
    p.room = static_cast<int64_t>(pick(9));
    const int nworkers = static_cast<int>(pick(7));
    for (int w = 0; w < nworkers; ++w) {
      GroupWorker gw;
      gw.handle = next_worker++;
      gw.free_slots = static_cast<int32_t>(pick(4));
      if (pick(5) == 0) gw.batch = pick(6) == 0 ? 999999 : 1000 + pick(static_cast<uint64_t>(nentries) + 1);
      p.workers.push_back(gw);
    }
    ids.push_back(p.id);
    s.pools.push_back(std::move(p));
  }
  for (int i = 0; i < nentries; ++i) {
    GroupEntry e;
    e.handle = static_cast<uint32_t>(i);
    e.priority = static_cast<int32_t>(pick(3));
    e.seq = pick(1000);
    e.slots = pick(100) < 65 ? 1 : 2 + static_cast<int32_t>(pick(4));
    if (pick(50) == 0) e.slots = 0;
    std::vector<uint32_t> order = ids;
    std::shuffle(order.begin(), order.end(), rng);
    const size_t k = pick(20) == 0 ? 0 : 1 + pick(order.size());
    e.eligible.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    if (pick(20) == 0) e.eligible.insert(e.eligible.begin() + static_cast<std::ptrdiff_t>(pick(k + 1)), 77777u);
    if (pick(2) == 0) e.demand_pool = ids[pick(ids.size())];
    if (pick(7) == 0) e.batch = 1000 + e.handle;
    s.queue.push_back(std::move(e));
  }
  return s;
}

bool Before(const GroupEntry& a, const GroupEntry& b) {
  return a.priority != b.priority ? a.priority < b.priority : a.seq < b.seq;
}

// Checks every property of one match; returns the first violation, or "" if none.
std::string Check(const Scenario& s, const GroupMatch& m) {
  struct WorkerInfo {
    uint32_t pool;
    int32_t free;
    uint64_t batch;
  };
  std::map<uint32_t, WorkerInfo> workers;
  std::map<uint32_t, const GroupPool*> pools;
  for (const auto& p : s.pools) {
    pools.emplace(p.id, &p);
    for (const auto& w : p.workers) workers[w.handle] = {p.id, w.free_slots, w.batch};
  }
  std::vector<GroupEntry> sorted = s.queue;
  std::stable_sort(sorted.begin(), sorted.end(), Before);
  std::map<uint32_t, size_t> rank;
  for (size_t i = 0; i < sorted.size(); ++i) rank[sorted[i].handle] = i;

  std::map<uint32_t, const GroupPlacement*> placed;
  std::map<uint32_t, const GroupDemand*> demand;
  size_t last = 0;
  for (const auto& p : m.placements) {
    if (!placed.emplace(p.entry, &p).second) return "entry placed twice";
    if (rank.count(p.entry) == 0) return "placement of an unknown entry";
    if (placed.size() > 1 && rank[p.entry] < last) return "placements not in queue order";
    last = rank[p.entry];
  }
  last = 0;
  for (const auto& d : m.demand) {
    if (!demand.emplace(d.entry, &d).second) return "two demand entries for one entry";
    if (rank.count(d.entry) == 0) return "demand of an unknown entry";
    if (demand.size() > 1 && rank[d.entry] < last) return "demand not in queue order";
    last = rank[d.entry];
  }

  // No slot given twice.
  std::map<uint32_t, int32_t> used;
  for (const auto& p : m.placements)
    for (uint32_t w : p.workers) {
      if (workers.count(w) == 0) return "unknown worker";
      if (++used[w] > workers[w].free) return "worker " + std::to_string(w) + " over-booked";
    }

  // A count-only model of rules 3-5, against which each entry's outcome is checked.
  std::map<uint32_t, int64_t> free, reserved, room;
  std::set<uint32_t> reserving;
  std::map<std::pair<uint32_t, uint64_t>, int64_t> tagged;
  for (const auto& p : s.pools) {
    room[p.id] = p.room;
    for (const auto& w : p.workers) {
      if (w.free_slots <= 0) continue;
      if (w.batch == 0) {
        free[p.id] += w.free_slots;
      } else {
        tagged[{p.id, w.batch}] += w.free_slots;
      }
    }
  }
  std::set<uint32_t> exhausted_for_plain;  // pools where a plain task found no slot
  for (const GroupEntry& e : sorted) {
    const std::string who = "entry " + std::to_string(e.handle) + ": ";
    const int32_t slots = std::max(e.slots, 1);
    std::vector<uint32_t> known;
    for (uint32_t id : e.eligible)
      if (pools.count(id) != 0) known.push_back(id);
    const bool is_placed = placed.count(e.handle) != 0, has_demand = demand.count(e.handle) != 0;
    if (known.empty()) {
      if (is_placed || has_demand) return who + "no eligible pool, yet placed or with demand";
      continue;
    }
    if (is_placed == has_demand) return who + "must be either placed or have exactly one demand";
    auto avail = [&](uint32_t id) {
      return e.batch == 0 ? free[id] - reserved[id] : tagged[{id, e.batch}];
    };
    if (is_placed) {
      const GroupPlacement& p = *placed[e.handle];
      if (std::find(known.begin(), known.end(), p.pool) == known.end()) return who + "placed on an ineligible pool";
      if (std::ssize(p.workers) != slots) return who + "not given exactly its slots";
      for (uint32_t w : p.workers) {
        if (workers[w].pool != p.pool) return who + "placed across pools";
        if (workers[w].batch != e.batch) return who + "worker's batch tag does not match the entry";
      }
      for (uint32_t id : known) {
        if (id == p.pool) break;
        if (avail(id) >= slots) return who + "skipped an earlier eligible pool with free slots";
      }
      if (avail(p.pool) < slots) return who + "took slots that were not free or were reserved";
      if (e.batch == 0) {
        if (exhausted_for_plain.count(p.pool) != 0) {
          return who + "got a slot an earlier plain task could not have";
        }
        free[p.pool] -= slots;
      } else {
        tagged[{p.pool, e.batch}] -= slots;
      }
      continue;
    }
    const GroupDemand& d = *demand[e.handle];
    for (uint32_t id : known)
      if (avail(id) >= slots) return who + "not placed although pool " + std::to_string(id) + " had room";
    if (e.batch == 0 && slots == 1) exhausted_for_plain.insert(known.begin(), known.end());
    if (d.slots != slots) return who + "demand slots differ from the entry's";
    uint32_t want = kNoPool;
    for (uint32_t id : known)
      if (id == e.demand_pool && pools[id]->healthy) want = id;
    for (uint32_t id : known)
      if (want == kNoPool && pools[id]->healthy && room[id] >= slots) want = id;
    for (uint32_t id : known)
      if (want == kNoPool && pools[id]->healthy) want = id;
    if (want == kNoPool) want = known[0];
    if (d.pool != want) return who + "demand on pool " + std::to_string(d.pool) + ", rule 4 says " + std::to_string(want);
    room[want] -= slots;
    if (slots > 1 && e.batch == 0 && reserving.insert(want).second) reserved[want] = std::min<int64_t>(slots, free[want]);
  }
  for (const auto& [entry, p] : placed)
    if (rank.count(entry) == 0) return "placed entry not in the queue";
  return "";
}

TEST(GroupMatchProperty, RandomInputsSatisfyTheRules) {
  std::mt19937_64 rng(20240611);
  int placements = 0, demands = 0, gangs_placed = 0, batches_placed = 0;
  for (int round = 0; round < 5000; ++round) {
    Scenario s = RandomScenario(rng, round);
    GroupMatch m = MatchGroup(s.queue, s.pools);
    std::string err = Check(s, m);
    ASSERT_EQ(err, "") << "round " << round;
    placements += static_cast<int>(m.placements.size());
    demands += static_cast<int>(m.demand.size());
    for (const auto& p : m.placements) {
      gangs_placed += p.workers.size() > 1;
      batches_placed += s.queue[p.entry].batch != 0;
    }
  }
  // The generator exercises every path.
  EXPECT_GT(placements, 10000);
  EXPECT_GT(demands, 10000);
  EXPECT_GT(gangs_placed, 500);
  EXPECT_GT(batches_placed, 100);
}

TEST(GroupMatchProperty, SortedAndShuffledQueuesGiveTheSameMatch) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    Scenario s = RandomScenario(rng, round);
    for (size_t i = 0; i < s.queue.size(); ++i) s.queue[i].seq = i * 2 + static_cast<uint64_t>(rng() % 2);
    std::vector<GroupEntry> sorted = s.queue;
    std::stable_sort(sorted.begin(), sorted.end(), Before);
    std::shuffle(s.queue.begin(), s.queue.end(), rng);
    GroupMatch a = MatchGroup(s.queue, s.pools), b = MatchGroup(sorted, s.pools);
    ASSERT_EQ(a.placements.size(), b.placements.size());
    for (size_t i = 0; i < a.placements.size(); ++i) {
      ASSERT_EQ(a.placements[i].entry, b.placements[i].entry);
      ASSERT_EQ(a.placements[i].pool, b.placements[i].pool);
      ASSERT_EQ(a.placements[i].workers, b.placements[i].workers);
    }
    ASSERT_EQ(a.demand.size(), b.demand.size());
    for (size_t i = 0; i < a.demand.size(); ++i) {
      ASSERT_EQ(a.demand[i].entry, b.demand[i].entry);
      ASSERT_EQ(a.demand[i].pool, b.demand[i].pool);
    }
  }
}

// Runs a queue of gangs and plain tasks to completion on pools that cannot grow. Each round:
// match, start what was placed, maybe queue a few more plain tasks, then let some running tasks
// finish (all of them when max_duration is 1). Every entry fits some pool, so all must run.
void RunToCompletion(uint64_t seed, int npools, int max_duration) {
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 300; ++trial) {
    struct Worker {
      uint32_t handle;
      int32_t slots, free;
    };
    std::vector<std::vector<Worker>> pools(static_cast<size_t>(npools));
    int32_t smallest_total = 1 << 30;
    uint32_t next_worker = 0;
    for (auto& p : pools) {
      int32_t total = 0;
      const int n = 1 + static_cast<int>(rng() % 5);
      for (int i = 0; i < n; ++i) {
        int32_t k = 1 + static_cast<int32_t>(rng() % 4);
        p.push_back({next_worker++, k, k});
        total += k;
      }
      smallest_total = std::min(smallest_total, total);
    }
    std::vector<uint32_t> all_ids;
    for (int i = 0; i < npools; ++i) all_ids.push_back(static_cast<uint32_t>(i));

    std::map<uint32_t, GroupEntry> queue;  // by handle
    uint64_t seq = 0;
    auto add = [&](int32_t slots) {
      GroupEntry e;
      e.handle = static_cast<uint32_t>(seq);
      e.priority = static_cast<int32_t>(rng() % 2);
      e.seq = seq++;
      e.slots = slots;
      e.eligible = all_ids;
      std::shuffle(e.eligible.begin(), e.eligible.end(), rng);
      queue.emplace(e.handle, std::move(e));
    };
    const int initial = 10 + static_cast<int>(rng() % 30);
    for (int i = 0; i < initial; ++i)
      add(rng() % 2 == 0 ? 1 : 1 + static_cast<int32_t>(rng() % static_cast<uint64_t>(smallest_total)));
    struct Running {
      uint32_t pool;
      std::vector<uint32_t> workers;
      int left;
    };
    std::vector<Running> running;
    const int arrival_rounds = 20;
    int round = 0;
    for (; !queue.empty(); ++round) {
      ASSERT_LT(round, arrival_rounds + 10 * max_duration * (initial + 3 * arrival_rounds) + 10)
          << "trial " << trial << ": " << queue.size() << " entries never ran";
      std::vector<GroupPool> gp;
      for (int i = 0; i < npools; ++i) {
        GroupPool p{.id = static_cast<uint32_t>(i), .healthy = true, .room = 0};
        for (const Worker& w : pools[static_cast<size_t>(i)]) p.workers.push_back({w.handle, w.free});
        std::shuffle(p.workers.begin(), p.workers.end(), rng);
        gp.push_back(std::move(p));
      }
      std::vector<GroupEntry> q;
      for (const auto& [h, e] : queue) q.push_back(e);
      GroupMatch m = MatchGroup(q, gp);
      ASSERT_EQ(Check({gp, q}, m), "");
      if (running.empty()) {
        ASSERT_FALSE(m.placements.empty()) << "idle pools and nothing placed";
      }
      for (const auto& p : m.placements) {
        for (uint32_t w : p.workers)
          for (Worker& x : pools[p.pool])
            if (x.handle == w) --x.free;
        running.push_back({p.pool, p.workers, 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_duration))});
        queue.erase(p.entry);
      }
      for (const auto& d : m.demand) queue[d.entry].demand_pool = d.pool;
      if (round < arrival_rounds)
        for (int i = static_cast<int>(rng() % 4); i > 0; --i) add(1);
      for (auto& r : running)
        if (--r.left == 0)
          for (uint32_t w : r.workers)
            for (Worker& x : pools[r.pool])
              if (x.handle == w) ++x.free;
      std::erase_if(running, [](const Running& r) { return r.left == 0; });
    }
  }
}

TEST(GroupMatchProperty, GangsNeverDeadlockOnAFixedPool) { RunToCompletion(1, 1, 1); }

TEST(GroupMatchProperty, GangsNeverDeadlockWithTasksOfRandomLength) { RunToCompletion(2, 1, 4); }

TEST(GroupMatchProperty, GangsNeverDeadlockAcrossTwoPools) { RunToCompletion(3, 2, 3); }

}  // namespace
}  // namespace tidepool::scheduler
