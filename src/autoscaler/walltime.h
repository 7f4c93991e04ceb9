// Workers with a walltime (a Slurm job's time limit, backends.md `slurm`: drain_before): the
// rule as a pure function of the workers and the wall clock.
//
// A worker whose agent told a drain time (AgentHello.drain_at_ms: its walltime less the pool's
// drain_before) takes no new task from then on: it is drained (deleted once its tasks end), so no
// task is started there that the walltime would kill, and the planner, which does not count a
// draining worker in the pool's size, replaces it ahead of time if demand needs it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace tidepool::autoscaler {

struct WalltimeView {
  uint64_t id = 0;
  int64_t drain_at_ms = 0;  // unix ms; 0 = no walltime
  bool takes_work = false;  // connected and idle or busy (not already draining, deleting, lost)
};

struct WalltimeDue {
  std::vector<uint64_t> drain;    // to drain now
  std::optional<int64_t> next_ms;  // the next drain time still ahead, to be woken at
};

WalltimeDue DueForDrain(std::span<const WalltimeView> workers, int64_t now_ms);

}  // namespace tidepool::autoscaler
