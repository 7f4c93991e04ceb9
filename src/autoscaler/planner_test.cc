#include "autoscaler/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace tidepool::autoscaler {
namespace {

using std::chrono::seconds;

const TimePoint kT0 = TimePoint() + std::chrono::hours(1000);

struct PoolBuilder {
  Snapshot snap;
  uint64_t next_id = 1;
  PoolBuilder() { snap.started_at = kT0 - std::chrono::hours(1); }
  uint64_t Add(Phase phase, int free_slots = 0, TimePoint since = kT0) {
    snap.workers.push_back({next_id, phase, free_slots, since});
    return next_id++;
  }
  PoolBuilder& Waiting(int n) {
    snap.waiting_tasks = n;
    return *this;
  }
};

Policy MakePolicy(int min_agents, int max_agents, int min_idle, int max_idle, int slots = 1,
                  Millis decay = Millis(0)) {
  Policy p;
  p.min_agents = min_agents;
  p.max_agents = max_agents;
  p.min_idle = min_idle;
  p.max_idle = max_idle;
  p.slots_per_agent = slots;
  p.idle_decay = decay;
  return p;
}

TEST(EffectiveMaxIdle, RaisedToMinIdlePlusSlotsMinusOne) {
  EXPECT_EQ(EffectiveMaxIdle(MakePolicy(0, 10, 0, 0)), 0);
  EXPECT_EQ(EffectiveMaxIdle(MakePolicy(0, 10, 2, 0)), 2);
  EXPECT_EQ(EffectiveMaxIdle(MakePolicy(0, 10, 2, 0, 4)), 5);
  EXPECT_EQ(EffectiveMaxIdle(MakePolicy(0, 10, 2, 9, 4)), 9);
  EXPECT_EQ(EffectiveMaxIdle(MakePolicy(0, 10, 0, 0, 0)), 0);  // slots 0 means 1
}

TEST(Planner, EmptyPoolWithNoDemandDoesNothing) {
  PoolBuilder b;
  Plan p = MakePlan(b.snap, MakePolicy(0, 5, 0, 0), kT0);
  EXPECT_EQ(p.creates, 0);
  EXPECT_TRUE(p.removals.empty());
  EXPECT_FALSE(p.decay_started);
}

TEST(Planner, DemandOnEmptyPoolCreatesOneWorkerPerWaitingTask) {
  PoolBuilder b;
  b.Waiting(3);
  Plan p = MakePlan(b.snap, MakePolicy(0, 5, 0, 0), kT0);
  EXPECT_EQ(p.creates, 3);
  EXPECT_EQ(p.size, 3);
  EXPECT_EQ(p.idle, 0);
}

TEST(Planner, CreatesRespectMaxAgents) {
  PoolBuilder b;
  b.Add(Phase::kBusy, 0);
  b.Waiting(10);
  Plan p = MakePlan(b.snap, MakePolicy(0, 4, 0, 0), kT0);
  EXPECT_EQ(p.creates, 3);
  EXPECT_EQ(p.size, 4);
}

TEST(Planner, MaxAgentsZeroNeverCreates) {
  PoolBuilder b;
  b.Waiting(5);
  Plan p = MakePlan(b.snap, MakePolicy(0, 0, 2, 0), kT0);
  EXPECT_EQ(p.creates, 0);
  EXPECT_TRUE(p.removals.empty());
}

TEST(Planner, SlotsPerAgentReduceCreates) {
  PoolBuilder b;
  b.Waiting(7);
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 0, 4), kT0);
  EXPECT_EQ(p.creates, 2);  // 2 workers x 4 slots cover 7 tasks
  EXPECT_EQ(p.idle, 1);
}

TEST(Planner, MinAgentsIsKeptWithoutDemand) {
  PoolBuilder b;
  Plan p = MakePlan(b.snap, MakePolicy(2, 5, 0, 0), kT0);
  EXPECT_EQ(p.creates, 2);
}

TEST(Planner, MinIdleHeadroomCountsSlotsNotWorkers) {
  PoolBuilder b;
  b.Add(Phase::kBusy, 1);  // one free slot on a busy worker counts as idle
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 3, 0, 2), kT0);
  EXPECT_EQ(p.creates, 1);  // 1 + 2 = 3
}

TEST(Planner, StartingAndRequestedWorkersCountAsIdleSlots) {
  PoolBuilder b;
  b.Add(Phase::kRequested);
  b.Add(Phase::kStarting);
  b.Waiting(2);
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 0), kT0);
  EXPECT_EQ(p.creates, 0);
  EXPECT_TRUE(p.removals.empty());
}

TEST(Planner, ExcessIdleIsRemovedAtOnce) {
  PoolBuilder b;
  b.Add(Phase::kIdle, 1, kT0 - seconds(30));
  b.Add(Phase::kIdle, 1, kT0 - seconds(10));
  b.Add(Phase::kIdle, 1, kT0 - seconds(20));
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 1, 1, seconds(60)), kT0);
  // idle 3 > max_idle 1: two go now, longest idle first.
  ASSERT_EQ(p.removals.size(), 2u);
  EXPECT_EQ(p.removals[0], 1u);
  EXPECT_EQ(p.removals[1], 3u);
  // The remaining one is surplus (idle - 1 >= min_idle 0): its decay timer starts now.
  ASSERT_TRUE(p.decay_started);
  EXPECT_EQ(*p.decay_started, kT0);
  EXPECT_EQ(*p.wake_at, kT0 + seconds(60));
}

TEST(Planner, DefaultMaxIdleZeroRemovesIdleWorkerImmediately) {
  PoolBuilder b;
  b.Add(Phase::kIdle, 1);
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 0, 1, seconds(60)), kT0);
  EXPECT_EQ(p.removals.size(), 1u);
}

TEST(Planner, MinAgentsProtectsIdleWorkers) {
  PoolBuilder b;
  b.Add(Phase::kIdle, 1);
  b.Add(Phase::kIdle, 1);
  Plan p = MakePlan(b.snap, MakePolicy(2, 10, 0, 0), kT0);
  EXPECT_TRUE(p.removals.empty());
  EXPECT_FALSE(p.decay_started);
}

TEST(Planner, BusyWorkerIsNeverAVictim) {
  PoolBuilder b;
  b.Add(Phase::kBusy, 3);  // lots of free slots but running a task
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 0, 4, Millis(0)), kT0);
  EXPECT_TRUE(p.removals.empty());
}

TEST(Planner, NotConnectedWorkersAreVictimsBeforeIdleOnes) {
  PoolBuilder b;
  b.Add(Phase::kIdle, 1, kT0 - seconds(100));
  uint64_t starting = b.Add(Phase::kStarting, 0, kT0 - seconds(5));
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 1, 1, seconds(60)), kT0);
  ASSERT_EQ(p.removals.size(), 1u);
  EXPECT_EQ(p.removals[0], starting);
}

TEST(Planner, NewestNotConnectedWorkerGoesFirst) {
  PoolBuilder b;
  uint64_t older = b.Add(Phase::kStarting, 0, kT0 - seconds(50));
  uint64_t newer = b.Add(Phase::kRequested, 0, kT0 - seconds(1));
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 0, 0), kT0);
  ASSERT_EQ(p.removals.size(), 2u);
  EXPECT_EQ(p.removals[0], newer);
  EXPECT_EQ(p.removals[1], older);
}

TEST(Planner, IdleVictimMustNotBreakMinIdle) {
  PoolBuilder b;
  b.Add(Phase::kIdle, 2, kT0 - seconds(100));  // the older one offers 2 slots
  b.Add(Phase::kIdle, 1, kT0 - seconds(10));
  // idle 3, min_idle 2, max_idle 2: removing the 2-slot worker would leave 1 < 2.
  Plan p = MakePlan(b.snap, MakePolicy(0, 10, 2, 2, 1), kT0);
  ASSERT_EQ(p.removals.size(), 1u);
  EXPECT_EQ(p.removals[0], 2u);
}

TEST(Planner, DecayRemovesOneWorkerPerPeriod) {
  Policy pol = MakePolicy(0, 10, 0, 5, 1, seconds(60));
  PoolBuilder b;
  b.Add(Phase::kIdle, 1, kT0 - seconds(300));
  b.Add(Phase::kIdle, 1, kT0 - seconds(200));
  b.Add(Phase::kIdle, 1, kT0 - seconds(100));

  Plan p1 = MakePlan(b.snap, pol, kT0);
  EXPECT_TRUE(p1.removals.empty());
  ASSERT_TRUE(p1.decay_started);
  EXPECT_EQ(*p1.wake_at, kT0 + seconds(60));

  b.snap.decay_started = p1.decay_started;
  Plan p2 = MakePlan(b.snap, pol, kT0 + seconds(59));
  EXPECT_TRUE(p2.removals.empty());
  EXPECT_EQ(p2.decay_started, p1.decay_started);

  Plan p3 = MakePlan(b.snap, pol, kT0 + seconds(60));
  ASSERT_EQ(p3.removals.size(), 1u);
  EXPECT_EQ(p3.removals[0], 1u);  // idle longest
  EXPECT_EQ(*p3.decay_started, kT0 + seconds(60));  // restarted for the next one
}

TEST(Planner, DecayTimerIsCancelledWhenDemandAbsorbsTheSurplus) {
  Policy pol = MakePolicy(0, 10, 0, 5, 1, seconds(60));
  PoolBuilder b;
  b.Add(Phase::kIdle, 1);
  b.snap.decay_started = kT0 - seconds(59);
  b.Waiting(1);  // a task arrives for the only idle slot
  Plan p = MakePlan(b.snap, pol, kT0);
  EXPECT_FALSE(p.decay_started);
  EXPECT_TRUE(p.removals.empty());
  // When the task is done and the worker idle again, a fresh full period starts.
  b.Waiting(0);
  b.snap.decay_started = p.decay_started;
  Plan later = MakePlan(b.snap, pol, kT0 + seconds(30));
  EXPECT_TRUE(later.removals.empty());
  EXPECT_EQ(*later.decay_started, kT0 + seconds(30));
}

TEST(Planner, NoDecayBelowMinIdlePlusOneWorker) {
  Policy pol = MakePolicy(0, 10, 1, 5, 1, seconds(60));
  PoolBuilder b;
  b.Add(Phase::kIdle, 1);  // exactly min_idle: not surplus
  Plan p = MakePlan(b.snap, pol, kT0 + std::chrono::hours(5));
  EXPECT_FALSE(p.decay_started);
  EXPECT_TRUE(p.removals.empty());
}

TEST(Planner, ZeroIdleDecayRemovesAllSurplusNow) {
  Policy pol = MakePolicy(0, 10, 1, 5, 1, Millis(0));
  PoolBuilder b;
  for (int i = 0; i < 4; ++i) b.Add(Phase::kIdle, 1, kT0 - seconds(10 * i));
  Plan p = MakePlan(b.snap, pol, kT0);
  EXPECT_EQ(p.removals.size(), 3u);  // keeps min_idle = 1
  EXPECT_EQ(p.idle, 1);
}

TEST(Planner, UnknownWorkersHoldScaleUpUntilInitialDelay) {
  Policy pol = MakePolicy(0, 10, 0, 0);
  pol.initial_delay = seconds(120);
  PoolBuilder b;
  b.snap.started_at = kT0;
  b.Add(Phase::kUnknown);
  b.Waiting(3);
  Plan held = MakePlan(b.snap, pol, kT0 + seconds(60));
  EXPECT_EQ(held.creates, 0);
  EXPECT_TRUE(held.scale_up_held_by_unknown);
  Plan after = MakePlan(b.snap, pol, kT0 + seconds(120));
  EXPECT_EQ(after.creates, 3);
  EXPECT_FALSE(after.scale_up_held_by_unknown);
}

TEST(Planner, UnknownWorkersCountInSizeButOfferNoSlots) {
  PoolBuilder b;
  b.Add(Phase::kUnknown);
  b.Add(Phase::kUnknown);
  b.Waiting(5);
  Plan p = MakePlan(b.snap, MakePolicy(0, 4, 0, 0), kT0);  // initial_delay 0: not held
  EXPECT_EQ(p.creates, 2);
  EXPECT_EQ(p.size, 4);
}

TEST(Planner, DeletingDisconnectedAndLostAfterGraceAreOutsideTheCap) {
  PoolBuilder b;
  b.Add(Phase::kDeleting);                           // its agent is gone
  b.Add(Phase::kLost, 0, kT0 - seconds(61));         // lost longer than the grace
  b.Waiting(1);
  Policy pol = MakePolicy(0, 1, 0, 0);
  pol.lost_grace = seconds(60);
  Plan p = MakePlan(b.snap, pol, kT0);
  EXPECT_EQ(p.creates, 1);
  EXPECT_EQ(p.alive, 1);
}

// A frozen server (or a cut link) makes connected workers lost; they may well be alive. A pool
// at max_agents must not make a fifth worker while its four lost ones are in their grace.
TEST(Planner, LostWorkersInTheirGraceHoldTheirPlaceUnderMaxAgents) {
  PoolBuilder b;
  for (int i = 0; i < 4; ++i) b.Add(Phase::kLost, 0, kT0 - seconds(10 + i));
  b.Waiting(3);
  Policy pol = MakePolicy(0, 4, 0, 0);
  pol.lost_grace = seconds(60);
  Plan p = MakePlan(b.snap, pol, kT0);
  EXPECT_EQ(p.creates, 0);
  EXPECT_EQ(p.alive, 4);
  ASSERT_TRUE(p.wake_at);  // look again when the oldest one's grace ends
  EXPECT_EQ(*p.wake_at, kT0 - seconds(13) + seconds(60));

  // One grace later the oldest is given up: one place is free, and only one.
  Plan later = MakePlan(b.snap, pol, kT0 + seconds(47));
  EXPECT_EQ(later.creates, 1);
  EXPECT_EQ(later.alive, 4);
}

TEST(Planner, DrainingAndConnectedDeletingWorkersCountAgainstMaxAgents) {
  PoolBuilder b;
  b.Add(Phase::kDraining);
  b.snap.workers.push_back({b.next_id++, Phase::kDeleting, 0, kT0, /*connected=*/true});
  b.Add(Phase::kIdle, 0);  // no free slot
  b.Waiting(2);
  Plan p = MakePlan(b.snap, MakePolicy(0, 4, 0, 0), kT0);
  EXPECT_EQ(p.creates, 1);  // the size rule alone would ask for 2
  EXPECT_EQ(p.alive, 4);
}

TEST(Planner, CreatesBlockedByCooldown) {
  PoolBuilder b;
  b.Waiting(2);
  b.snap.creates_blocked = true;
  Plan p = MakePlan(b.snap, MakePolicy(0, 5, 0, 0), kT0);
  EXPECT_EQ(p.creates, 0);
}

// Exhaustive sweep over small pools: the invariants hold for every combination.
TEST(Planner, InvariantsOverAllSmallPools) {
  const Phase phases[] = {Phase::kRequested, Phase::kStarting, Phase::kIdle, Phase::kBusy,
                          Phase::kUnknown, Phase::kLost};
  int cases = 0;
  for (int min_agents = 0; min_agents <= 2; ++min_agents)
  for (int max_agents = min_agents; max_agents <= 4; ++max_agents)
  for (int min_idle = 0; min_idle <= 2; ++min_idle)
  for (int max_idle = 0; max_idle <= 3; ++max_idle)
  for (int slots = 1; slots <= 2; ++slots)
  for (int waiting = 0; waiting <= 3; ++waiting)
  for (int mask = 0; mask < 6 * 6 * 6; ++mask) {
    PoolBuilder b;
    int m = mask;
    for (int i = 0; i < 3; ++i) {
      Phase ph = phases[m % 6];
      m /= 6;
      int free = ph == Phase::kIdle ? slots : (ph == Phase::kBusy ? (i % 2 ? 0 : slots - 1) : 0);
      b.Add(ph, free, kT0 - seconds(10 * (i + 1)));
    }
    b.Waiting(waiting);
    Policy pol = MakePolicy(min_agents, max_agents, min_idle, max_idle, slots, Millis(0));
    pol.lost_grace = seconds(25);  // lost workers made 10 s and 20 s ago are in their grace, 30 s ago not
    Plan p = MakePlan(b.snap, pol, kT0);
    ++cases;
    std::map<uint64_t, const WorkerView*> by_id;
    int size_before = 0;
    int alive_before = 0;
    for (const auto& w : b.snap.workers) {
      by_id[w.id] = &w;
      if (w.phase != Phase::kLost) size_before++;
      if (w.phase != Phase::kLost || w.since + pol.lost_grace > kT0) alive_before++;
    }
    std::set<uint64_t> seen;
    for (uint64_t id : p.removals) {
      ASSERT_TRUE(seen.insert(id).second) << "victim chosen twice";
      const WorkerView* w = by_id.at(id);
      ASSERT_TRUE(w->phase == Phase::kIdle || w->phase == Phase::kRequested || w->phase == Phase::kStarting)
          << "removed a worker that is busy, unknown or lost";
    }
    // Never both grow and shrink in one plan.
    ASSERT_FALSE(p.creates > 0 && !p.removals.empty());
    // Creates never exceed max_agents.
    if (p.creates > 0) {
      ASSERT_LE(size_before + p.creates, max_agents);
      ASSERT_LE(alive_before + p.creates, max_agents) << "a lost worker in its grace was replaced beyond max_agents";
    }
    // Removals never take the pool below min_agents.
    if (!p.removals.empty()) {
      ASSERT_GE(p.size, min_agents);
    }
    // After the plan: not short of headroom unless capped by max_agents.
    if (p.size < max_agents && p.alive < max_agents) {
      ASSERT_GE(p.idle, min_idle);
      ASSERT_GE(p.size, min_agents);
    }
    // After the plan: no excess idle unless nothing more may go.
    if (p.idle > EffectiveMaxIdle(pol) && p.size > min_agents) {
      for (const auto& w : b.snap.workers) {
        if (seen.count(w.id)) continue;
        bool removable_idle = w.phase == Phase::kIdle && p.idle - w.free_slots >= min_idle;
        ASSERT_FALSE(w.phase == Phase::kRequested || w.phase == Phase::kStarting || removable_idle)
            << "excess idle left while a victim was available";
      }
    }
  }
  EXPECT_GT(cases, 100000);
}

// Simulated pool: plans are applied (creates connect, tasks run and end); the pool grows with
// demand, never above max, and shrinks back to min_agents once the demand is gone.
TEST(Planner, SimulatedDemandWaveGrowsAndDecaysBack) {
  Policy pol = MakePolicy(1, 6, 0, 3, 1, seconds(60));
  struct W { uint64_t id; Phase phase; TimePoint since; };
  std::vector<W> workers;
  uint64_t next = 1;
  int waiting = 0;
  std::optional<TimePoint> timer;
  TimePoint now = kT0;
  int peak = 0;
  auto step = [&] {
    Snapshot s;
    s.started_at = kT0;
    s.waiting_tasks = waiting;
    s.decay_started = timer;
    for (auto& w : workers) s.workers.push_back({w.id, w.phase, w.phase == Phase::kIdle ? 1 : 0, w.since});
    Plan p = MakePlan(s, pol, now);
    timer = p.decay_started;
    for (int i = 0; i < p.creates; ++i) workers.push_back({next++, Phase::kStarting, now});
    for (uint64_t id : p.removals)
      workers.erase(std::remove_if(workers.begin(), workers.end(), [&](const W& w) { return w.id == id; }),
                    workers.end());
    peak = std::max(peak, static_cast<int>(workers.size()));
  };
  waiting = 10;
  step();
  EXPECT_EQ(workers.size(), 6u);  // capped
  // Workers connect and take tasks; tasks finish over time.
  for (int round = 0; round < 10; ++round) {
    now += seconds(5);
    for (auto& w : workers) {
      if (w.phase == Phase::kStarting || w.phase == Phase::kBusy) {  // connected / previous task ended
        w.phase = Phase::kIdle;
        w.since = now;
      }
    }
    for (auto& w : workers) {
      if (w.phase == Phase::kIdle && waiting > 0) {
        w.phase = Phase::kBusy;
        waiting--;
      }
    }
    step();
  }
  for (auto& w : workers) w.phase = Phase::kIdle;
  for (int minute = 0; minute < 20; ++minute) {
    now += seconds(30);
    step();
  }
  EXPECT_EQ(peak, 6);
  EXPECT_EQ(workers.size(), 1u);  // back to min_agents
  EXPECT_EQ(waiting, 0);
}

}  // namespace
}  // namespace tidepool::autoscaler
