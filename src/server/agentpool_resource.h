// The AgentPool custom resource (tidepool.dev/v1, deploy/kubernetes/crd.yaml) as the server
// reads and writes it. Pure: no I/O; the time is an argument.
//
// Reading. An AgentPool's `spec` is a pool entry exactly as under `agent_pools` in the config
// file, its name the resource's `metadata.name`. It goes through the same loader and the same
// checks (config/config.h, ${VAR} from the server's environment); an error names the field as
// the operator wrote it ("spec.auto_scaler.max_agents: ...") and the resource gets it as a
// condition instead of a pool.
//
// Writing. The `status` subresource:
//   workers             count by state (requested, starting, idle, busy, draining, deleting,
//                       lost, unknown)
//   queued              tasks waiting for the pool
//   lastError           the pool's last error ("" when none), lastErrorTime when it was first seen
//   observedGeneration  the spec generation this status is about
//   conditions          Ready     True: the spec is valid and the pool can create workers
//                                 (False: InvalidSpec, CoolingDown after a failed create, Held)
//                       ScalingUp True: workers are requested or starting
//                       Degraded  True: an invalid spec or a last error (its message)
// A condition's lastTransitionTime changes only when its status does (the previous status is
// an argument), as metav1.Condition requires; Kubernetes' own controllers do the same.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "tidepool/v1/pool.pb.h"

namespace tidepool::server {

struct DeclaredPool {
  std::string name;        // metadata.name
  std::string uid;         // metadata.uid
  int64_t generation = 0;  // metadata.generation
  bool deleting = false;   // metadata.deletionTimestamp is set
  std::optional<config::PoolConfig> config;  // set iff `error` is empty
  std::string error;                         // why the spec is not a pool
};

// `env` expands ${VAR} in the spec as in a config file.
DeclaredPool ReadAgentPool(const nlohmann::json& object, const config::EnvLookup& env);

// The status to write for `declared` (its pool's snapshot, or nullptr when there is none), given
// the status the resource has now (null or {} when it has none) and the time (Unix ms).
nlohmann::json AgentPoolStatus(const DeclaredPool& declared, const v1::Pool* pool, const nlohmann::json& previous,
                               int64_t now_ms);

}  // namespace tidepool::server
