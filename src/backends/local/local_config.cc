// The `local` block: its schema, and its registration by config key.
#include "backends/local/local_backend.h"
#include "backends/registry.h"

namespace tidepool::backends {

namespace {

using namespace config::schema::make;

const config::schema::Message* LocalSchema() {
  // Simulations for benchmarks and tests: boot_delay, a slow boot (the agent starts that long
  // after the create); api_delay, a slow cloud API (the create answers that long after the
  // agent was started, so the agent may connect before its create has returned).
  static const config::schema::Message m{"local",
                                         {WithDefault(Duration("boot_delay"), 0), WithDefault(Duration("api_delay"), 0)}};
  return &m;
}

const Registrar kRegistrar({.key = "local", .order = 10, .message = LocalSchema, .active = true}, &LocalBackend::Make);

}  // namespace

}  // namespace tidepool::backends
