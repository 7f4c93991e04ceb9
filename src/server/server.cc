#include "server/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "common/fs.h"
#include "common/logging.h"
#include "common/process.h"
#include "common/strings.h"
#include "common/time.h"
#include "metrics/http_endpoint.h"
#include "metrics/process.h"
#include "metrics/registry.h"
#include "server/core.h"
#include "server/k8s_pools.h"
#include "server/fast_service.h"
#include "server/services.h"
#include "server/web.h"
#include "store/store.h"

namespace tidepool::server {

std::string PidFile(const std::string& d) { return d + "/server.pid"; }
std::string AddrFile(const std::string& d) { return d + "/server.addr"; }
std::string LogFile(const std::string& d) { return d + "/server.log"; }

std::optional<Settings> ResolveSettings(const ServerFlags& flags) {
  Settings s;
  if (flags.config_path.empty()) {
    unsigned cpus = std::thread::hardware_concurrency();
    s.config = config::DefaultConfig(cpus ? static_cast<int>(cpus) : 1);
  } else {
    config::LoadResult r = config::LoadConfigPath(flags.config_path);
    if (!r.errors.empty()) {
      for (const auto& e : r.errors) fmt::print(stderr, "{}\n", e.ToString());
      fmt::print(stderr, "tidepool: configuration {} has {} error{}; not starting\n", flags.config_path,
                 r.errors.size(), r.errors.size() > 1 ? "s" : "");
      return std::nullopt;
    }
    s.config = std::move(*r.config);
  }
  s.data_dir = !flags.data_dir.empty() ? flags.data_dir
               : !s.config.server.data_dir.empty() ? s.config.server.data_dir
                                                   : DefaultDataDir();
  std::string db = !flags.db.empty() ? flags.db : s.config.server.db;
  if (db.empty()) {
    s.sqlite_path = s.data_dir + "/tidepool.db";
  } else if (db.rfind("sqlite:", 0) == 0) {
    s.sqlite_path = db.substr(7);
    if (s.sqlite_path.empty()) {
      fmt::print(stderr, "tidepool: --db sqlite: needs a path, e.g. sqlite:/var/lib/tidepool/tidepool.db\n");
      return std::nullopt;
    }
  } else if (db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0) {
    fmt::print(stderr, "tidepool: the PostgreSQL store is not supported by this version yet; use sqlite:PATH\n");
    return std::nullopt;
  } else {
    fmt::print(stderr, "tidepool: --db {}: expected sqlite:PATH or a postgresql:// URL\n", db);
    return std::nullopt;
  }
  s.listen = !flags.listen.empty() ? flags.listen
             : !s.config.server.listen.empty() ? s.config.server.listen
                                               : "127.0.0.1:7700";
  return s;
}

namespace {

// Holds an exclusive lock on the pid file for the life of the process: a second server on the
// same data dir is refused, and a killed server's lock vanishes with it.
// The locked pid file's fd; -2 when another server holds it; -1 with errno set when it cannot
// be written (a read-only filesystem, permissions, a full disk).
int LockPidFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -2;
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::write(fd, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

std::string HostOf(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  return colon == std::string::npos ? hostport : hostport.substr(0, colon);
}

}  // namespace

int RunServer(const ServerFlags& flags) {
  // Signals are taken by one thread with sigwait; block them before any other thread exists.
  sigset_t sigs = BlockStopSignals();
  signal(SIGPIPE, SIG_IGN);
  // A file size limit makes writes fail with EFBIG (then the store refuses work, store.h
  // Health()) instead of killing the server mid-commit.
  signal(SIGXFSZ, SIG_IGN);

  InitLogging(flags.log_level);
  std::optional<Settings> settings = ResolveSettings(flags);
  if (!settings) return 2;
  for (const auto& f : settings->config.inactive) {
    spdlog::warn("{}:{}:{}: {}{} is set, but {} is not yet a supported feature of this version", f.pos.file,
                 f.pos.line, f.pos.column, f.pool.empty() ? "" : "pool " + f.pool + ": ", f.field, f.feature);
  }
  if (Status s = MakeDirs(settings->data_dir, 0700); !s.ok()) {
    fmt::print(stderr, "tidepool: {}; choose a data dir this user may create and write (--data-dir)\n", s.message());
    return 1;
  }
  // An existing data dir keeps the mode its owner gave it; say so if others can read into it.
  if (struct stat st {}; ::stat(settings->data_dir.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("data dir {} has mode {:04o}: others on this machine can list it (the store, task logs); "
                 "chmod 700 it unless that is meant", settings->data_dir, st.st_mode & 07777);
  }
  int pid_fd = LockPidFile(PidFile(settings->data_dir));
  if (pid_fd == -2) {
    auto pid = ReadFile(PidFile(settings->data_dir));
    fmt::print(stderr, "tidepool: a server is already running with data dir {} (pid {})\n", settings->data_dir,
               pid.ok() ? std::string(Trim(*pid)) : "?");
    return 1;
  }
  if (pid_fd < 0) {
    fmt::print(stderr, "tidepool: cannot write {}: {}; the data dir must be writable by this user (or choose another "
               "with --data-dir)\n", PidFile(settings->data_dir), std::strerror(errno));
    return 1;
  }

  auto tokens = TokenAuthority::Open(settings->data_dir);
  if (!tokens.ok()) {
    fmt::print(stderr, "tidepool: {}\n", tokens.status().message());
    return 1;
  }
  auto store = store::OpenSqliteStore(settings->sqlite_path);
  if (!store.ok()) {
    fmt::print(stderr, "tidepool: {}\n", store.status().message());
    return 1;
  }

  // Users and roles (auth.users_file): every client call then needs a token.
  std::optional<Users> users;
  if (!settings->config.server.users_file.empty()) {
    auto loaded = Users::Load(settings->config.server.users_file);
    if (!loaded.ok()) {
      fmt::print(stderr, "{}\n", loaded.status().message());
      return 2;
    }
    users = std::move(loaded).value();
    if (const std::string& m = settings->config.server.metrics_token; !m.empty() && users->Authenticate(m)) {
      fmt::print(stderr, "tidepool: server.auth.metrics_token is also user {}'s token; give it a token of its own\n",
                 users->Authenticate(m)->name);
      return 2;
    }
    spdlog::info("auth: {} user{} from {}", users->size(), users->size() == 1 ? "" : "s",
                 settings->config.server.users_file);
  } else {
    std::string host = HostOf(settings->listen);
    if (host != "127.0.0.1" && host != "localhost" && host != "[::1]" && host != "::1") {
      spdlog::warn("listening on {} without auth.users_file: anyone who can reach it can run commands here",
                   settings->listen);
    }
  }
  // TLS (server.tls); with client_ca, agents must present a certificate it signed (mTLS).
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  bool agents_need_certificates = false;
  if (const auto& tls = settings->config.server.tls) {
    auto cert = ReadFile(tls->cert);
    auto key = ReadFile(tls->key);
    if (!cert.ok() || !key.ok()) {
      fmt::print(stderr, "tidepool: server.tls: {}\n", (!cert.ok() ? cert.status() : key.status()).message());
      return 2;
    }
    grpc::SslServerCredentialsOptions o(tls->client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                               : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    if (!tls->client_ca.empty()) {
      auto ca = ReadFile(tls->client_ca);
      if (!ca.ok()) {
        fmt::print(stderr, "tidepool: server.tls.client_ca: {}\n", ca.status().message());
        return 2;
      }
      o.pem_root_certs = *ca;
      agents_need_certificates = true;
    }
    o.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(o);
    // Agents this server starts trust it (a self-signed certificate is its own CA), unless the
    // operator said otherwise.
    if (!std::getenv("TIDEPOOL_TLS_CA")) setenv("TIDEPOOL_TLS_CA", tls->cert.c_str(), 1);
  }

  CoreRef core_ref{nullptr};
  ServerInfoSource info{"0.1.0", "", settings->data_dir, NowUnixMs()};
  Authenticator authenticator(users ? &*users : nullptr, &core_ref);
  AgentService agent_service(&core_ref, agents_need_certificates);
  TaskService task_service(&core_ref, &authenticator);
  int port = 0;
  grpc::ServerBuilder builder;
  // Without TLS the front door owns the port: it serves fast clients (vrun/vbatch without gRPC)
  // and hands every other connection to the gRPC server, which then listens nowhere itself.
  // With TLS gRPC keeps its own port; fast clients, which speak no TLS, fall back to gRPC.
  FastFrontDoor front_door(&core_ref, &authenticator);
  const bool front_door_owns_port = !settings->config.server.tls.has_value();
  if (front_door_owns_port) {
    if (Status s = front_door.Listen(settings->listen, &port); !s.ok()) {
      spdlog::debug("listen: {}", s.message());
      fmt::print(stderr, "tidepool: cannot listen on {} (address in use or not available)\n", settings->listen);
      return 1;
    }
  } else {
    builder.AddListeningPort(settings->listen, credentials, &port);
  }
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Pings from our side only find peers that vanished without a FIN. Agents are covered by their
  // heartbeats (3 silent intervals close a link), so this is for gRPC clients and rare: every
  // connection's ping costs the server CPU (P8: docs/benchmarks.md).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // No bandwidth-delay probing: it pings every connection on its own timer, a large share of
  // the server's idle CPU with thousands of agents (P8). A fixed 32 MiB receive window per
  // stream instead, many times an agent's output message (1 MiB): a fast task's output is a
  // pipeline of messages, not one message then a wait for the window to reopen (P11: 4 MiB
  // windows with 4 MiB messages stored 200-350 MB/s, this 480-630). Memory is only taken by data
  // actually in flight, which the agent bounds (32 MiB unacknowledged per stream).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 32 * 1024 * 1024);
  builder.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  builder.RegisterService(&agent_service);
  builder.RegisterService(&task_service);
  WorkspaceService workspace_service(&core_ref, &authenticator);
  builder.RegisterService(&workspace_service);
  // The pool service reports the bound address, known only after the port is chosen: it is
  // registered with a placeholder and the address is filled in below before any call can see it.
  PoolService* pool_service_ptr = nullptr;
  std::unique_ptr<PoolService> pool_service;
  std::string bound;
  {
    // Resolve ":0" ports by building first; the address is then fixed for the process.
    pool_service = std::make_unique<PoolService>(&core_ref, &authenticator, info);
    pool_service_ptr = pool_service.get();
    builder.RegisterService(pool_service_ptr);
  }
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server || port == 0) {
    fmt::print(stderr, "tidepool: cannot listen on {} (address in use or not available)\n", settings->listen);
    return 1;
  }
  // However this function returns, the front door stops before the gRPC server it feeds goes.
  struct StopFrontDoor {
    FastFrontDoor* door;
    ~StopFrontDoor() { door->Stop(); }
  } stop_front_door{&front_door};
  if (front_door_owns_port) front_door.Start(grpc_server.get());
  bound = fmt::format("{}:{}", HostOf(settings->listen), port);
  pool_service_ptr->set_listen(bound);

  std::string advertise = settings->config.server.advertise;
  if (advertise.empty()) {
    std::string host = HostOf(settings->listen);
    if (host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty()) host = "127.0.0.1";
    advertise = fmt::format("{}:{}", host, port);
  }

  metrics::Registry registry;
  metrics::AddProcessCollector(registry);
  CoreOptions opts;
  opts.metrics = &registry;
  opts.auth = users.has_value();
  opts.config = settings->config;
  opts.data_dir = settings->data_dir;
  opts.agent_address = advertise;
  opts.agent_binary = SelfExe();
  auto duration_flag = [](const char* name, const std::string& text, std::chrono::milliseconds* out,
                          bool may_be_zero) {
    if (text.empty()) return true;
    auto d = ParseDuration(text);
    if (d.ok() && d->count() <= 0 && !may_be_zero) d = InvalidArgument("must be positive");
    if (!d.ok()) {
      fmt::print(stderr, "tidepool: {}: {}\n", name, d.status().message());
      return false;
    }
    *out = *d;
    return true;
  };
  if (!duration_flag("--worker-lost-grace", flags.worker_lost_grace, &opts.worker_lost_grace, true) ||
      !duration_flag("--heartbeat-interval", flags.heartbeat_interval, &opts.heartbeat_interval, false)) {
    return 2;
  }
  if (flags.max_heartbeat_rate >= 0) opts.max_heartbeat_rate = flags.max_heartbeat_rate;
  if (flags.max_queued_tasks >= 0) opts.queue_limits.max_tasks = flags.max_queued_tasks;
  if (flags.max_queued_tasks_per_user >= 0) opts.queue_limits.max_tasks_per_user = flags.max_queued_tasks_per_user;
  auto size_flag = [](const char* name, const std::string& text, int64_t* out) {
    if (text.empty()) return true;
    auto n = ParseBytes(text);
    if (!n.ok()) {
      fmt::print(stderr, "tidepool: {}: {}\n", name, n.status().message());
      return false;
    }
    *out = *n;
    return true;
  };
  if (!size_flag("--max-queued-bytes", flags.max_queued_bytes, &opts.queue_limits.max_bytes) ||
      !size_flag("--max-queued-bytes-per-user", flags.max_queued_bytes_per_user, &opts.queue_limits.max_bytes_per_user) ||
      !size_flag("--max-spec-bytes", flags.max_spec_bytes, &opts.queue_limits.max_spec_bytes)) {
    return 2;
  }
  if (opts.queue_limits.max_spec_bytes == 0 || opts.queue_limits.max_spec_bytes > kMaxSpecBytesCap) {
    fmt::print(stderr, "tidepool: --max-spec-bytes {}: must be between 1 B and {} (a task must fit in one message)\n",
               flags.max_spec_bytes, FormatBytes(kMaxSpecBytesCap));
    return 2;
  }
  opts.declared_pools = !flags.k8s_pools.empty();
  Core core(std::move(opts), std::move(store).value(), std::move(tokens).value());
  if (Status s = core.Start(); !s.ok()) {
    fmt::print(stderr, "tidepool: {}\n", s.message());
    front_door.Stop();
    grpc_server->Shutdown();
    return 1;
  }
  std::unique_ptr<AgentPoolController> agent_pools;
  if (!flags.k8s_pools.empty()) {
    auto made = AgentPoolController::Make(&core, flags.k8s_pools);
    if (!made.ok()) {
      fmt::print(stderr, "tidepool: {}\n", made.status().message());
      core.Stop();
      front_door.Stop();
      grpc_server->Shutdown();
      return 2;
    }
    agent_pools = std::move(made).value();
  }
  metrics::HttpEndpoint http;
  std::string metrics_listen = !flags.metrics_listen.empty() ? flags.metrics_listen : settings->config.server.metrics_listen;
  if (!metrics_listen.empty()) {
    http.set_health([&core] {
      Status h = core.StoreHealth();
      return h.ok() ? std::string() : h.message();
    });
    // With auth on, every page but /healthz needs a token and shows what its user may see (web.h).
    if (users) http.set_gate(WebGate(&authenticator, &core, settings->config.server.metrics_token));
    if (Status s = http.Start(metrics_listen, &registry, [&core] { return StatusPage(core); }); !s.ok()) {
      fmt::print(stderr, "tidepool: metrics endpoint: {}\n", s.message());
      core.Stop();
      front_door.Stop();
      grpc_server->Shutdown();
      return 1;
    }
    std::string metrics_addr = fmt::format("{}:{}", HostOf(metrics_listen), http.port());
    WriteFileAtomic(settings->data_dir + "/metrics.addr", metrics_addr + "\n");
    spdlog::info("metrics and status page on http://{}/", metrics_addr);
  }
  core_ref.store(&core);
  if (agent_pools) agent_pools->Start();
  WriteFileAtomic(AddrFile(settings->data_dir), bound + "\n");
  spdlog::info("tidepool server listening on {} (data dir {}, store {}, agents dial {})", bound, settings->data_dir,
               settings->sqlite_path, advertise);

  while (true) {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == SIGHUP) {
      spdlog::warn("SIGHUP: configuration reload is not yet supported in this version; keeping the running configuration");
      continue;
    }
    spdlog::info("signal {}: shutting down; running tasks keep running on their agents", sig);
    break;
  }
  http.Stop();
  if (agent_pools) agent_pools->Stop();
  core.Quiesce();
  front_door.Stop();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  core_ref.store(nullptr);
  core.Stop();
  ::unlink(AddrFile(settings->data_dir).c_str());
  if (core.abandoned_calls() > 0) {
    // A backend call that would not end: its thread must not outlive "stopped" in any useful
    // sense, and destroying the core would wait for it. Exit now; the pid lock goes with us.
    spdlog::info("stopped");
    spdlog::default_logger()->flush();
    ::_exit(0);
  }
  ::close(pid_fd);
  spdlog::info("stopped");
  return 0;
}

}  // namespace tidepool::server
