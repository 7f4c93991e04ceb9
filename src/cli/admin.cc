// tidepool server|up|down|agent, tidepool config validate
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "agent/agent_cli.h"
#include "backends/registry.h"
#include "agent/grpc/transport_grpc.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "common/duration.h"
#include "common/fs.h"
#include "common/process.h"
#include "common/strings.h"
#include "config/config.h"
#include "server/server.h"

namespace tidepool::cli {

namespace {

void AddServerFlags(CLI::App* sub, server::ServerFlags* f) {
  sub->add_option("--config", f->config_path, "configuration file, or a directory of *.yaml (default: built-in)");
  sub->add_option("--listen", f->listen, "HOST:PORT for clients and agents (default 127.0.0.1:7700)");
  sub->add_option("--data-dir", f->data_dir, "store, logs, pid file, secret (default ~/.local/share/tidepool)");
  sub->add_option("--db", f->db, "sqlite:PATH or a postgresql:// URL");
  sub->add_option("--metrics-listen", f->metrics_listen, "HOST:PORT for Prometheus /metrics");
  sub->add_option("--log-level", f->log_level, "trace|debug|info|warn|error")->default_str("info");
  sub->add_option("--k8s-pools", f->k8s_pools,
                  "NAMESPACE: its AgentPool resources are pools too (reached in-cluster or through $KUBECONFIG)");
  sub->add_option("--worker-lost-grace", f->worker_lost_grace,
                  "how long a disconnected worker's tasks wait for it before they are requeued or fail")
      ->default_str("60s");
  sub->add_option("--heartbeat-interval", f->heartbeat_interval,
                  "how often agents send a heartbeat; a connection silent for 3 intervals is closed")
      ->default_str("5s");
  sub->add_option("--max-heartbeat-rate", f->max_heartbeat_rate,
                  "heartbeats per second the server asks for from all agents together: with many agents each "
                  "beats less often than --heartbeat-interval (0 = no cap)")
      ->default_str("250")
      ->check(CLI::Range(0, 1000000));
  sub->add_option("--max-queued-tasks", f->max_queued_tasks,
                  "the most unfinished (pending, queued or running) tasks the server holds; a submission over it "
                  "is refused (0 = no cap)")
      ->default_str("200000")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-queued-tasks-per-user", f->max_queued_tasks_per_user,
                  "the most unfinished tasks one user may have (0 = no cap)")
      ->default_str("50000")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-queued-bytes", f->max_queued_bytes,
                  "the most bytes of task specs (command, environment, ...) the server's unfinished tasks may hold; "
                  "a -N group counts each shard (0 = no cap)")
      ->default_str("1GiB");
  sub->add_option("--max-queued-bytes-per-user", f->max_queued_bytes_per_user,
                  "the same, for one user's unfinished tasks (0 = no cap)")
      ->default_str("256MiB");
  sub->add_option("--max-spec-bytes", f->max_spec_bytes,
                  "the most bytes of command and environment one task may have (at most 8MiB)")
      ->default_str("1MiB");
}

std::vector<std::string> ServerArgs(const server::ServerFlags& f) {
  std::vector<std::string> a = {SelfExe(), "server"};
  auto add = [&](const char* flag, const std::string& v) {
    if (!v.empty()) {
      a.push_back(flag);
      a.push_back(v);
    }
  };
  // Relative paths must survive the daemon's own working directory.
  auto absolute = [](const std::string& p) {
    if (p.empty() || p[0] == '/') return p;
    char buf[4096];
    return std::string(getcwd(buf, sizeof(buf)) ? buf : ".") + "/" + p;
  };
  add("--config", absolute(f.config_path));
  add("--listen", f.listen);
  add("--data-dir", absolute(f.data_dir));
  add("--db", f.db);
  add("--metrics-listen", f.metrics_listen);
  add("--log-level", f.log_level);
  add("--worker-lost-grace", f.worker_lost_grace);
  add("--heartbeat-interval", f.heartbeat_interval);
  if (f.max_heartbeat_rate >= 0) add("--max-heartbeat-rate", std::to_string(f.max_heartbeat_rate));
  if (f.max_queued_tasks >= 0) add("--max-queued-tasks", std::to_string(f.max_queued_tasks));
  if (f.max_queued_tasks_per_user >= 0) add("--max-queued-tasks-per-user", std::to_string(f.max_queued_tasks_per_user));
  add("--max-queued-bytes", f.max_queued_bytes);
  add("--max-queued-bytes-per-user", f.max_queued_bytes_per_user);
  add("--max-spec-bytes", f.max_spec_bytes);
  add("--k8s-pools", f.k8s_pools);
  return a;
}

// True if a live server holds the data dir's pid-file lock.
bool ServerRunning(const std::string& data_dir, pid_t* pid) {
  int fd = ::open(server::PidFile(data_dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool locked = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
  if (!locked) ::flock(fd, LOCK_UN);
  ::close(fd);
  if (locked && pid) {
    auto text = ReadFile(server::PidFile(data_dir));
    *pid = text.ok() ? std::atoi(std::string(Trim(*text)).c_str()) : 0;
  }
  return locked;
}

std::string Tail(const std::string& path, size_t lines) {
  auto text = ReadFile(path);
  if (!text.ok()) return "";
  auto all = Split(*text, '\n');
  if (!all.empty() && all.back().empty()) all.pop_back();
  size_t from = all.size() > lines ? all.size() - lines : 0;
  return Join(std::vector<std::string>(all.begin() + static_cast<long>(from), all.end()), "\n");
}

int Up(const server::ServerFlags& flags) {
  std::optional<server::Settings> s = server::ResolveSettings(flags);
  if (!s) return kExitUsage;
  if (Status st = MakeDirs(s->data_dir, 0700); !st.ok()) {
    fmt::print(stderr, "tidepool: {}\n", st.message());
    return 1;
  }
  pid_t running = 0;
  if (ServerRunning(s->data_dir, &running)) {
    auto addr = ReadFile(server::AddrFile(s->data_dir));
    std::string a = addr.ok() ? std::string(Trim(*addr)) : "?";
    fmt::print(stderr, "tidepool: a server is already running (pid {}, data dir {})\n", running, s->data_dir);
    fmt::print("{}\n", a);
    return 0;
  }
  ::unlink(server::AddrFile(s->data_dir).c_str());
  SpawnOptions o;
  o.argv = ServerArgs(flags);
  o.env = CurrentEnvironment();
  o.stdout_path = server::LogFile(s->data_dir);
  o.stderr_path = o.stdout_path;
  o.new_session = true;
  SpawnResult r = Spawn(o);
  if (r.pid < 0) {
    fmt::print(stderr, "tidepool: cannot start the server: {}\n", r.message);
    return 1;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(r.pid, &status, WNOHANG) == r.pid) {
      fmt::print(stderr, "tidepool: the server did not start:\n{}\n", Tail(server::LogFile(s->data_dir), 20));
      return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
    }
    auto addr = ReadFile(server::AddrFile(s->data_dir));
    if (addr.ok() && !Trim(*addr).empty()) {
      ClientOptions co;
      co.server = std::string(Trim(*addr));
      if (s->config.server.tls) co.tls_ca = s->config.server.tls->cert;
      Client client(co);
      v1::ServerInfo info;
      auto ctx = client.Context();
      ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      if (client.pools().GetServerInfo(ctx.get(), {}, &info).ok() && info.pid() == r.pid) {
        fmt::print(stderr, "tidepool: server started (pid {}, data dir {}, log {})\n", r.pid, s->data_dir,
                   server::LogFile(s->data_dir));
        fmt::print("{}\n", co.server);
        return 0;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fmt::print(stderr, "tidepool: the server did not answer within 30 s; see {}\n", server::LogFile(s->data_dir));
  return 1;
}

// Agents of `local` pools run on this machine and outlive a server restart on purpose (an
// upgrade keeps their tasks running). `down` ends the session: they go too, found through the
// local backend's own ledger (pid + start time), each SIGTERMed and then SIGKILLed after the
// backend's grace, its tasks with it.
int StopLocalWorkers(const server::Settings& s) {
  int rc = 0;
  std::vector<std::thread> deletes;
  std::mutex mu;
  size_t stopped = 0;
  for (const config::PoolConfig& pc : s.config.pools) {
    const config::BackendConfig* bc = pc.backend();
    if (!bc || bc->type != "local") continue;
    backends::BackendContext ctx{pc.name, s.data_dir, "", "", 1};
    auto backend = backends::Registry::Global().Create(*bc, ctx);
    if (!backend.ok()) continue;
    auto listed = (*backend)->List(backends::Clock::now() + (*backend)->CallTimeout());
    if (!listed.ok()) {
      fmt::print(stderr, "tidepool: pool {}: cannot list its workers: {}\n", pc.name, listed.status().message());
      rc = 1;
      continue;
    }
    std::shared_ptr<backends::Backend> b = std::move(backend).value();
    for (const backends::ListedWorker& w : *listed) {
      deletes.emplace_back([b, name = w.name, pool = pc.name, &mu, &stopped, &rc] {
        Status st = b->Delete(name, backends::Clock::now() + b->CallTimeout());
        std::lock_guard l(mu);
        if (st.ok()) {
          stopped++;
        } else {
          fmt::print(stderr, "tidepool: pool {}: cannot stop worker {}: {}\n", pool, name, st.message());
          rc = 1;
        }
      });
    }
  }
  for (std::thread& t : deletes) t.join();
  if (stopped > 0) fmt::print(stderr, "tidepool: stopped {} local worker{}\n", stopped, stopped == 1 ? "" : "s");
  return rc;
}

int Down(const server::ServerFlags& flags) {
  std::optional<server::Settings> s = server::ResolveSettings(flags);
  if (!s) return kExitUsage;
  pid_t pid = 0;
  if (!ServerRunning(s->data_dir, &pid) || pid <= 0) {
    fmt::print(stderr, "tidepool: no server is running with data dir {}\n", s->data_dir);
    return 1;
  }
  ::kill(pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ServerRunning(s->data_dir, nullptr)) {
    if (std::chrono::steady_clock::now() > deadline) {
      fmt::print(stderr, "tidepool: server pid {} did not stop within 30 s\n", pid);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fmt::print(stderr, "tidepool: server stopped (pid {})\n", pid);
  return StopLocalWorkers(*s);
}

int Validate(const std::string& path) {
  config::LoadResult r = config::LoadConfigPath(path);
  if (!r.errors.empty()) {
    for (const auto& e : r.errors) fmt::print(stderr, "{}\n", e.ToString());
    return kExitUsage;
  }
  fmt::print("{}", config::Summarize(*r.config));
  return 0;
}

}  // namespace

void AddAdminCommands(CLI::App& app, int* rc) {
  {
    auto f = std::make_shared<server::ServerFlags>();
    CLI::App* sub = app.add_subcommand("server", "Run the server in the foreground");
    AddServerFlags(sub, f.get());
    sub->callback([f, rc] { *rc = server::RunServer(*f); });
  }
  {
    auto f = std::make_shared<server::ServerFlags>();
    CLI::App* sub = app.add_subcommand("up", "Start a server in the background, wait until it answers, print its address");
    AddServerFlags(sub, f.get());
    sub->callback([f, rc] { *rc = Up(*f); });
  }
  {
    auto f = std::make_shared<server::ServerFlags>();
    CLI::App* sub = app.add_subcommand("down", "Stop the server started by `up`");
    sub->add_option("--data-dir", f->data_dir, "its data dir");
    sub->add_option("--config", f->config_path, "its configuration (to find server.data_dir)");
    sub->callback([f, rc] { *rc = Down(*f); });
  }
  {
    CLI::App* sub = app.add_subcommand("agent", "Run a worker's agent: dial the server and run tasks");
    agent::DefineAgentCommand(sub, rc, "tidepool agent", agent::MakeGrpcTransport);
  }
  {
    CLI::App* cfg = app.add_subcommand("config", "Configuration tools");
    cfg->require_subcommand(1);
    auto path = std::make_shared<std::string>();
    CLI::App* sub = cfg->add_subcommand("validate", "Check a configuration: a summary, or FILE:LINE:COL errors and exit 2");
    sub->add_option("FILE", *path, "YAML file or directory")->required();
    sub->callback([path, rc] { *rc = Validate(*path); });
  }
  AddAdminStoreCommands(app, rc);
}

}  // namespace tidepool::cli
