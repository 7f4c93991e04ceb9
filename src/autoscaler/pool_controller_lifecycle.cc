// A pool declared while the server runs: changed (Reconfigure) or removed (Retire), and the
// backend's watch (pool_controller.h).
#include <fmt/format.h>

#include "autoscaler/pool_controller.h"

namespace tidepool::autoscaler {

void PoolController::WatchBackend() {
  auto alive = alive_;
  auto post = hooks_.post;
  std::weak_ptr<backends::Backend> which = backend_;
  backend_->Watch([alive, post, which, this] {
    post([alive, which, this] {
      if (!*alive || which.lock() != backend_) return;  // a backend replaced since
      watch_poked_ = true;
      watch_poked_at_gen_ = list_generation_;
      Sync();
    });
  });
}

void PoolController::Retire(const std::string& why) {
  if (retired_) return;
  retired_ = true;
  Event("retired", fmt::format("the pool is removed ({}): its workers are drained and deleted", why), true);
  for (Worker* w : Workers()) {
    if (w->phase == Phase::kDeleting) continue;
    if (w->phase == Phase::kRequested || w->phase == Phase::kStarting || w->phase == Phase::kUnknown ||
        w->phase == Phase::kLost) {
      Remove(w, why);
    } else {
      DrainWorker(w, why);
    }
  }
  Reconcile();
  if (hooks_.changed) hooks_.changed();
}

void PoolController::Reconfigure(config::PoolConfig cfg, std::unique_ptr<backends::Backend> backend) {
  cfg_ = std::move(cfg);
  retired_ = false;  // declared again
  if (backend && !is_static()) {
    std::shared_ptr<backends::Backend> old = std::exchange(backend_, std::shared_ptr<backends::Backend>(std::move(backend)));
    old->Abandon();
    Event("reconfigured", "the pool's backend changed: new workers come from the new one");
    WatchBackend();
    Sync();
  } else {
    Event("reconfigured", "the pool's settings changed");
  }
  Reconcile();
  if (hooks_.changed) hooks_.changed();
}

}  // namespace tidepool::autoscaler
