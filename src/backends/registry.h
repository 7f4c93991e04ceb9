// Backends by config key. Each backend registers itself from its own folder with a static
// Registrar, which also registers its config block with the configuration layer
// (config/backend_schemas.h):
//
//   namespace {
//   const Registrar kRegistrar({.key = "mine", .order = 50, .message = MineSchema, .active = true,
//                               .check = CheckMine},
//                              &MineBackend::Make);
//   }
//
// Nothing refers to that object, so the library is linked whole (src/CMakeLists.txt,
// `tidepool_backends_all`); config's BackendRegistry tests prove it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "config/backend_schemas.h"

namespace tidepool::backends {

class Registry {
 public:
  static Registry& Global();
  void Register(const std::string& key, BackendFactory factory);
  bool Has(const std::string& key) const;
  Result<std::unique_ptr<Backend>> Create(const config::BackendConfig& cfg, const BackendContext& ctx) const;

 private:
  std::map<std::string, BackendFactory> factories_;
};

// Registers a backend's config block and, when given, its factory (a backend whose config is
// loaded but which is not built yet registers no factory).
class Registrar {
 public:
  Registrar(config::BackendSchema schema, BackendFactory factory);
};

}  // namespace tidepool::backends
