#include "backends/ssh/remote.h"

#include <fmt/format.h>

#include "common/strings.h"

namespace tidepool::backends::ssh {

namespace {

std::string Q(const std::string& s) { return ShellQuote({s}); }

std::string RunDir(const std::string& pool) { return ".tidepool/run/" + pool; }

// `alive` is true when $pid is the agent started with $envfile.
const char* kAlive =
    "alive() { [ -n \"$pid\" ] && [ -r /proc/$pid/cmdline ] && tr '\\000' ' ' < /proc/$pid/cmdline 2>/dev/null | "
    "grep -qF -- \"$envfile\"; }\n";

}  // namespace

// Sets A (the agent path) and D (its bundle folder); prints NEED-INSTALL and exits 0 when that is
// not the bundle's VERSION; exits 3 when the host's glibc is older than the bundle needs.
static std::string CheckInstalled(const Bundle& b, const std::string& agent_path) {
  std::string need = b.needs.rfind("GLIBC_", 0) == 0 ? b.needs.substr(6) : b.needs;
  return fmt::format(
      "A={agent}; D=$(dirname \"$A\")/.tidepool-agent-{version}\n"
      "if [ \"$(cat \"$D/VERSION\" 2>/dev/null)\" != {version} ] || [ \"$(readlink \"$A\")\" != \"$D/tidepool-agent\" ]; then\n"
      "  echo NEED-INSTALL; exit 0\nfi\n"
      "have=$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2)\n"
      "if [ -n \"$have\" ] && ! printf '%s\\n%s\\n' {need} \"$have\" | sort -V -C; then\n"
      "  echo \"this host's glibc is $have; the agent needs {need} or newer\" >&2; exit 3\nfi\n",
      fmt::arg("agent", Q(agent_path)), fmt::arg("version", Q(b.version)), fmt::arg("need", Q(need)));
}

std::string StartScript(const Bundle& b, const StartArgs& a) {
  std::string labels;
  for (const auto& [k, v] : a.labels) labels += " --label " + Q(k + "=" + v);
  return fmt::format(
      "set -e\numask 077\n{check}"
      "R={run}; N={name}; mkdir -p \"$R\"\n"
      "envfile=\"$R/$N.env\"; pid=$(cat \"$R/$N.pid\" 2>/dev/null || true)\n{alive}"
      "if alive; then cat >/dev/null; echo STARTED $pid; exit 0; fi\n"
      "cat > \"$envfile\"\n"
      "setsid \"$A\" --env-file \"$envfile\"{labels} </dev/null >>\"$R/$N.log\" 2>&1 &\n"
      "pid=$!; echo $pid > \"$R/$N.pid\"\n"
      "sleep 0.05; if ! alive; then echo \"the agent exited at once:\" >&2; tail -n 5 \"$R/$N.log\" >&2; exit 1; fi\n"
      "echo STARTED $pid\n",
      fmt::arg("check", CheckInstalled(b, a.agent_path)), fmt::arg("run", Q(RunDir(a.pool))),
      fmt::arg("name", Q(a.name)), fmt::arg("alive", kAlive), fmt::arg("labels", labels));
}

std::string InstalledScript(const Bundle& b, const std::string& agent_path) {
  return "set -e\n" + CheckInstalled(b, agent_path) + "echo INSTALLED\n";
}

std::string InstallScript(const Bundle& b, const std::string& agent_path) {
  return fmt::format(
      "set -e\n"
      "A={agent}; D=$(dirname \"$A\")/.tidepool-agent-{version}; T=\"$D.tmp.$$\"\n"
      "mkdir -p \"$(dirname \"$A\")\"; rm -rf \"$T\"; mkdir -p \"$T\"\n"
      "tar -x -C \"$T\"\n"
      "if ! (cd \"$T\" && sha256sum --quiet -c MANIFEST >&2); then rm -rf \"$T\"; "
      "echo 'the agent bundle arrived damaged' >&2; exit 1; fi\n"
      "if [ \"$(cat \"$D/VERSION\" 2>/dev/null)\" = {version} ]; then rm -rf \"$T\"; else rm -rf \"$D\"; mv \"$T\" \"$D\"; fi\n"
      "ln -sfn \"$D/tidepool-agent\" \"$A.tmp.$$\"; mv -Tf \"$A.tmp.$$\" \"$A\"\n"
      "echo INSTALLED\n",
      fmt::arg("agent", Q(agent_path)), fmt::arg("version", Q(b.version)));
}

std::string StopScript(const std::string& pool, const std::string& name, int grace_s) {
  return fmt::format(
      "R={run}; N={name}; envfile=\"$R/$N.env\"\n"
      "pid=$(cat \"$R/$N.pid\" 2>/dev/null || true)\n{alive}"
      "if alive; then kill -TERM $pid 2>/dev/null || true; i=0\n"
      "  while alive && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done\n"
      "  if alive; then kill -KILL $pid 2>/dev/null || true; fi\n"
      "  while alive; do sleep 0.05; done\nfi\n"
      "rm -f \"$R/$N.pid\" \"$envfile\"\necho STOPPED\n",
      fmt::arg("run", Q(RunDir(pool))), fmt::arg("name", Q(name)), fmt::arg("alive", kAlive),
      fmt::arg("ticks", grace_s * 10));
}

std::string ListScript(const std::string& pool) {
  return fmt::format(
      "R={run}\n{alive}"
      "for f in \"$R\"/*.pid; do [ -e \"$f\" ] || continue\n"
      "  N=$(basename \"$f\" .pid); envfile=\"$R/$N.env\"; pid=$(cat \"$f\" 2>/dev/null || true)\n"
      "  if alive; then echo \"$N running\"; else echo \"$N stopped\"; fi\n"
      "done\necho LISTED\n",
      fmt::arg("run", Q(RunDir(pool))), fmt::arg("alive", kAlive));
}

std::string EnvFile(const std::map<std::string, std::string>& env) {
  std::string out;
  for (const auto& [k, v] : env) out += k + "=" + v + "\n";
  return out;
}

}  // namespace tidepool::backends::ssh
