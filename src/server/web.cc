#include "server/web.h"

#include <fmt/format.h>

#include "api/names.h"
#include "common/crypto.h"

namespace tidepool::server {

namespace {

std::string Escape(const std::string& in) {
  std::string out;
  for (char c : in) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string StatusPage(Core& core, const Caller& caller) {
  std::string html =
      "<!doctype html><html><head><meta charset=utf-8><title>Tidepool</title>"
      "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style></head><body>"
      "<h1>Tidepool</h1><h2>Pools</h2><table><tr><th>pool</th><th>backend</th><th>status</th><th>workers</th>"
      "<th>queued</th><th>idle slots</th><th>busy slots</th><th>last error</th></tr>";
  for (const v1::Pool& p : core.ListPools(caller)) {
    std::string workers;
    for (const auto& [state, n] : p.workers()) {
      if (n) workers += fmt::format("{} {} ", n, state);
    }
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        Escape(p.name()), Escape(p.backend().empty() ? "static" : p.backend()), Escape(p.status()),
                        Escape(workers), p.queued(), p.idle_slots(), p.busy_slots(), Escape(p.last_error()));
  }
  html += "</table><h2>Workers</h2><table><tr><th>worker</th><th>pool</th><th>state</th><th>slots</th></tr>";
  for (const v1::Worker& w : core.ListWorkers("", caller)) {
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td></tr>", Escape(w.name()), Escape(w.pool()),
                        api::WorkerStateName(w.state()), w.used_slots(), w.slots());
  }
  html += "</table><p><a href=\"/metrics\">metrics</a></p></body></html>";
  return html;
}

metrics::HttpEndpoint::Gate WebGate(const Authenticator* auth, Core* core, const std::string& metrics_token) {
  using Access = metrics::HttpEndpoint::Access;
  std::string metrics_digest = metrics_token.empty() ? "" : Sha256Hex(metrics_token);
  return [auth, core, metrics_digest](const std::string& token) -> Access {
    if (token.empty()) {
      return {.refusal = 401,
              .why = "this page needs a token: Authorization: Bearer TOKEN (a user's token; "
                     "server.auth.metrics_token opens /metrics only)"};
    }
    if (!metrics_digest.empty() && ConstantTimeEquals(Sha256Hex(token), metrics_digest)) {
      return {.metrics = true};  // Prometheus: every series, no page
    }
    auto caller = auth->IdentifyToken(token);
    if (!caller.ok() || !caller->user) return {.refusal = 401, .why = "the token was not accepted"};
    Caller who = *caller;
    return {.metrics = true,
            .series =
                [who](const metrics::Labels& labels) {
                  for (const auto& [name, value] : labels) {
                    if (name == "pool") return who.Can(value, Role::kView);
                  }
                  return who.Can("*", Role::kView);  // the server's own: for who may view every pool
                },
            .status_page = [core, who] { return StatusPage(*core, who); }};
  };
}

}  // namespace tidepool::server
