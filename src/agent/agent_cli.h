// The agent's command line, one definition for `tidepool agent` and `tidepool-agent`: options,
// their $TIDEPOOL_* defaults, checks, then RunAgent with the transport that fits.
//
// Without TLS the agent speaks the fast protocol (transport_fast.h). With TLS (--tls-ca,
// --tls-cert or their variables) it needs gRPC, which only `tidepool` links: it passes a maker
// for that transport; `tidepool-agent` passes none and refuses TLS with a clear error.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "agent/agent.h"
#include "agent/connection.h"
#include "common/status.h"

namespace tidepool::agent {

using TlsTransportMaker = std::function<Result<std::unique_ptr<Transport>>(const AgentFlags&)>;

// Adds the options to `app` (a subcommand or a program's own app); its callback runs the agent
// and sets *rc to the exit status. `program` names it in error messages.
void DefineAgentCommand(CLI::App* app, int* rc, std::string program, TlsTransportMaker tls);

// For `tidepool agent ARGS...` (args as main got them): when no TLS is asked for and
// `tidepool-agent` is installed beside this executable, replaces this process with it, same
// arguments, same environment — the agent then holds no gRPC (P9). Returns if it did not.
void ExecLeanAgentIfPlain(const std::vector<std::string>& args);

}  // namespace tidepool::agent
