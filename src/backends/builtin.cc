// The one place that lists the backends compiled into Tidepool.
#include <mutex>

#include "backends/backend.h"
#include "backends/command/command_backend.h"
#include "backends/local/local_backend.h"

namespace tidepool::backends {

void RegisterBuiltinBackends() {
  static std::once_flag once;
  std::call_once(once, [] {
    Registry& r = Registry::Global();
    r.Register("local", &LocalBackend::Make);
    r.Register("command", &CommandBackend::Make);
  });
}

}  // namespace tidepool::backends
