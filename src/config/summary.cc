// Summarize: what `tidepool config validate` prints on success. It shows policy, never backend
// fields, so no secret can reach it; the db URL (which may hold a password) is shown by kind only.
#include <sstream>

#include "common/duration.h"
#include "common/strings.h"
#include "config/checks.h"
#include "config/config.h"
#include "config/decode.h"

namespace tidepool::config {

namespace {

std::string PoolLine(const PoolConfig& p) {
  std::ostringstream out;
  out << "  " << p.name;
  if (p.auto_scaler) {
    const AutoscalerConfig& a = *p.auto_scaler;
    out << "  backend=" << a.backend.type << "  agents=" << a.min_agents << ".." << a.max_agents
        << "  idle=" << a.min_idle_agents << ".." << a.max_idle_agents
        << "  slots=" << a.default_slots_per_agent
        << "  idle_decay=" << FormatDuration(a.idle_decay);
    if (a.mode == PoolMode::kBatch) out << "  mode=batch";
  } else if (p.fixed) {
    out << "  fixed backend=" << p.fixed->backend.type << "  count=" << p.fixed->count;
  } else {
    out << "  static";
  }
  if (p.is_default) out << "  default";
  if (!p.selectors.empty()) out << "  selectors=" << Join(p.selectors, ",");
  return out.str();
}

std::string ServerLine(const ServerConfig& s) {
  std::vector<std::string> parts;
  if (!s.listen.empty()) parts.push_back("listen=" + s.listen);
  if (!s.advertise.empty()) parts.push_back("advertise=" + s.advertise);
  if (!s.metrics_listen.empty()) parts.push_back("metrics_listen=" + s.metrics_listen);
  if (!s.data_dir.empty()) parts.push_back("data_dir=" + s.data_dir);
  if (!s.db.empty()) parts.push_back(IsPostgresUrl(s.db) ? "db=postgresql" : "db=" + s.db);
  if (s.tls) parts.push_back(s.tls->client_ca.empty() ? "tls=on" : "tls=mutual");
  if (!s.users_file.empty()) parts.push_back("auth=" + s.users_file);
  return parts.empty() ? "" : "server: " + Join(parts, "  ");
}

}  // namespace

std::string Summarize(const Config& config) {
  std::ostringstream out;
  size_t n = config.pools.size();
  out << config.source << ": " << n << (n == 1 ? " pool" : " pools") << "\n";
  if (std::string server = ServerLine(config.server); !server.empty()) out << server << "\n";
  for (const PoolConfig& p : config.pools) out << PoolLine(p) << "\n";
  if (!config.inactive.empty()) {
    out << "not yet active:\n";
    for (const InactiveField& f : config.inactive) {
      out << "  " << FormatPos(f.pos) << ": ";
      if (!f.pool.empty()) out << "pool " << f.pool << ": ";
      out << f.field << " (" << f.feature << ")\n";
    }
  }
  return out.str();
}

}  // namespace tidepool::config
