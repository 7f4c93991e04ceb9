#include <fmt/format.h>

#include "backends/backend.h"

namespace tidepool::backends {

Registry& Registry::Global() {
  static Registry* r = new Registry();
  return *r;
}

void Registry::Register(const std::string& key, BackendFactory factory) { factories_[key] = std::move(factory); }

bool Registry::Has(const std::string& key) const { return factories_.count(key) > 0; }

Result<std::unique_ptr<Backend>> Registry::Create(const config::BackendConfig& cfg, const BackendContext& ctx) const {
  auto it = factories_.find(cfg.type);
  if (it == factories_.end()) {
    return Unimplemented(fmt::format("backend {} is not available in this version of Tidepool", cfg.type));
  }
  return it->second(cfg, ctx);
}

}  // namespace tidepool::backends
