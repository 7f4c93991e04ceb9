#include "agent/agent_cli.h"

#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

#include "agent/transport_fast.h"
#include "common/duration.h"
#include "common/fs.h"
#include "common/strings.h"
#include "common/time.h"

namespace tidepool::agent {

namespace {

constexpr int kExitUsage = 2;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

bool WantsTls(const AgentFlags& f) { return !f.tls_ca.empty() || !f.tls_cert.empty(); }

struct Parsed {
  AgentFlags flags;
  std::vector<std::string> labels;
  int slots = 0;
  std::string keepalive;
  std::string env_file;
  std::string ends_at;
  std::string drain_before;
};

// Applies a file of KEY=VALUE lines to the environment, as if they had been set there: how a
// backend that starts the agent over SSH hands it the server, name and token without a command
// line that `ps` shows (a 0600 file). Blank lines and lines starting with '#' are skipped. An
// error names the file and line.
int ApplyEnvFile(const std::string& program, const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) {
    fmt::print(stderr, "{}: --env-file {}: {}\n", program, path, text.status().message());
    return kExitUsage;
  }
  int line_no = 0;
  for (const std::string& line : Split(*text, '\n')) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "{}: {}:{}: expected KEY=VALUE\n", program, path, line_no);
      return kExitUsage;
    }
    ::setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 1);
  }
  return 0;
}

// Fills what the command line left out from the environment; 0, or the exit status of a usage error.
int Complete(const std::string& program, Parsed& p) {
  AgentFlags& f = p.flags;
  if (p.env_file.empty()) p.env_file = EnvOr("TIDEPOOL_AGENT_ENV_FILE", "");
  if (!p.env_file.empty()) {
    if (int usage = ApplyEnvFile(program, p.env_file)) return usage;
  }
  if (f.server.empty()) f.server = EnvOr("TIDEPOOL_SERVER", "127.0.0.1:7700");
  if (f.pool.empty()) f.pool = EnvOr("TIDEPOOL_POOL", "");
  if (f.name.empty()) f.name = EnvOr("TIDEPOOL_WORKER_NAME", EnvOr("AGENT_NAME", ""));
  if (f.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    f.name = Split(host, '.')[0];
  }
  if (f.token.empty()) f.token = EnvOr("TIDEPOOL_WORKER_TOKEN", "");
  if (f.tls_ca.empty()) f.tls_ca = EnvOr("TIDEPOOL_TLS_CA", "");
  if (f.tls_cert.empty()) f.tls_cert = EnvOr("TIDEPOOL_TLS_CERT", "");
  if (f.tls_key.empty()) f.tls_key = EnvOr("TIDEPOOL_TLS_KEY", "");
  if (f.run_tasks_as.empty()) f.run_tasks_as = EnvOr("TIDEPOOL_RUN_TASKS_AS", "");
  if (f.task_uids.empty()) f.task_uids = EnvOr("TIDEPOOL_TASK_UIDS", "");
  if (f.task_uid_map.empty()) f.task_uid_map = EnvOr("TIDEPOOL_TASK_UID_MAP", "");
  if (f.cache_dir.empty()) f.cache_dir = EnvOr("TIDEPOOL_CACHE_DIR", "");
  if (f.cache_dir.empty()) {
    f.cache_dir = ::geteuid() == 0 ? std::string("/var/cache/tidepool/workspace")
                                   : EnvOr("XDG_CACHE_HOME", EnvOr("HOME", "/tmp") + "/.cache") + "/tidepool/workspace";
  }
  f.slots = p.slots > 0 ? p.slots : std::atoi(EnvOr("TIDEPOOL_SLOTS", "1").c_str());
  if (f.slots <= 0) f.slots = 1;
  if (f.pool.empty()) {
    fmt::print(stderr, "{}: no pool given (--pool or $TIDEPOOL_POOL)\n", program);
    return kExitUsage;
  }
  for (const auto& l : p.labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "{}: --label {}: expected K=V\n", program, l);
      return kExitUsage;
    }
    f.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  std::string ends = !p.ends_at.empty() ? p.ends_at : EnvOr("TIDEPOOL_AGENT_ENDS_AT", "");
  if (!ends.empty()) {
    char* stop = nullptr;
    long long s = std::strtoll(ends.c_str(), &stop, 10);
    if (!stop || *stop || s <= 0) {
      fmt::print(stderr, "{}: --ends-at {}: expected seconds since the epoch\n", program, ends);
      return kExitUsage;
    }
    f.ends_at_ms = s * 1000;
    std::string before = !p.drain_before.empty() ? p.drain_before : EnvOr("TIDEPOOL_AGENT_DRAIN_BEFORE", "10m");
    auto d = ParseDuration(before);
    if (!d.ok() || d->count() < 0) {
      fmt::print(stderr, "{}: --drain-before {}: {}\n", program, before, d.ok() ? "must not be negative" : d.status().message());
      return kExitUsage;
    }
    f.drain_at_ms = f.ends_at_ms - d->count();
    // A walltime shorter than drain_before (a partition's default limit, say) would drain the
    // worker as it starts, and its replacement too: take tasks for the first half of it instead.
    const int64_t now = NowUnixMs();
    if (f.drain_at_ms <= now && f.ends_at_ms > now) {
      f.drain_at_ms = now + (f.ends_at_ms - now) / 2;
      fmt::print(stderr, "{}: the walltime ends in {} s, sooner than --drain-before {}; taking tasks for {} s\n", program,
                 (f.ends_at_ms - now) / 1000, before, (f.drain_at_ms - now) / 1000);
    }
  }
  std::string k = !p.keepalive.empty() ? p.keepalive : EnvOr("TIDEPOOL_KEEPALIVE", "");
  if (!k.empty()) {
    auto d = ParseDuration(k);
    if (!d.ok() || d->count() < 100) {
      fmt::print(stderr, "{}: --keepalive {}: {}\n", program, k, d.ok() ? "at least 100ms" : d.status().message());
      return kExitUsage;
    }
    f.keepalive_ms = static_cast<int>(d->count());
  }
  return 0;
}

}  // namespace

void DefineAgentCommand(CLI::App* app, int* rc, std::string program, TlsTransportMaker tls) {
  auto p = std::make_shared<Parsed>();
  AgentFlags& f = p->flags;
  app->add_option("--server", f.server, "HOST:PORT (default $TIDEPOOL_SERVER)");
  app->add_option("--pool", f.pool, "pool to join (default $TIDEPOOL_POOL)");
  app->add_option("--name", f.name, "worker name (default $TIDEPOOL_WORKER_NAME, $AGENT_NAME, short hostname)");
  app->add_option("--token", f.token, "worker or join token (default $TIDEPOOL_WORKER_TOKEN)");
  app->add_option("--slots", p->slots, "tasks at once (default $TIDEPOOL_SLOTS, else 1)");
  app->add_option("--work-dir", f.work_dir, "directory for tasks without one");
  app->add_option("--cache-dir", f.cache_dir,
                  "workspace content cache (default $TIDEPOOL_CACHE_DIR, else /var/cache/tidepool/workspace as root, "
                  "~/.cache/tidepool/workspace otherwise)");
  app->add_option("--label", p->labels, "K=V (repeatable)")->allow_extra_args(false);
  app->add_option("--tls-ca", f.tls_ca, "use TLS, trusting this CA certificate (default $TIDEPOOL_TLS_CA)");
  app->add_option("--tls-cert", f.tls_cert, "this agent's certificate, for mTLS (default $TIDEPOOL_TLS_CERT)");
  app->add_option("--tls-key", f.tls_key, "this agent's key, for mTLS (default $TIDEPOOL_TLS_KEY)");
  app->add_option("--run-tasks-as", f.run_tasks_as,
                  "owner: each task owner's own Unix user (needs root; the default for root); agent: this agent's user "
                  "($TIDEPOOL_RUN_TASKS_AS)");
  app->add_option("--task-uids", f.task_uids, "FIRST-LAST uids for task owners (default 1900000000-1900999999)");
  app->add_option("--task-uid-map", f.task_uid_map, "owner to uid record, shared by the host's agents "
                  "(default /var/lib/tidepool/task-uids)");
  app->add_option("--env-file", p->env_file,
                  "KEY=VALUE lines read into the environment first, e.g. TIDEPOOL_WORKER_TOKEN from a 0600 file "
                  "($TIDEPOOL_AGENT_ENV_FILE)");
  app->add_option("--ends-at", p->ends_at,
                  "walltime: when this machine is taken away, in seconds since the epoch, e.g. a Slurm job's end "
                  "($TIDEPOOL_AGENT_ENDS_AT)");
  app->add_option("--drain-before", p->drain_before,
                  "with --ends-at: take no new tasks this long before it (default $TIDEPOOL_AGENT_DRAIN_BEFORE, else 10m)");
  app->add_option("--log-level", f.log_level, "trace|debug|info|warn|error")->default_str("info");
  app->add_option("--keepalive", p->keepalive, "ping the server this often when idle (default $TIDEPOOL_KEEPALIVE, else 60s)");
  app->callback([p, rc, program, tls] {
    if (int usage = Complete(program, *p)) {
      *rc = usage;
      return;
    }
    const AgentFlags& flags = p->flags;
    std::unique_ptr<Transport> transport;
    if (WantsTls(flags)) {
      if (!tls) {
        fmt::print(stderr, "{}: TLS (--tls-ca/--tls-cert, $TIDEPOOL_TLS_CA/$TIDEPOOL_TLS_CERT) needs `tidepool agent`\n",
                   program);
        *rc = kExitUsage;
        return;
      }
      auto made = tls(flags);
      if (!made.ok()) {
        fmt::print(stderr, "{}: {}\n", program, made.status().message());
        *rc = kExitUsage;
        return;
      }
      transport = std::move(made).value();
    } else {
      transport = MakeFastTransport(flags.server, flags.keepalive_ms);
    }
    *rc = RunAgent(flags, std::move(transport));
  });
}

void ExecLeanAgentIfPlain(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a.rfind("--tls-", 0) == 0) return;
  }
  if (!EnvOr("TIDEPOOL_TLS_CA", "").empty() || !EnvOr("TIDEPOOL_TLS_CERT", "").empty()) return;
  std::string lean = ProgramBeside(SelfExe(), "tidepool-agent");
  if (lean.empty()) return;
  std::vector<std::string> lean_args = {lean};
  lean_args.insert(lean_args.end(), args.begin() + 2, args.end());  // without "tidepool" "agent"
  std::vector<char*> argv;
  for (auto& a : lean_args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(lean.c_str(), argv.data());  // only returns on failure: run the agent in this process
}

}  // namespace tidepool::agent
