#include "autoscaler/walltime.h"

namespace tidepool::autoscaler {

WalltimeDue DueForDrain(std::span<const WalltimeView> workers, int64_t now_ms) {
  WalltimeDue due;
  for (const WalltimeView& w : workers) {
    if (w.drain_at_ms <= 0 || !w.takes_work) continue;
    if (w.drain_at_ms <= now_ms) {
      due.drain.push_back(w.id);
    } else if (!due.next_ms || w.drain_at_ms < *due.next_ms) {
      due.next_ms = w.drain_at_ms;
    }
  }
  return due;
}

}  // namespace tidepool::autoscaler
