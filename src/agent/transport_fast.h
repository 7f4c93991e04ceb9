// The agent's stream over the fast protocol (common/fast_protocol.h): plain TCP to the server's
// port, one protobuf message per frame. No gRPC in the process, which is what lets
// `tidepool-agent` stay small (P9). Liveness: TCP keepalive and a user timeout, set from the
// agent's --keepalive as gRPC's keepalive pings were.
#pragma once

#include <memory>
#include <string>

#include "agent/connection.h"

namespace tidepool::agent {

std::unique_ptr<Transport> MakeFastTransport(const std::string& server, int keepalive_ms);

}  // namespace tidepool::agent
