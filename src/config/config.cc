// The small members of config.h's structs, and the built-in default.
#include "config/config.h"

#include <algorithm>

#include "common/crypto.h"
#include "common/strings.h"
#include "config/decode.h"

namespace tidepool::config {

std::string ConfigError::ToString() const {
  std::string where = FormatPos(pos);
  return where.empty() ? message : where + ": " + message;
}

namespace {

// The value at a dotted path such as "tailscale_config.pre_auth_key" or "a[1].b"; nullptr when
// absent.
nlohmann::json* Resolve(nlohmann::json* root, const std::string& path) {
  nlohmann::json* node = root;
  for (const std::string& part : Split(path, '.')) {
    std::string name = part;
    std::vector<size_t> indexes;
    while (!name.empty() && name.back() == ']') {
      size_t open = name.rfind('[');
      if (open == std::string::npos) return nullptr;
      indexes.insert(indexes.begin(), std::stoul(name.substr(open + 1)));
      name.resize(open);
    }
    if (!node->is_object() || !node->contains(name)) return nullptr;
    node = &(*node)[name];
    for (size_t i : indexes) {
      if (!node->is_array() || i >= node->size()) return nullptr;
      node = &(*node)[i];
    }
  }
  return node;
}

}  // namespace

nlohmann::json BackendConfig::Redacted() const {
  nlohmann::json out = fields;
  for (const std::string& path : secret_paths) {
    nlohmann::json* value = Resolve(&out, path);
    // An empty secret stays empty: that it falls back to the environment is worth seeing.
    if (value != nullptr && !(value->is_string() && value->get<std::string>().empty())) {
      *value = "<redacted>";
    }
  }
  return out;
}

std::string BackendConfig::Fingerprint() const {
  // Over the redacted form: rotating a controller credential (api_token) is not a new worker
  // template, and no secret-derived bytes ever leave the process. json dumps objects with sorted
  // keys, so equal configs hash equally.
  std::string canonical = type + "\n" + Redacted().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return HmacSha256Hex("tidepool-backend-fingerprint", canonical).substr(0, 16);
}

std::vector<std::string> SecretValues(const Config& config) {
  std::vector<std::string> out;
  if (!config.server.metrics_token.empty()) out.push_back(config.server.metrics_token);
  for (const PoolConfig& pool : config.pools) {
    const BackendConfig* b = pool.backend();
    if (!b) continue;
    nlohmann::json fields = b->fields;
    for (const std::string& path : b->secret_paths) {
      const nlohmann::json* value = Resolve(&fields, path);
      if (value && value->is_string() && !value->get<std::string>().empty()) out.push_back(value->get<std::string>());
    }
  }
  return out;
}

const PoolConfig* Config::FindPool(const std::string& name) const {
  auto it = std::find_if(pools.begin(), pools.end(),
                         [&](const PoolConfig& p) { return p.name == name; });
  return it == pools.end() ? nullptr : &*it;
}

const PoolConfig* Config::DefaultPool() const {
  auto it = std::find_if(pools.begin(), pools.end(),
                         [](const PoolConfig& p) { return p.is_default; });
  return it == pools.end() ? nullptr : &*it;
}

Config DefaultConfig(int cpus) {
  cpus = std::max(cpus, 1);
  Config config;
  config.source = "<built-in default>";
  PoolConfig pool;
  pool.name = "local";
  pool.is_default = true;
  pool.pos = {config.source, 0, 0};
  AutoscalerConfig a;
  a.backend.type = "local";
  a.backend.fields = {{"boot_delay", 0}, {"api_delay", 0}};  // what the loader stores for `local: {}`
  a.backend.pos = pool.pos;
  a.max_agents = cpus;
  a.min_agents = 0;
  a.min_idle_agents = 0;
  // Deliberately cpus, not 0. Under Velda's rules (kept exactly) an idle worker above
  // max_idle_agents is removed at once, so with 0 idle_decay would never apply. With cpus an
  // idle worker stays warm for idle_decay (so back-to-back `vrun`s reuse it) and is then
  // released.
  a.max_idle_agents = cpus;
  a.idle_decay = std::chrono::seconds(60);
  pool.auto_scaler = std::move(a);
  config.pools.push_back(std::move(pool));
  return config;
}

const char* WorkspaceModeName(WorkspaceConfig::Mode m) {
  switch (m) {
    case WorkspaceConfig::Mode::kSync: return "sync";
    case WorkspaceConfig::Mode::kShared: return "shared";
    case WorkspaceConfig::Mode::kNone: return "none";
  }
  return "?";
}

}  // namespace tidepool::config
