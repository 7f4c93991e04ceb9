// The one place that lists the backends compiled into Tidepool.
#include <mutex>

#include "backends/backend.h"
#include "backends/local/local_backend.h"

namespace tidepool::backends {

void RegisterBuiltinBackends() {
  static std::once_flag once;
  std::call_once(once, [] {
    Registry& r = Registry::Global();
    r.Register("local", &LocalBackend::Make);
  });
}

}  // namespace tidepool::backends
