// The conformance suite against the `local` backend: agent processes on this machine.
#include <signal.h>

#include "../integration/harness.h"
#include "conformance.h"

namespace tidepool::conformance {
namespace {

BackendEnv LocalEnv() {
  BackendEnv env;
  env.name = "local";
  env.block = [](const Setup&, Variant v) {
    return v == Variant::kSlowCreate ? std::string("local: {api_delay: 3s}") : std::string("local: {}");
  };
  env.stop_from_outside = [](const Setup& s, const std::string& worker) {
    // The backend's own ledger says which process it is (pid + start time).
    for (const std::string& line : testing::Lines(testing::ReadAll(s.dir + "/data/backends/local/" + s.pool + ".ledger"))) {
      auto parts = testing::SplitWords(line);
      if (parts.size() >= 2 && parts[0] == worker) ::kill(-std::stoi(parts[1]), SIGKILL);
    }
  };
  env.failing_agent_binary = "/nonexistent/tidepool";
  env.failing_message = "/nonexistent/tidepool";
  env.failing_class = backends::ErrorClass::kBadRequest;
  return env;
}

INSTANTIATE_TEST_SUITE_P(Local, Conformance, ::testing::Values(LocalEnv()), EnvName);

}  // namespace
}  // namespace tidepool::conformance
