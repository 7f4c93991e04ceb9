// What the ssh backend runs on a host: POSIX sh scripts, each one round trip, given to the
// remote shell as ssh's command (values shell-quoted; no secret ever in them: the token travels on
// stdin into a 0600 file).
//
// On a host, as the ssh user (relative paths are below its home):
//   AGENT_PATH                       a symlink to the installed bundle's agent
//   dirname(AGENT_PATH)/.tidepool-agent-VERSION/   the bundle (scripts/agent_bundle.sh)
//   .tidepool/run/POOL/NAME.env      0600: TIDEPOOL_SERVER, _POOL, _WORKER_NAME, _WORKER_TOKEN, ...
//   .tidepool/run/POOL/NAME.pid      the agent's pid; the agent's command line names NAME.env,
//                                    which is how a pid is known to still be that agent
//   .tidepool/run/POOL/NAME.log      its output
#pragma once

#include <map>
#include <string>
#include <vector>

namespace tidepool::backends::ssh {

struct Bundle {
  std::string dir;      // the local agent-bundle/ folder
  std::string version;  // its VERSION
  std::string needs;    // its NEEDS ("GLIBC_2.36")
};

struct StartArgs {
  std::string pool, name, agent_path;
  std::map<std::string, std::string> labels;
};

// Prints NEED-INSTALL (and starts nothing) when the agent is absent or of another version;
// fails, naming both versions, when the host's glibc is older than the bundle needs; otherwise
// starts the agent detached (unless that worker's agent already runs) and prints STARTED PID.
// Its stdin is the env file.
std::string StartScript(const Bundle& b, const StartArgs& a);
// Its stdin is the bundle as a tar: unpacked beside, checked against MANIFEST, moved into place,
// and AGENT_PATH pointed at it.
std::string InstallScript(const Bundle& b, const std::string& agent_path);
// Prints INSTALLED when AGENT_PATH is the bundle's VERSION, else NEED-INSTALL (and checks the
// host's glibc, as StartScript does).
std::string InstalledScript(const Bundle& b, const std::string& agent_path);
// Stops exactly that worker's agent (TERM, then KILL after `grace_s`), which stops its tasks.
std::string StopScript(const std::string& pool, const std::string& name, int grace_s);
// One line per worker of the pool on the host: "NAME running" or "NAME stopped".
std::string ListScript(const std::string& pool);

// The env file's text.
std::string EnvFile(const std::map<std::string, std::string>& env);

}  // namespace tidepool::backends::ssh
