// The HTTP side of server.metrics_listen: Prometheus /metrics, the web status page at /, and
// /healthz. A small blocking server (cpp-httplib, a few worker threads); it is meant for scrapes
// and people, not for agent traffic.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "metrics/registry.h"

namespace httplib {
class Server;
}

namespace tidepool::metrics {

class HttpEndpoint {
 public:
  HttpEndpoint();
  ~HttpEndpoint();  // Stop()
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // listen: "HOST:PORT" or "[IPV6]:PORT"; port 0 picks a free port (see port()).
  // Serves, until Stop():
  //   GET /metrics  registry->Render(), Content-Type kContentType
  //   GET /         status_page_html() as text/html (a stub page linking /metrics if it is empty)
  //   GET /healthz  "ok", or 503 with health()'s text when set_health's callback returns one
  //   anything else 404
  // each, with a gate (set_gate), only as the request's token allows.
  // Fails, naming the address, on a malformed address, a host that does not resolve, or a port
  // that cannot be bound (e.g. in use). registry must outlive the endpoint (or Stop()).
  // The callbacks run on the endpoint's worker threads, possibly several at once.
  Status Start(const std::string& listen, Registry* registry,
               std::function<std::string()> status_page_html);

  // Before Start: what /healthz reports. "" means healthy; any other text is served with 503.
  void set_health(std::function<std::string()> health) { health_ = std::move(health); }

  // What one request may see, decided from its bearer token before anything is built.
  struct Access {
    int refusal = 0;         // 0 = admitted; else the HTTP status (401, 403) ...
    std::string why;         // ... and one line saying why, with no secret in it
    bool metrics = false;    // may read /metrics ...
    Registry::SeriesFilter series;  // ... these series of it (null = all)
    std::function<std::string()> status_page;  // `/` as the token's user may see it; null = refused
  };
  // token: the request's `Authorization: Bearer TOKEN` ("" when there is none).
  using Gate = std::function<Access(const std::string& token)>;
  // Before Start (auth on). Every request but /healthz then asks the gate first: refused, it
  // gets the gate's status and line (401 with `WWW-Authenticate: Bearer`), whatever the path;
  // and /healthz says only "ok" or "unhealthy", not why. Without a gate everything is open.
  void set_gate(Gate gate) { gate_ = std::move(gate); }

  // The bound port once Start succeeded, else 0.
  int port() const { return port_; }

  // Closes the listening socket and joins the server thread. Idempotent. A connection that is
  // idle in keep-alive can delay it by up to the 2 s keep-alive timeout.
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::function<std::string()> health_;
  Gate gate_;
  int port_ = 0;
};

}  // namespace tidepool::metrics
