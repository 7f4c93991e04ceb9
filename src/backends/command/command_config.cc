// The `command` block: its schema, and its registration by config key.
#include "backends/command/command_backend.h"
#include "backends/registry.h"

namespace tidepool::backends {

namespace {

using namespace config::schema::make;

const config::schema::Message* CommandSchema() {
  static const config::schema::Message m{
      "command",
      {
          Str("start", config::schema::kVerbatim),
          Str("stop", config::schema::kVerbatim),
          Str("list", config::schema::kVerbatim),
          Str("batch_start", config::schema::kVerbatim),
          WithDefault(Duration("timeout"), CommandBackend::kDefaultTimeout.count()),  // per call
      }};
  return &m;
}

const Registrar kRegistrar({.key = "command", .order = 20, .message = CommandSchema, .active = true},
                           &CommandBackend::Make);

}  // namespace

}  // namespace tidepool::backends
