// `tidepool-agent`: the agent alone (src/agent), for workers. It speaks the fast protocol and
// links no gRPC, which keeps an idle agent small (P9); for TLS, run `tidepool agent`.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "agent/agent_cli.h"

int main(int argc, char** argv) {
  CLI::App app("Tidepool agent: dial the server, prove who it is, run tasks (for TLS: `tidepool agent`)",
               "tidepool-agent");
  int rc = 0;
  tidepool::agent::DefineAgentCommand(&app, &rc, "tidepool-agent", nullptr);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    fmt::print("{}", app.help());
    return 0;
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "tidepool-agent: {}\nRun 'tidepool-agent --help' for usage.\n", e.what());
    return 2;
  }
  return rc;
}
