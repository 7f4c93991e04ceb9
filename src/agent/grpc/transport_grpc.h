// The agent's stream over gRPC (AgentService.Connect): what `tidepool agent` uses when the
// server speaks TLS (server.tls), where the fast protocol is not served. Only the full
// `tidepool` binary links this; `tidepool-agent` has no gRPC in it.
#pragma once

#include <memory>
#include <string>

#include "agent/agent.h"
#include "agent/connection.h"
#include "common/status.h"

namespace tidepool::agent {

// A transport to flags.server with flags' TLS files (their contents are read now: a missing file
// is an error here, not a retry loop later) and keepalive.
Result<std::unique_ptr<Transport>> MakeGrpcTransport(const AgentFlags& flags);

}  // namespace tidepool::agent
