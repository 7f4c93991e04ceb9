// The reasons an agent gives in TaskExited.reason (proto/tidepool/v1/agent.proto), shared by the
// agent that sends them and the server that acts on them.
#pragma once

namespace tidepool {

inline constexpr const char* kExitTimeout = "timeout";
inline constexpr const char* kExitCancelled = "cancelled";
// The agent itself was stopped (SIGTERM: its machine is going away) and stopped its tasks: the
// server counts them lost with their worker (retried as the loss rules say), not failed.
inline constexpr const char* kAgentStopped = "agent stopped";

}  // namespace tidepool
