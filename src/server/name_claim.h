// One name, one worker (issue 17): what to do with an agent's hello for a worker name another
// agent's connection already holds. Pure; the core gives it what it knows of the holder.
//
//   the same agent process (its instance id)      a reconnect: its old link is dead to it; the
//                                                 new one replaces it (tasks and acks carry over)
//   another agent, the holder silent for more     the holder's link is stale (its machine
//   than two of its heartbeat intervals           rebooted, a cut link TCP has not noticed): the
//                                                 newcomer takes over, as after a restart
//   another agent, the holder heard from          refused (ALREADY_EXISTS), naming the conflict;
//                                                 the holder keeps the name and the refused agent
//                                                 backs off (agent/connection.h)
// The newcomer's credentials are checked before this: only an agent that may be the worker learns
// that the name is taken.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tidepool::server {

struct NameHolderLink {
  std::string instance_id;  // the holding agent process's
  int64_t silent_ms = 0;    // since the server last heard from it (server/silence.h)
  int64_t heartbeat_ms = 0; // the interval it was told to beat at
};

enum class NameClaim { kFree, kReconnect, kReplaceStale, kConflict };

inline NameClaim JudgeNameClaim(const std::optional<NameHolderLink>& holder, std::string_view instance_id) {
  if (!holder) return NameClaim::kFree;
  if (!instance_id.empty() && instance_id == holder->instance_id) return NameClaim::kReconnect;
  if (holder->silent_ms > 2 * holder->heartbeat_ms) return NameClaim::kReplaceStale;
  return NameClaim::kConflict;
}

}  // namespace tidepool::server
