// The backend conformance suite: what every backend must do, run against the real thing (Velda's
// backend_testing scenarios, and then some). Each backend adds one file here that describes how
// to configure it (`BackendEnv`) and instantiates the suite with it:
//
//   INSTANTIATE_TEST_SUITE_P(Mine, Conformance, ::testing::Values(MineEnv()), EnvName);
//
// The world is real: a real `tidepool server` with a static pool `conf` (no backend of its own),
// and the backend under test made in this process from its YAML block through the real config
// loader and backend registry. Its agents must dial that server with the name the backend
// answered and the pool's join token (which `CreateRequest::token_for` and `token_command` hand
// out): a worker the server lists as connected under that name proves both.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "backends/backend.h"

namespace tidepool::conformance {

// What a backend's environment knows about the test it runs in.
struct Setup {
  std::string dir;             // scratch space for the backend's state and scripts
  std::string server_address;  // what agents dial
  std::string pool;            // the pool they join
  std::string agent_binary;    // the `tidepool` to start as the agent
  std::string token_command;   // prints the token for the name given as its last argument
  std::shared_ptr<void> world; // what BackendEnv::world made (hosts, networks), or nullptr
};

enum class Variant {
  kNormal,
  kSlowCreate,  // a create that answers only a while after its agent was started (a slow API)
  kFailing,     // every create fails, saying `failing_message`
};

struct BackendEnv {
  std::string name;  // for test names
  // The backend's block, as under `backend:` in a pool ("local: {api_delay: 2s}").
  std::function<std::string(const Setup&, Variant)> block;
  // Stops a worker from outside, as a cloud console or `scancel` would, leaving its record.
  std::function<void(const Setup&, const std::string& worker)> stop_from_outside;
  // For kFailing, the agent program the backend is given instead of the real one ("" = the real).
  std::string failing_agent_binary;
  // What a failing create's error must contain: the infrastructure's own words.
  std::string failing_message;
  // The class the failing create must carry.
  backends::ErrorClass failing_class = backends::ErrorClass::kTransient;
  // Optional: makes what the backend reaches (SSH hosts on their own network) before the server
  // starts. Sets *listen to the address the server must listen on ("" = the default), or *skip
  // to why it cannot be made here (the test is then skipped). Held in Setup::world.
  std::function<std::shared_ptr<void>(std::string* listen, std::string* skip)> world;
};

inline void PrintTo(const BackendEnv& env, std::ostream* os) { *os << env.name; }

inline std::string EnvName(const ::testing::TestParamInfo<BackendEnv>& info) { return info.param.name; }

class Conformance : public ::testing::TestWithParam<BackendEnv> {};

}  // namespace tidepool::conformance
