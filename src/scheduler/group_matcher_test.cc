#include "scheduler/group_matcher.h"

#include <gtest/gtest.h>

#include <optional>

namespace tidepool::scheduler {
namespace {

GroupPool Pool(uint32_t id, std::vector<GroupWorker> workers, bool healthy = true, int64_t room = 0) {
  return {.id = id, .workers = std::move(workers), .healthy = healthy, .room = room};
}

GroupEntry Task(uint32_t handle, std::vector<uint32_t> eligible, int32_t slots = 1,
                uint32_t demand_pool = kNoPool, uint64_t batch = 0) {
  return {.handle = handle, .priority = 0, .seq = handle, .slots = slots,
          .eligible = std::move(eligible), .demand_pool = demand_pool, .batch = batch};
}

// The entry's placement, or an empty one on kNoPool.
GroupPlacement PlacementOf(const GroupMatch& m, uint32_t entry) {
  for (const auto& p : m.placements)
    if (p.entry == entry) return p;
  return {.entry = entry, .pool = kNoPool};
}

std::optional<uint32_t> DemandPoolOf(const GroupMatch& m, uint32_t entry) {
  for (const auto& d : m.demand)
    if (d.entry == entry) return d.pool;
  return std::nullopt;
}

std::vector<uint32_t> Placed(const GroupMatch& m) {
  std::vector<uint32_t> out;
  for (const auto& p : m.placements) out.push_back(p.entry);
  return out;
}

using Handles = std::vector<uint32_t>;

TEST(GroupMatch, EmptyInputs) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}})};
  std::vector<GroupEntry> q = {Task(1, {0})};
  EXPECT_TRUE(MatchGroup({}, pools).placements.empty());
  auto m = MatchGroup(q, {});
  EXPECT_TRUE(m.placements.empty());
  EXPECT_TRUE(m.demand.empty());
}

TEST(GroupMatch, IdleSlotsAnywhereFirstAcrossSelectorPools) {
  // A is the preferred pool and can grow, but C has an idle slot now: C wins.
  std::vector<GroupPool> pools = {Pool(0, {}, true, 100), Pool(1, {{10, 0}}), Pool(2, {{20, 1}})};
  std::vector<GroupEntry> q = {Task(1, {0, 1, 2}), Task(2, {0, 1, 2})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].entry, 1u);
  EXPECT_EQ(m.placements[0].pool, 2u);
  EXPECT_EQ(m.placements[0].workers, Handles{20});
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].entry, 2u);
  EXPECT_EQ(m.demand[0].pool, 0u);
  EXPECT_EQ(m.demand[0].slots, 1);
}

TEST(GroupMatch, FirstPoolWithFreeSlotsInEligibleOrder) {
  std::vector<GroupPool> pools = {Pool(5, {{50, 1}}), Pool(7, {{70, 1}})};
  std::vector<GroupEntry> q = {Task(1, {7, 5}), Task(2, {7, 5}), Task(3, {7, 5})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 2u);
  EXPECT_EQ(m.placements[0].pool, 7u);
  EXPECT_EQ(m.placements[1].pool, 5u);
  EXPECT_EQ(DemandPoolOf(m, 3), 7u);  // no room anywhere: the first healthy pool
}

TEST(GroupMatch, WorkersTakenInPreferenceOrderAndMayRepeat) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}, {2, 0}, {3, 3}, {4, 2}})};
  std::vector<GroupEntry> q = {Task(1, {0}), Task(2, {0}, 3), Task(3, {0})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 3u);
  EXPECT_EQ(m.placements[0].workers, Handles{1});
  EXPECT_EQ(m.placements[1].workers, (Handles{3, 3, 3}));
  EXPECT_EQ(m.placements[2].workers, Handles{4});
  EXPECT_TRUE(m.demand.empty());
}

TEST(GroupMatch, DemandGoesToFirstHealthyPoolWithRoom) {
  std::vector<GroupPool> pools = {Pool(0, {}, false, 10), Pool(1, {}, true, 0), Pool(2, {}, true, 5)};
  std::vector<GroupEntry> q = {Task(1, {0, 1, 2})};
  auto m = MatchGroup(q, pools);
  EXPECT_TRUE(m.placements.empty());
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].pool, 2u);
}

TEST(GroupMatch, RoomIsCountedDownSoBackupsTakeTheOverflow) {
  std::vector<GroupPool> pools = {Pool(0, {}, true, 2), Pool(1, {}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}), Task(2, {0, 1}), Task(3, {0, 1}), Task(4, {0, 1})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.demand.size(), 4u);
  EXPECT_EQ(m.demand[0].pool, 0u);
  EXPECT_EQ(m.demand[1].pool, 0u);
  EXPECT_EQ(m.demand[2].pool, 1u);
  EXPECT_EQ(m.demand[3].pool, 1u);
}

TEST(GroupMatch, RoomMustFitTheWholeGang) {
  std::vector<GroupPool> pools = {Pool(0, {}, true, 2), Pool(1, {}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 3), Task(2, {0, 1}, 2)};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.demand.size(), 2u);
  EXPECT_EQ(m.demand[0].pool, 1u);
  EXPECT_EQ(m.demand[0].slots, 3);
  EXPECT_EQ(m.demand[1].pool, 0u);  // A's room of 2 was left for it
  EXPECT_EQ(m.demand[1].slots, 2);
}

TEST(GroupMatch, NoRoomFallsBackToFirstHealthyThenFirstEligible) {
  {
    std::vector<GroupPool> pools = {Pool(0, {}, false, 10), Pool(1, {}, true, 0), Pool(2, {}, true, 0)};
    auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1, 2})}, pools);
    EXPECT_EQ(DemandPoolOf(m, 1), 1u);
  }
  {
    std::vector<GroupPool> pools = {Pool(0, {}, false, 10), Pool(1, {}, false, 10)};
    auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {1, 0})}, pools);
    EXPECT_EQ(DemandPoolOf(m, 1), 1u);  // nothing healthy: it waits on its first eligible pool
  }
}

TEST(GroupMatch, StickyDemandStaysOnAHealthyPool) {
  // Pool 1 has no room left, pool 0 has plenty: the entry already asked pool 1 and stays there.
  std::vector<GroupPool> pools = {Pool(0, {}, true, 10), Pool(1, {}, true, 0)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1}, 1, /*demand_pool=*/1)}, pools);
  EXPECT_EQ(DemandPoolOf(m, 1), 1u);
}

TEST(GroupMatch, StickyDemandCountsDownRoom) {
  std::vector<GroupPool> pools = {Pool(0, {}, true, 1), Pool(1, {}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 1, /*demand_pool=*/0), Task(2, {0, 1})};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(DemandPoolOf(m, 1), 0u);
  EXPECT_EQ(DemandPoolOf(m, 2), 1u);  // pool 0's room went to the sticky entry
}

TEST(GroupMatch, UnhealthyDemandPoolLosesTheEntry) {
  std::vector<GroupPool> pools = {Pool(0, {}, false, 10), Pool(1, {}, true, 0), Pool(2, {}, true, 4)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1, 2}, 1, /*demand_pool=*/0)}, pools);
  EXPECT_EQ(DemandPoolOf(m, 1), 2u);
}

TEST(GroupMatch, StickyDemandOnAPoolNoLongerEligibleMoves) {
  std::vector<GroupPool> pools = {Pool(0, {}, true, 10), Pool(1, {}, true, 10)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {1}, 1, /*demand_pool=*/0)}, pools);
  EXPECT_EQ(DemandPoolOf(m, 1), 1u);
}

TEST(GroupMatch, OnlyEligiblePoolsAreUsed) {
  // Pool 1 excludes the task's kind, so the caller left it out of `eligible`: neither its idle
  // slot nor its room is used.
  std::vector<GroupPool> pools = {Pool(0, {}, true, 0), Pool(1, {{10, 4}}, true, 100)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0}), Task(2, {0}, 2)}, pools);
  EXPECT_TRUE(m.placements.empty());
  EXPECT_EQ(DemandPoolOf(m, 1), 0u);
  EXPECT_EQ(DemandPoolOf(m, 2), 0u);
}

TEST(GroupMatch, EmptyOrUnknownEligibleIsSkipped) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 4}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {}), Task(2, {99}), Task(3, {99, 0})};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{3});
  EXPECT_TRUE(m.demand.empty());
}

TEST(GroupMatch, PlacedEntriesHaveNoDemand) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}), Task(2, {0}), Task(3, {0}, 1, /*demand_pool=*/0)};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), (Handles{1, 2}));
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].entry, 3u);
}

TEST(GroupMatch, GangIsAllOrNothing) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}, {2, 1}}, true, 10)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0}, 3)}, pools);
  EXPECT_TRUE(m.placements.empty());
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].pool, 0u);
  EXPECT_EQ(m.demand[0].slots, 3);
}

TEST(GroupMatch, GangIsPlacedOnOnePoolOnly) {
  {
    // 2 + 2 free across two pools is not 3 in one.
    std::vector<GroupPool> pools = {Pool(0, {{1, 2}}), Pool(1, {{2, 2}})};
    auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1}, 3)}, pools);
    EXPECT_TRUE(m.placements.empty());
    EXPECT_EQ(m.demand.size(), 1u);
  }
  {
    std::vector<GroupPool> pools = {Pool(0, {{1, 2}}), Pool(1, {{2, 1}, {3, 2}})};
    auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1}, 3)}, pools);
    ASSERT_EQ(m.placements.size(), 1u);
    EXPECT_EQ(m.placements[0].pool, 1u);
    EXPECT_EQ(m.placements[0].workers, (Handles{2, 3, 3}));
    EXPECT_TRUE(m.demand.empty());
  }
}

TEST(GroupMatch, TwoGangsOfThreeOnFourSlots) {
  // The first gets 3. The second waits: it takes nothing, and as the pool's first waiting gang it
  // holds the last free slot (rule 5), so a later plain task does not get it.
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}, {2, 2}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}, 3), Task(2, {0}, 3), Task(3, {0})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].entry, 1u);
  EXPECT_EQ(m.placements[0].workers, (Handles{1, 1, 2}));
  ASSERT_EQ(m.demand.size(), 2u);
  EXPECT_EQ(m.demand[0].entry, 2u);
  EXPECT_EQ(m.demand[0].slots, 3);
  EXPECT_EQ(m.demand[1].entry, 3u);
}

TEST(GroupMatch, TwoGangsOfThreeOnFourSlotsSecondAskingElsewhere) {
  // Same, but the second gang's demand is on pool 1 (sticky): it reserves nothing on pool 0, so
  // the remaining slot there goes to the later plain task.
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}, {2, 2}}, true, 10), Pool(1, {}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 3), Task(2, {0, 1}, 3, /*demand_pool=*/1),
                               Task(3, {0, 1})};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), (Handles{1, 3}));
  EXPECT_EQ(PlacementOf(m, 3).workers, Handles{2});
  EXPECT_EQ(DemandPoolOf(m, 2), 1u);
}

TEST(GroupMatch, WaitingGangReservesFreeSlotsFromLaterTasks) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}, {2, 1}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}, 3), Task(2, {0}), Task(3, {0})};
  auto m = MatchGroup(q, pools);
  EXPECT_TRUE(m.placements.empty());
  ASSERT_EQ(m.demand.size(), 3u);
  EXPECT_EQ(m.demand[0].slots, 3);  // a reserving gang still asks for its full size
}

TEST(GroupMatch, PlainTaskAheadOfAWaitingGangStillRuns) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}, {2, 1}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}), Task(2, {0}, 3), Task(3, {0})};
  q[0].priority = 0;
  q[1].priority = 1;
  q[2].priority = 1;
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{1});
  EXPECT_EQ(PlacementOf(m, 1).workers, Handles{1});
  EXPECT_EQ(DemandPoolOf(m, 3), 0u);  // slot 2 is held for the gang
}

TEST(GroupMatch, OnlyTheFirstWaitingGangReservesAndOnlyInItsDemandPool) {
  // Gang 1 asks pool 0 and holds its free slot; gang 2 waits on pool 0 too, holding nothing.
  // Pool 1 has no waiting gang, so the plain task runs there.
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}}, true, 10), Pool(1, {{2, 1}}, true, 0)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 4), Task(2, {0, 1}, 2, /*demand_pool=*/0),
                               Task(3, {0, 1}), Task(4, {0, 1})};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{3});
  EXPECT_EQ(PlacementOf(m, 3).pool, 1u);
  EXPECT_EQ(DemandPoolOf(m, 1), 0u);
  EXPECT_EQ(DemandPoolOf(m, 2), 0u);
  EXPECT_EQ(DemandPoolOf(m, 4), 0u);
}

TEST(GroupMatch, ReservationsArePerPool) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}}, true, 0), Pool(1, {{2, 2}}, true, 0)};
  std::vector<GroupEntry> q = {Task(1, {0}, 3), Task(2, {1}, 3), Task(3, {0, 1})};
  auto m = MatchGroup(q, pools);
  EXPECT_TRUE(m.placements.empty());
  EXPECT_EQ(m.demand.size(), 3u);
}

TEST(GroupMatch, SmallerGangBehindAWaitingGangUsesSlotsNotHeld) {
  // Gang 1 (5) asks pool 0 and holds its 2 free slots; pool 1's 3 free slots are not held, so
  // gang 2 (3) starts there.
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}}, true, 10), Pool(1, {{2, 3}}, true, 0)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 5), Task(2, {0, 1}, 3)};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{2});
  EXPECT_EQ(PlacementOf(m, 2).pool, 1u);
}

TEST(GroupMatch, PriorityThenFifoOnAnUnsortedQueue) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 2}}, true, 0)};
  std::vector<GroupEntry> q = {Task(10, {0}), Task(11, {0}), Task(12, {0}), Task(13, {0})};
  q[0].priority = 5, q[0].seq = 1;
  q[1].priority = 0, q[1].seq = 3;
  q[2].priority = 0, q[2].seq = 2;
  q[3].priority = -1, q[3].seq = 9;
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), (Handles{13, 12}));
  ASSERT_EQ(m.demand.size(), 2u);
  EXPECT_EQ(m.demand[0].entry, 11u);  // demand is in queue order too
  EXPECT_EQ(m.demand[1].entry, 10u);
}

TEST(GroupMatch, BatchEntryUsesOnlyItsTaggedWorkers) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 4}, {2, 1, 77}, {3, 1, 88}, {4, 2, 77}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}, 3, kNoPool, 77)};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].workers, (Handles{2, 4, 4}));
}

TEST(GroupMatch, TaggedWorkersServeOnlyTheirEntry) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 2, 77}, {2, 1, 88}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0}), Task(2, {0}, 2), Task(3, {0}, 2, kNoPool, 77)};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{3});
  EXPECT_EQ(PlacementOf(m, 3).workers, (Handles{1, 1}));
  EXPECT_EQ(DemandPoolOf(m, 1), 0u);
  EXPECT_EQ(DemandPoolOf(m, 2), 0u);
}

TEST(GroupMatch, BatchEntryWaitsForAllItsWorkersInOnePoolAndReservesNothing) {
  // Two of its three tagged workers are up (in different pools); it waits, with demand, and the
  // plain task behind it still gets the untagged slot.
  std::vector<GroupPool> pools = {Pool(0, {{1, 1, 77}, {2, 1}}, true, 10), Pool(1, {{3, 1, 77}}, true, 10)};
  std::vector<GroupEntry> q = {Task(1, {0, 1}, 3, kNoPool, 77), Task(2, {0, 1})};
  auto m = MatchGroup(q, pools);
  EXPECT_EQ(Placed(m), Handles{2});
  EXPECT_EQ(PlacementOf(m, 2).workers, Handles{2});
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].entry, 1u);
  EXPECT_EQ(m.demand[0].pool, 0u);
  EXPECT_EQ(m.demand[0].slots, 3);
}

TEST(GroupMatch, BatchEntryFindsItsWorkersInALaterEligiblePool) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1, 77}, {2, 8}}), Pool(1, {{3, 1, 77}, {4, 1, 77}})};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0, 1}, 2, kNoPool, 77)}, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].pool, 1u);
  EXPECT_EQ(m.placements[0].workers, (Handles{3, 4}));
}

TEST(GroupMatch, NonPositiveSlotsCountAsOne) {
  std::vector<GroupPool> pools = {Pool(0, {{1, 1}}, true, 10)};
  auto m = MatchGroup(std::vector<GroupEntry>{Task(1, {0}, 0), Task(2, {0}, -3)}, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].workers, Handles{1});
  ASSERT_EQ(m.demand.size(), 1u);
  EXPECT_EQ(m.demand[0].slots, 1);
}

TEST(GroupMatch, SparsePoolIds) {
  std::vector<GroupPool> pools = {Pool(4000000000u, {{1, 1}}), Pool(7, {}, true, 3)};
  std::vector<GroupEntry> q = {Task(1, {4000000000u, 7}), Task(2, {4000000000u, 7})};
  auto m = MatchGroup(q, pools);
  ASSERT_EQ(m.placements.size(), 1u);
  EXPECT_EQ(m.placements[0].pool, 4000000000u);
  EXPECT_EQ(DemandPoolOf(m, 2), 7u);
}

}  // namespace
}  // namespace tidepool::scheduler
