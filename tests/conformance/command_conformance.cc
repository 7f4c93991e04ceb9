// The conformance suite against the `command` backend, with scripts an operator could write:
// each worker is an agent process started detached on this machine, recorded by a pid file.
// A create holds its worker's lock until it answers, and stop takes that lock first: that is how
// scripts make "delete waits for a create still running" hold (docs/backends.md).
#include <signal.h>

#include <nlohmann/json.hpp>

#include "../integration/harness.h"
#include "conformance.h"

namespace tidepool::conformance {
namespace {

// Starts one agent called $name (set by the caller) in the background; its pid in $S/$name.pid.
std::string StartOne(const Setup& s) {
  return "tok=$($TIDEPOOL_WORKER_TOKEN_FOR \"$name\")\n"
         "TIDEPOOL_WORKER_NAME=$name TIDEPOOL_WORKER_TOKEN=$tok setsid " + s.agent_binary +
         " agent </dev/null >\"$S/$name.log\" 2>&1 9>&- &\n"
         "echo $! > \"$S/$name.pid\"\n";
}

std::string Block(const Setup& s, Variant v) {
  const std::string state = "S=" + s.dir + "/cmd; mkdir -p \"$S\"\n";
  const std::string rand = "$(od -An -N4 -tx1 /dev/urandom | tr -d ' \\n')";
  std::string start = state + "name=cmd-" + rand + "\nexec 9>\"$S/$name.lock\"; flock 9\n" + StartOne(s) +
                      (v == Variant::kSlowCreate ? "sleep 3\n" : "") + "echo \"$name\"\n";
  if (v == Variant::kFailing) {
    start = "echo 'zone conf-a has no capacity for n2-standard-8' >&2\n"
            "echo 'out_of_capacity: try another zone' >&2\nexit 1\n";
  }
  std::string stop = state +
                     "name=$1\nexec 9>\"$S/$name.lock\"; flock 9\n"
                     "[ -f \"$S/$name.pid\" ] || exit 0\n"
                     "pid=$(cat \"$S/$name.pid\")\n"
                     "kill -TERM -- -$pid 2>/dev/null\n"
                     "for i in $(seq 500); do [ -d /proc/$pid ] && [ \"$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)\" != Z ] "
                     "|| break; sleep 0.02; done\n"
                     "kill -KILL -- -$pid 2>/dev/null\n"
                     "rm -f \"$S/$name.pid\"\n";
  std::string list = state +
                     "for f in \"$S\"/*.pid; do [ -e \"$f\" ] || continue\n"
                     "  name=$(basename \"$f\" .pid); st=$(awk '{print $3}' /proc/$(cat \"$f\")/stat 2>/dev/null)\n"
                     "  if [ -n \"$st\" ] && [ \"$st\" != Z ]; then echo \"$name running\"; else echo \"$name stopped\"; fi\n"
                     "done\n";
  std::string batch = state + "for i in $(seq \"$1\"); do name=cmd-$2-$i-" + rand + "\n" + StartOne(s) +
                      "echo \"$name\"; done\n";
  nlohmann::json j = {{"start", start}, {"stop", stop}, {"list", list}, {"batch_start", batch}};
  // JSON is YAML: one flow mapping on one line.
  return "command: " + j.dump();
}

BackendEnv CommandEnv() {
  BackendEnv env;
  env.name = "command";
  env.block = Block;
  env.stop_from_outside = [](const Setup& s, const std::string& worker) {
    std::string pid = testing::ReadAll(s.dir + "/cmd/" + worker + ".pid");
    if (!pid.empty()) ::kill(-std::stoi(pid), SIGKILL);
  };
  env.failing_message = "zone conf-a has no capacity for n2-standard-8";
  env.failing_class = backends::ErrorClass::kOutOfCapacity;
  return env;
}

INSTANTIATE_TEST_SUITE_P(Command, Conformance, ::testing::Values(CommandEnv()), EnvName);

}  // namespace
}  // namespace tidepool::conformance
