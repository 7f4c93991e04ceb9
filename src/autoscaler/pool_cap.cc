// max_agents as a hard cap, checked by the controller at the moment a create is launched (the
// planner applies the same rule when it plans; see planner.h). Between the plan and the launch
// the books can change — a machine nobody asked for is listed (unknown), a queued request waits
// behind the rate limit — and the cap must hold at every moment, not only at planning time.
#include "autoscaler/pool_controller.h"

namespace tidepool::autoscaler {

int PoolController::AliveLaunched(TimePoint now) const {
  const Policy pol = policy();
  int alive = 0;  // plus the creates whose answers were refused (pool_controller_answers.cc)
  for (const auto& [id, w] : workers_) {
    if (w->phase == Phase::kRequested && !w->create_launched) continue;  // nothing exists yet
    if (CountsAgainstCap({id, w->phase, w->free_slots(), w->phase_since, MayBeUp(*w)}, pol, now)) alive++;
  }
  return alive + HeldCreates(now);
}

bool PoolController::MayLaunchCreate(TimePoint now) const {
  if (!cfg_.auto_scaler && !cfg_.fixed) return true;
  return AliveLaunched(now) < policy().max_agents;
}

}  // namespace tidepool::autoscaler
