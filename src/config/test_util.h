// Helpers shared by the config tests (header only; not part of the library).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config/config.h"

namespace tidepool::config::testing {

// tests/data/config/REL, found from this header's own path so tests run from any build dir.
inline std::string Fixture(const std::string& rel) {
  std::string here = __FILE__;  // .../src/config/test_util.h
  std::string root = here.substr(0, here.rfind("/src/config/"));
  return root + "/tests/data/config/" + rel;
}

// An environment with exactly these variables.
inline EnvLookup Env(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

inline LoadResult Load(const std::string& yaml, const EnvLookup& env = Env()) {
  return LoadConfigString(yaml, "t.yaml", env);
}

inline std::vector<std::string> ErrorStrings(const LoadResult& r) {
  std::vector<std::string> out;
  for (const ConfigError& e : r.errors) out.push_back(e.ToString());
  return out;
}

}  // namespace tidepool::config::testing
