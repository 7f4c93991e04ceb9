// fuzz_config: any bytes as a configuration file. LoadConfigString must return errors, never
// crash, hang or leak; a config it accepts must summarize, and its backend blocks must redact
// and fingerprint.
//
// The environment is fixed (so ${VAR} expansion is deterministic): a few set variables, one set
// to a string that is itself YAML-ish, everything else unset.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "config/config.h"

using namespace tidepool::config;

namespace {

std::optional<std::string> FixedEnv(const std::string& name) {
  static const std::map<std::string, std::string> vars = {
      {"HOME", "/home/fuzz"},
      {"TOKEN", "s3cr3t"},
      {"EMPTY", ""},
      {"NUM", "42"},
      {"YAMLISH", "{a: [1, 2], b: \"${TOKEN}\"}"},
      {"DOLLAR", "$"},
  };
  auto it = vars.find(name);
  if (it == vars.end()) return std::nullopt;
  return it->second;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  LoadResult r = LoadConfigString(yaml, "fuzz.yaml", FixedEnv);
  if (r.config.has_value() != r.errors.empty()) {
    std::fprintf(stderr, "LoadConfigString: config %s but %zu errors\n", r.config ? "set" : "unset", r.errors.size());
    std::abort();
  }
  for (const ConfigError& e : r.errors) (void)e.ToString();
  if (!r.config) return 0;
  const Config& c = *r.config;
  std::string summary = Summarize(c);
  (void)summary;
  (void)c.DefaultPool();
  for (const PoolConfig& p : c.pools) {
    if (c.FindPool(p.name) == nullptr) {
      std::fprintf(stderr, "FindPool(%s) is null for a loaded pool\n", p.name.c_str());
      std::abort();
    }
    if (const BackendConfig* b = p.backend()) {
      (void)b->Redacted().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      (void)b->Fingerprint();
    }
  }
  return 0;
}
