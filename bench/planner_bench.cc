// P6 — planner cost: autoscaler::MakePlan() for pools of 1k / 10k / 100k workers.
//
// Target (../shared/spec/performance.md): 100k workers < 5 ms per plan, linear or better.
//
// Every case builds one realistic snapshot outside the timed loop and plans it repeatedly
// (MakePlan is pure: the same snapshot gives the same plan every time). The snapshot is in
// worker-id order, as PoolController builds it from its std::map, with phases interleaved:
//   10% not connected (requested / starting, created over the last 10 min),
//   55% busy (no free slot, or some free slots when slots_per_agent > 1),
//   35% idle (idle since a random point in the last hour),
// queued demand, and the idle-decay timer running.
//
// Cases:
//   Steady        decay timer running and not due: the plan's verdict is "nothing to do, wake at T"
//                 (the common case: the controller replans on every worker/queue event).
//   DecayDue      the decay deadline has passed: one victim is chosen.
//   ScaleUp       the queue outgrows the idle slots: creates (bounded by max_agents).
//   Slots8        8 slots per worker, busy workers partly free; decay running.
//   MassRemoval   a burst just ended: 40% idle surplus above max_idle_agents is removed at once.
//                 This is the worst case of the removal loop (one victim per iteration).
//   ControllerPath  what PoolController::Reconcile does around the planner: copy the workers out
//                 of a std::map<id, unique_ptr<Worker>> into the snapshot, then plan (Steady).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>

#include "autoscaler/planner.h"
#include "autoscaler/worker.h"

namespace tidepool::autoscaler {
namespace {

const TimePoint kNow = TimePoint() + std::chrono::hours(10000);

struct Mix {
  double not_connected = 0.10;
  double busy = 0.55;  // the rest is idle
  int slots = 1;
};

Snapshot MakeSnapshot(int n, const Mix& mix, uint32_t seed = 42) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<int> last_hour_ms(0, 3600 * 1000);
  std::uniform_int_distribution<int> last_10min_ms(0, 600 * 1000);
  std::uniform_int_distribution<int> free_of(0, mix.slots);
  Snapshot s;
  s.workers.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    WorkerView w;
    w.id = static_cast<uint64_t>(i) + 1;
    double r = u(rng);
    if (r < mix.not_connected) {
      w.phase = u(rng) < 0.3 ? Phase::kRequested : Phase::kStarting;
      w.since = kNow - Millis(last_10min_ms(rng));
    } else if (r < mix.not_connected + mix.busy) {
      w.phase = Phase::kBusy;
      w.free_slots = mix.slots > 1 ? std::min(free_of(rng), mix.slots - 1) : 0;
      w.since = kNow - Millis(last_hour_ms(rng));
    } else {
      w.phase = Phase::kIdle;
      w.free_slots = mix.slots;
      w.since = kNow - Millis(last_hour_ms(rng));
    }
    s.workers.push_back(w);
  }
  s.started_at = kNow - std::chrono::hours(24);
  return s;
}

// Free slots the snapshot offers, as the rules count them (requested/starting count a full worker).
int Offered(const Snapshot& s, int slots) {
  int idle = 0;
  for (const auto& w : s.workers) {
    if (w.phase == Phase::kRequested || w.phase == Phase::kStarting) idle += slots;
    if (w.phase == Phase::kIdle || w.phase == Phase::kBusy) idle += w.free_slots;
  }
  return idle;
}

// A policy under which the snapshot has surplus between min and max idle (decay territory).
Policy DecayPolicy(const Snapshot& s, int n, int slots) {
  int offered = Offered(s, slots);
  Policy p;
  p.min_agents = n / 10;
  p.max_agents = n * 2;
  p.slots_per_agent = slots;
  p.min_idle = offered / 4;
  p.max_idle = offered * 2;  // nothing above max idle: no removal at once
  p.idle_decay = Millis(300000);
  return p;
}

void ReportPlan(benchmark::State& state, const Plan& plan) {
  state.counters["creates"] = plan.creates;
  state.counters["removals"] = static_cast<double>(plan.removals.size());
  state.SetComplexityN(state.range(0));
}

void BM_Plan_Steady(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Snapshot snap = MakeSnapshot(n, {});
  Policy pol = DecayPolicy(snap, n, 1);
  snap.waiting_tasks = n / 50;                      // queued demand (still below the idle slots)
  snap.decay_started = kNow - Millis(120000);       // running, due in 3 min
  Plan plan;
  for (auto _ : state) {
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  if (!plan.decay_started || !plan.removals.empty() || plan.creates != 0) state.SkipWithError("not the steady case");
  ReportPlan(state, plan);
}

void BM_Plan_DecayDue(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Snapshot snap = MakeSnapshot(n, {});
  Policy pol = DecayPolicy(snap, n, 1);
  snap.waiting_tasks = n / 50;
  snap.decay_started = kNow - Millis(301000);       // overdue
  Plan plan;
  for (auto _ : state) {
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  if (plan.removals.size() != 1) state.SkipWithError("expected exactly one decay victim");
  ReportPlan(state, plan);
}

void BM_Plan_ScaleUp(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Snapshot snap = MakeSnapshot(n, {});
  Policy pol = DecayPolicy(snap, n, 1);
  pol.min_idle = 0;
  pol.max_idle = 0;
  // Demand exceeds the free slots by 10% of the pool: n/10 creates.
  snap.waiting_tasks = Offered(snap, 1) + n / 10;
  Plan plan;
  for (auto _ : state) {
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  if (plan.creates != n / 10) state.SkipWithError("unexpected create count");
  ReportPlan(state, plan);
}

void BM_Plan_Slots8(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Snapshot snap = MakeSnapshot(n, {.slots = 8});
  Policy pol = DecayPolicy(snap, n, 8);
  snap.waiting_tasks = n / 10;
  snap.decay_started = kNow - Millis(120000);
  Plan plan;
  for (auto _ : state) {
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  if (!plan.removals.empty()) state.SkipWithError("not the steady case");
  ReportPlan(state, plan);
}

void BM_Plan_MassRemoval(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  // 5% not connected, 35% busy, 60% idle; max idle 20% of the pool: 40% of it goes at once
  // (not-connected first, then the longest idle).
  Snapshot snap = MakeSnapshot(n, {.not_connected = 0.05, .busy = 0.35});
  Policy pol;
  pol.min_agents = 0;
  pol.max_agents = n * 2;
  pol.min_idle = n / 10;
  pol.max_idle = n / 5;
  pol.idle_decay = Millis(300000);
  Plan plan;
  for (auto _ : state) {
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  if (plan.removals.size() < static_cast<size_t>(n) / 4) state.SkipWithError("expected a mass removal");
  ReportPlan(state, plan);
}

void BM_Plan_ControllerPath(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Snapshot proto = MakeSnapshot(n, {});
  Policy pol = DecayPolicy(proto, n, 1);
  std::map<uint64_t, std::unique_ptr<Worker>> workers;
  for (const WorkerView& v : proto.workers) {
    auto w = std::make_unique<Worker>();
    w->id = v.id;
    w->name = "worker-" + std::to_string(v.id);
    w->pool = "bench";
    w->phase = v.phase;
    w->slots = 1;
    w->used_slots = v.phase == Phase::kBusy ? 1 : 0;
    w->phase_since = v.since;
    w->connected = v.phase == Phase::kIdle || v.phase == Phase::kBusy;
    workers.emplace(v.id, std::move(w));
  }
  Plan plan;
  for (auto _ : state) {
    Snapshot snap;
    snap.workers.reserve(workers.size());
    for (const auto& [id, w] : workers) snap.workers.push_back({id, w->phase, w->free_slots(), w->phase_since});
    snap.waiting_tasks = n / 50;
    snap.decay_started = kNow - Millis(120000);
    snap.started_at = proto.started_at;
    plan = MakePlan(snap, pol, kNow);
    benchmark::DoNotOptimize(plan);
  }
  ReportPlan(state, plan);
}

#define PLANNER_SIZES Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond)->Complexity(benchmark::oN)

BENCHMARK(BM_Plan_Steady)->PLANNER_SIZES;
BENCHMARK(BM_Plan_DecayDue)->PLANNER_SIZES;
BENCHMARK(BM_Plan_ScaleUp)->PLANNER_SIZES;
BENCHMARK(BM_Plan_Slots8)->PLANNER_SIZES;
BENCHMARK(BM_Plan_MassRemoval)->PLANNER_SIZES;
BENCHMARK(BM_Plan_ControllerPath)->PLANNER_SIZES;

}  // namespace
}  // namespace tidepool::autoscaler

BENCHMARK_MAIN();
