#include "metrics/http_endpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <strings.h>
#include <exception>
#include <optional>

namespace tidepool::metrics {
namespace {

constexpr size_t kWorkers = 4;          // concurrent connections served; more wait in the backlog
constexpr time_t kKeepAliveSeconds = 2;  // also bounds how long Stop() waits for an idle client
constexpr time_t kIoTimeoutSeconds = 5;

constexpr const char* kStubPage =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Tidepool</title></head>\n"
    "<body><h1>Tidepool</h1><p><a href=\"/metrics\">metrics</a></p></body></html>\n";

struct HostPort {
  std::string host;  // without IPv6 brackets
  int port = 0;
};

// HOST:PORT or [IPV6]:PORT, as server.listen and server.metrics_listen take them.
std::optional<HostPort> ParseListen(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() <= 2 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return std::nullopt;
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int n = std::stoi(port);
  if (n > 65535) return std::nullopt;
  return HostPort{.host = host, .port = n};
}

// The token of `Authorization: Bearer TOKEN` (the scheme in any case), or "".
std::string BearerToken(const httplib::Request& req) {
  std::string value = req.get_header_value("Authorization");
  if (value.size() < 7 || strncasecmp(value.c_str(), "bearer ", 7) != 0) return "";
  size_t start = value.find_first_not_of(' ', 7), end = value.find_last_not_of(" \t\r");
  return start == std::string::npos ? "" : value.substr(start, end - start + 1);
}

void Refuse(httplib::Response& res, int status, const std::string& why) {
  res.status = status;
  if (status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"tidepool\"");
  res.set_content(why + "\n", "text/plain; charset=utf-8");
}

}  // namespace

HttpEndpoint::HttpEndpoint() = default;

HttpEndpoint::~HttpEndpoint() { Stop(); }

Status HttpEndpoint::Start(const std::string& listen, Registry* registry,
                           std::function<std::string()> status_page_html) {
  if (server_) {
    return FailedPrecondition(
        fmt::format("metrics endpoint: already serving on port {}; Stop() it first", port_));
  }
  if (registry == nullptr) return InvalidArgument("metrics endpoint: no metrics registry given");
  std::optional<HostPort> addr = ParseListen(listen);
  if (!addr) {
    return InvalidArgument(fmt::format(
        "invalid metrics listen address \"{}\": use HOST:PORT, e.g. \"127.0.0.1:9464\"", listen));
  }
  // Resolve here too, for a clearer message than a failed bind.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* resolved = nullptr;
  if (int rc = getaddrinfo(addr->host.c_str(), nullptr, &hints, &resolved); rc != 0) {
    return InvalidArgument(fmt::format("metrics endpoint: cannot listen on \"{}\": host \"{}\": {}",
                                       listen, addr->host, gai_strerror(rc)));
  }
  freeaddrinfo(resolved);

  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kWorkers); };
  // httplib's default socket options add SO_REUSEPORT, which would let a second server bind a
  // port that is already in use and silently share it. SO_REUSEADDR alone only allows a restart
  // while old connections sit in TIME_WAIT. Children must not inherit the listening socket.
  server->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    fcntl(sock, F_SETFD, fcntl(sock, F_GETFD) | FD_CLOEXEC);
  });
  server->set_keep_alive_timeout(kKeepAliveSeconds);
  server->set_read_timeout(kIoTimeoutSeconds, 0);
  server->set_write_timeout(kIoTimeoutSeconds, 0);

  // The two pages, as `access` allows.
  auto serve = [registry](const std::string& path, const Access& access, httplib::Response& res) {
    if (path == "/metrics") {
      if (!access.metrics) return Refuse(res, 403, "this token does not open /metrics");
      res.set_content(registry->Render(access.series), kContentType);
    } else {
      if (!access.status_page) return Refuse(res, 403, "this token opens /metrics only");
      res.set_content(access.status_page(), "text/html; charset=utf-8");
    }
  };
  // Without a gate: everything, to everyone.
  Access open{.metrics = true,
              .status_page = [page = std::move(status_page_html)] { return page ? page() : std::string(kStubPage); }};
  server->Get("/metrics", [serve, open](const httplib::Request& req, httplib::Response& res) {
    serve(req.path, open, res);
  });
  server->Get("/", [serve, open](const httplib::Request& req, httplib::Response& res) { serve(req.path, open, res); });
  if (gate_) {
    server->set_pre_routing_handler([serve, gate = gate_](const httplib::Request& req, httplib::Response& res) {
      using R = httplib::Server::HandlerResponse;
      if (req.path == "/healthz") return R::Unhandled;
      Access access = gate(BearerToken(req));
      if (access.refusal != 0) {
        Refuse(res, access.refusal, access.why);
        return R::Handled;
      }
      // Served here, never by the open routes (HEAD too: httplib would run the GET route).
      bool page = req.path == "/" || req.path == "/metrics";
      if (!page || (req.method != "GET" && req.method != "HEAD")) return R::Unhandled;  // 404
      serve(req.path, access, res);
      return R::Handled;
    });
  }
  server->Get("/healthz", [health = health_, gated = bool(gate_)](const httplib::Request&, httplib::Response& res) {
    std::string problem = health ? health() : std::string();
    if (!problem.empty()) {
      res.status = 503;
      // Open to anyone: with auth on, whether it is healthy and nothing more.
      res.set_content(gated ? std::string("unhealthy\n") : problem + "\n", "text/plain; charset=utf-8");
      return;
    }
    res.set_content("ok", "text/plain; charset=utf-8");
  });
  server->set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::warn("metrics endpoint: {} {}: {}", req.method, req.path, what);
        res.status = 500;
        res.set_content("internal error\n", "text/plain; charset=utf-8");
      });
  server->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(res.status == 404 ? std::string("not found\n")
                                        : fmt::format("error {}\n", res.status),
                      "text/plain; charset=utf-8");
    }
  });

  errno = 0;
  int port = addr->port == 0 ? server->bind_to_any_port(addr->host)
                             : (server->bind_to_port(addr->host, addr->port) ? addr->port : -1);
  int err = errno;
  if (port <= 0) {
    return Unavailable(fmt::format("metrics endpoint: cannot listen on {}: {}", listen,
                                   err != 0 ? std::strerror(err) : "bind failed"));
  }

  auto exited = std::make_shared<std::atomic<bool>>(false);
  httplib::Server* s = server.get();
  thread_ = std::thread([s, exited] {
    if (!s->listen_after_bind()) spdlog::warn("metrics endpoint: the server stopped with an error");
    exited->store(true);
  });
  // stop() only acts once the server runs, so Stop() right after Start() must not come earlier.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!s->is_running() && !exited->load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_ = std::move(server);
  port_ = port;
  bool v6 = addr->host.find(':') != std::string::npos;
  spdlog::info("metrics endpoint: serving /metrics, / and /healthz on {}{}{}:{}", v6 ? "[" : "",
               addr->host, v6 ? "]" : "", port);
  return Status::Ok();
}

void HttpEndpoint::Stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
  port_ = 0;
}

}  // namespace tidepool::metrics
