// P7 — matcher throughput: placements/s with 100k free slots and a 100k-task queue.
//
// Target (../shared/spec/performance.md): >= 1,000,000 placements/s.
//
// The `placements` counter is a rate (benchmark::Counter::kIsRate): placements made per second
// of matcher time. Inputs are built outside the timed loop unless the case says otherwise; the
// matchers are pure, so each iteration repeats the same full pass.
//
// Cases (the argument is the size: free slots = queued tasks = N):
//   Match/N/slots            scheduler::Match, the single-pool matcher; workers of 1 or 8 slots,
//                            queue already in order (the server's queues are ordered maps).
//   MatchUnsorted/N          the same with a shuffled queue (Match sorts a copy first).
//   MatchGroup/N/slots       scheduler::MatchGroup over one pool — what Core::Schedule calls.
//   MatchGroupSelector/N     three pools behind one selector; the preferred pool has a third of
//                            the slots, the entries overflow into the others.
//   MatchGroupGang/N/size    gangs (all-or-nothing entries of `size` slots) filling N slots;
//                            counters: entries placed/s and slots placed/s.
//   SchedulePure/W           Core::Schedule's pure part end to end: PreferWorkers over W worker
//                            candidates of 2 slots (half busy: 1.5 W free slots, as many queued),
//                            building the GroupPool and entries, MatchGroup.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "scheduler/group_matcher.h"
#include "scheduler/matcher.h"

namespace tidepool::scheduler {
namespace {

std::vector<QueuedTask> MakeQueue(int n, bool sorted) {
  std::vector<QueuedTask> q(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    // Three priority levels, FIFO inside each; generated in (priority, seq) order.
    int32_t prio = i < n / 10 ? 0 : i < n / 2 ? 1 : 2;
    q[static_cast<size_t>(i)] = {static_cast<uint32_t>(i), prio, static_cast<uint64_t>(i) + 1};
  }
  if (!sorted) std::shuffle(q.begin(), q.end(), std::mt19937_64(7));
  return q;
}

std::vector<FreeWorker> MakeWorkers(int free_slots, int slots_per_worker) {
  std::vector<FreeWorker> w;
  for (int i = 0, left = free_slots; left > 0; ++i) {
    int32_t k = std::min(left, slots_per_worker);
    w.push_back({static_cast<uint32_t>(i), k});
    left -= k;
  }
  return w;
}

void SetRate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] = benchmark::Counter(per_iteration * static_cast<double>(state.iterations()),
                                            benchmark::Counter::kIsRate);
}

void BM_Match(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int slots = static_cast<int>(state.range(1));
  auto queue = MakeQueue(n, true);
  auto workers = MakeWorkers(n, slots);
  size_t placed = 0;
  for (auto _ : state) {
    auto out = Match(queue, workers);
    placed = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  if (placed != static_cast<size_t>(n)) state.SkipWithError("not every task was placed");
  SetRate(state, "placements", static_cast<double>(placed));
}

void BM_MatchUnsorted(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto queue = MakeQueue(n, false);
  auto workers = MakeWorkers(n, 1);
  size_t placed = 0;
  for (auto _ : state) {
    auto out = Match(queue, workers);
    placed = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  if (placed != static_cast<size_t>(n)) state.SkipWithError("not every task was placed");
  SetRate(state, "placements", static_cast<double>(placed));
}

std::vector<GroupEntry> MakeEntries(int n, int slots, std::vector<uint32_t> eligible) {
  std::vector<GroupEntry> q(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    GroupEntry& e = q[static_cast<size_t>(i)];
    e.handle = static_cast<uint32_t>(i);
    e.priority = i < n / 10 ? 0 : i < n / 2 ? 1 : 2;
    e.seq = static_cast<uint64_t>(i) + 1;
    e.slots = slots;
    e.eligible = eligible;
    e.demand_pool = eligible.front();
  }
  return q;
}

GroupPool MakePool(uint32_t id, int free_slots, int slots_per_worker) {
  GroupPool p;
  p.id = id;
  p.room = 1 << 30;
  for (const FreeWorker& w : MakeWorkers(free_slots, slots_per_worker)) p.workers.push_back({w.handle, w.free_slots, 0});
  return p;
}

void BM_MatchGroup(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int slots = static_cast<int>(state.range(1));
  auto entries = MakeEntries(n, 1, {0});
  std::vector<GroupPool> pools = {MakePool(0, n, slots)};
  size_t placed = 0;
  for (auto _ : state) {
    GroupMatch m = MatchGroup(entries, pools);
    placed = m.placements.size();
    benchmark::DoNotOptimize(m.placements.data());
  }
  if (placed != static_cast<size_t>(n)) state.SkipWithError("not every entry was placed");
  SetRate(state, "placements", static_cast<double>(placed));
}

void BM_MatchGroupSelector(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto entries = MakeEntries(n, 1, {0, 1, 2});
  std::vector<GroupPool> pools = {MakePool(0, n / 3, 1), MakePool(1, n / 3, 1), MakePool(2, n - 2 * (n / 3), 1)};
  size_t placed = 0;
  for (auto _ : state) {
    GroupMatch m = MatchGroup(entries, pools);
    placed = m.placements.size();
    benchmark::DoNotOptimize(m.placements.data());
  }
  if (placed != static_cast<size_t>(n)) state.SkipWithError("not every entry was placed");
  SetRate(state, "placements", static_cast<double>(placed));
}

void BM_MatchGroupGang(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int gang = static_cast<int>(state.range(1));
  // n free slots on 8-slot workers; n/gang gangs fill them exactly, plus as many gangs again
  // that cannot be placed (they become demand; the first one reserves what is left).
  auto entries = MakeEntries(2 * (n / gang), gang, {0});
  std::vector<GroupPool> pools = {MakePool(0, n, 8)};
  size_t placed = 0, demand = 0;
  for (auto _ : state) {
    GroupMatch m = MatchGroup(entries, pools);
    placed = m.placements.size();
    demand = m.demand.size();
    benchmark::DoNotOptimize(m.placements.data());
  }
  if (placed != static_cast<size_t>(n / gang) || demand != placed) state.SkipWithError("unexpected gang placement");
  SetRate(state, "placements", static_cast<double>(placed));        // gang entries placed/s
  SetRate(state, "slots_placed", static_cast<double>(placed) * gang);  // shard slots placed/s
}

void BM_SchedulePure(benchmark::State& state) {
  // n workers of 2 slots: half busy (one slot used), half idle; 66,667 workers = 100,000 free slots.
  const int n = static_cast<int>(state.range(0));
  std::mt19937_64 rng(3);
  const auto t0 = std::chrono::steady_clock::time_point() + std::chrono::hours(1000);
  std::vector<WorkerCandidate> cands;
  int free_total = 0;
  for (int i = 0; i < n; ++i) {
    bool busy = i % 2 == 0;
    int32_t free = busy ? 1 : 2;
    free_total += free;
    cands.push_back({static_cast<uint32_t>(i), free, busy, t0 - std::chrono::milliseconds(rng() % 3600000)});
  }
  std::vector<QueuedTask> queue = MakeQueue(free_total, true);
  size_t placed = 0;
  for (auto _ : state) {
    std::vector<GroupPool> pools(1);
    pools[0].id = 0;
    pools[0].room = 1 << 30;
    for (const FreeWorker& fw : PreferWorkers(cands)) pools[0].workers.push_back({fw.handle, fw.free_slots, 0});
    std::vector<GroupEntry> entries;
    entries.reserve(queue.size());
    for (const QueuedTask& t : queue) {
      GroupEntry e;
      e.handle = t.handle;
      e.priority = t.priority;
      e.seq = t.seq;
      e.eligible.push_back(0);
      e.demand_pool = 0;
      entries.push_back(std::move(e));
    }
    GroupMatch m = MatchGroup(entries, pools);
    placed = m.placements.size();
    benchmark::DoNotOptimize(m.placements.data());
  }
  if (placed != static_cast<size_t>(free_total)) state.SkipWithError("not every entry was placed");
  SetRate(state, "placements", static_cast<double>(placed));
}

BENCHMARK(BM_Match)->ArgNames({"n", "slots"})->Args({1000, 1})->Args({100000, 1})->Args({100000, 8})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatchUnsorted)->Arg(1000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatchGroup)->ArgNames({"n", "slots"})->Args({1000, 1})->Args({100000, 1})->Args({100000, 8})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatchGroupSelector)->Arg(1000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatchGroupGang)->ArgNames({"n", "gang"})->Args({1000, 8})->Args({100000, 8})->Args({100000, 64})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SchedulePure)->Arg(667)->Arg(66667)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tidepool::scheduler

BENCHMARK_MAIN();
