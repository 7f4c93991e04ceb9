#include "config/build.h"

#include <algorithm>
#include <set>

#include "common/strings.h"
#include "config/backend_schemas.h"
#include "config/checks.h"
#include "config/features.h"
#include "config/schema.h"

namespace tidepool::config {

namespace {

using nlohmann::json;

std::string Str(const json& j, const char* key, std::string def = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : def;
}

int Int(const json& j, const char* key, int def) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? static_cast<int>(it->get<int64_t>()) : def;
}

double Double(const json& j, const char* key, double def) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : def;
}

Millis Ms(const json& j, const char* key, Millis def) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? Millis(it->get<int64_t>()) : def;
}

std::optional<int> OptInt(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
  return static_cast<int>(j[key].get<int64_t>());
}

const json& Sub(const json& j, const char* key) {
  static const json kEmpty = json::object();
  auto it = j.find(key);
  return it != j.end() ? *it : kEmpty;
}

class Builder {
 public:
  Builder(const Document& doc, std::vector<ConfigError>* errors) : doc_(doc), errors_(errors) {}

  FileConfig Build() {
    const json& root = doc_.root;
    if (root.contains("server")) {
      out_.server = BuildServer(root["server"]);
      out_.server_pos = Key("server");
    }
    const json& pools = Sub(root, "agent_pools");
    for (size_t i = 0; i < pools.size(); ++i) {
      if (!pools[i].is_object()) continue;  // the schema check has reported it (found by fuzz_config)
      out_.pools.push_back(BuildPool(pools[i], ItemPath("agent_pools", i)));
    }
    return std::move(out_);
  }

 private:
  // Where `path` was written; the nearest written ancestor for fields that were not.
  const NodePos* Find(std::string path) const {
    while (!path.empty()) {
      if (auto it = doc_.index.find(path); it != doc_.index.end()) return &it->second;
      size_t cut = path.find_last_of(".[");
      path = cut == std::string::npos ? "" : path.substr(0, cut);
    }
    return nullptr;
  }
  SourcePos Key(const std::string& path) const {
    const NodePos* p = Find(path);
    return p ? p->key : SourcePos{doc_.file, 0, 0};
  }
  SourcePos Value(const std::string& path) const {
    const NodePos* p = Find(path);
    return p ? p->value : SourcePos{doc_.file, 0, 0};
  }

  void Error(const std::string& path, std::string message, bool at_key = false) {
    errors_->push_back({at_key ? Key(path) : Value(path), path + ": " + message});
  }
  void Check(const Status& s, const std::string& path) {
    if (!s.ok()) Error(path, s.message());
  }

  // Notes `path` (relative `field`, for display) when its feature is not active yet.
  void Inactive(const std::string& pool, const std::string& path, const std::string& field,
                std::string_view feature_id) {
    const Feature* f = FindFeature(feature_id);
    if (f == nullptr || f->active) return;
    out_.inactive.push_back({Key(path), pool, field, f->description});
  }

  ServerConfig BuildServer(const json& j) {
    ServerConfig s;
    s.listen = Str(j, "listen");
    s.metrics_listen = Str(j, "metrics_listen");
    s.advertise = Str(j, "advertise");
    s.data_dir = Str(j, "data_dir");
    s.db = Str(j, "db");
    for (const char* field : {"listen", "metrics_listen", "advertise"}) {
      std::string address = Str(j, field);
      if (!address.empty()) Check(CheckHostPort(address), ChildPath("server", field));
    }
    if (!s.metrics_listen.empty()) {
      Inactive("", "server.metrics_listen", "server.metrics_listen", "metrics_listen");
    }
    if (j.contains("db")) {
      Check(CheckDbUrl(s.db), "server.db");
      if (IsPostgresUrl(s.db)) Inactive("", "server.db", "server.db", "postgres");
    }
    if (j.contains("tls")) {
      const json& t = j["tls"];
      s.tls = TlsConfig{Str(t, "cert"), Str(t, "key"), Str(t, "client_ca")};
      if (s.tls->cert.empty() || s.tls->key.empty()) {
        Error("server.tls", "tls needs both cert and key", true);
      }
      Inactive("", "server.tls", "server.tls", "tls");
    }
    if (j.contains("auth")) {
      s.users_file = Str(j["auth"], "users_file");
      if (s.users_file.empty()) Error("server.auth", "auth needs users_file", true);
      s.metrics_token = Str(j["auth"], "metrics_token");
      if (j["auth"].contains("metrics_token") && s.metrics_token.size() < 16) {
        Error("server.auth.metrics_token", "use at least 16 characters (the value is not shown)");
      }
      Inactive("", "server.auth", "server.auth", "auth");
    }
    return s;
  }

  PoolConfig BuildPool(const json& j, const std::string& path) {
    PoolConfig p;
    p.pos = Value(path);
    p.name = Str(j, "name");
    out_.name_pos.push_back(j.contains("name") ? Value(path + ".name") : p.pos);
    out_.default_pos.push_back(j.contains("default") ? Value(path + ".default")
                                                     : SourcePos{doc_.file, 0, 0});
    if (!j.contains("name")) {
      errors_->push_back({p.pos, path + ": a pool needs a name"});
    } else {
      Check(CheckPoolName(p.name), path + ".name");
    }
    p.is_default = j.value("default", false);
    p.description = Str(j, "description");
    p.selector_priority = Int(j, "selector_priority", 0);
    for (const json& s : Sub(j, "selectors")) {
      if (s.is_string()) p.selectors.push_back(s.get<std::string>());  // null: already an error
    }
    for (size_t i = 0; i < p.selectors.size(); ++i) {
      if (p.selectors[i].empty()) Error(ItemPath(path + ".selectors", i), "empty selector");
    }
    if (j.contains("selectors")) Inactive(p.name, path + ".selectors", "selectors", "selectors");
    if (j.contains("selector_priority")) {
      Inactive(p.name, path + ".selector_priority", "selector_priority", "selectors");
    }
    if (j.contains("kinds")) BuildKinds(j["kinds"], path + ".kinds", &p);
    if (j.contains("labels")) {
      p.labels = j["labels"].get<std::map<std::string, std::string>>();
      Inactive(p.name, path + ".labels", "labels", "labels");
    }
    if (j.contains("auto_scaler")) {
      p.auto_scaler = BuildAutoscaler(j["auto_scaler"], path, p.name);
      // Velda keeps the description in metadata; the pool-level one wins when both are given.
      if (p.description.empty()) {
        p.description = Str(Sub(j["auto_scaler"], "metadata"), "description");
      }
    }
    if (j.contains("fixed")) {
      p.fixed = BuildFixed(j["fixed"], path, p.name);
      Inactive(p.name, path + ".fixed", "fixed", "fixed");
      if (p.auto_scaler) {
        Error(path + ".fixed",
              "auto_scaler and fixed cannot both be set (a pool either scales or has a fixed size)",
              true);
      }
    }
    BuildWorkspace(Sub(j, "workspace"), path + ".workspace", &p);
    return p;
  }

  // After the backend: its kind decides the default mode.
  void BuildWorkspace(const json& j, const std::string& path, PoolConfig* p) {
    WorkspaceConfig& w = p->workspace;
    const BackendConfig* b = p->backend();
    const BackendSchema* registered = b ? FindBackendSchema(b->type) : nullptr;
    w.mode = registered && registered->remote ? WorkspaceConfig::Mode::kSync : WorkspaceConfig::Mode::kShared;
    std::string mode = Str(j, "mode");
    if (mode == "sync") w.mode = WorkspaceConfig::Mode::kSync;
    else if (mode == "shared") w.mode = WorkspaceConfig::Mode::kShared;
    else if (mode == "none") w.mode = WorkspaceConfig::Mode::kNone;
    w.gitignore = j.value("gitignore", false);
    const json& extra = Sub(j, "extra");
    for (size_t i = 0; i < extra.size(); ++i) {
      if (!extra[i].is_string()) continue;  // the decoder said why
      std::string e = extra[i].get<std::string>();
      if (e.empty() || e[0] != '/') {
        Error(ItemPath(path + ".extra", i), "\"" + e + "\" is not an absolute path (workspace paths land at the same place on the worker)");
        continue;
      }
      while (e.size() > 1 && e.back() == '/') e.pop_back();
      w.extra.push_back(e);
    }
    for (const char* key : {"max_bytes", "cache_bytes"}) {
      if (!j.contains(key) || !j[key].is_string()) continue;
      auto n = ParseBytes(j[key].get<std::string>());
      if (!n.ok()) {
        Error(path + "." + key, n.status().message());
        continue;
      }
      (std::string(key) == "max_bytes" ? w.max_bytes : w.cache_bytes) = *n;
    }
  }

  void BuildKinds(const json& kinds, const std::string& path, PoolConfig* p) {
    p->accepts_interactive = p->accepts_batch = false;
    for (size_t i = 0; i < kinds.size(); ++i) {
      if (!kinds[i].is_string()) continue;  // already an error
      std::string k = kinds[i].get<std::string>();
      if (k == "interactive") p->accepts_interactive = true;
      else if (k == "batch") p->accepts_batch = true;
      else Error(ItemPath(path, i), "invalid kind \"" + k + "\"; allowed: interactive, batch");
    }
    if (kinds.empty()) Error(path, "kinds must name interactive, batch or both");
    Inactive(p->name, path, "kinds", "kinds");
  }

  BackendConfig BuildBackend(const json& block, const std::string& path, const std::string& pool,
                             const std::string& field) {
    BackendConfig b;
    if (!block.is_object() || block.size() != 1) return b;  // the decoder said why
    b.type = block.begin().key();
    b.fields = block.begin().value();
    std::string at = path + "." + b.type;
    b.pos = Key(at);
    const BackendSchema* registered = FindBackendSchema(b.type);
    if (registered == nullptr || registered->message == nullptr) return b;  // the decoder said why
    b.secret_paths = SecretPaths(*registered->message(), b.fields);
    Inactive(pool, at, field + "." + b.type, "backend." + b.type);
    if (registered->check) {
      registered->check(b.fields, [&](const std::string& sub, const std::string& message, bool at_key) {
        Error(sub.empty() ? at : at + "." + sub, message, at_key);
      });
    }
    return b;
  }

  FixedConfig BuildFixed(const json& j, const std::string& pool_path, const std::string& pool) {
    std::string path = pool_path + ".fixed";
    FixedConfig f;
    f.count = Int(j, "count", 0);
    if (j.contains("backend")) {
      f.backend = BuildBackend(j["backend"], path + ".backend", pool, "fixed.backend");
    } else {
      Error(path, "fixed needs a backend", true);
    }
    return f;
  }

  AutoscalerConfig BuildAutoscaler(const json& j, const std::string& pool_path,
                                   const std::string& pool) {
    std::string path = pool_path + ".auto_scaler";
    AutoscalerConfig a;
    if (j.contains("backend")) {
      a.backend = BuildBackend(j["backend"], path + ".backend", pool, "auto_scaler.backend");
    } else {
      Error(path, "auto_scaler needs a backend (leave auto_scaler out for a static pool)", true);
    }
    a.max_agents = Int(j, "max_agents", a.max_agents);
    a.min_agents = Int(j, "min_agents", a.min_agents);
    a.min_idle_agents = Int(j, "min_idle_agents", a.min_idle_agents);
    a.max_idle_agents = Int(j, "max_idle_agents", a.max_idle_agents);
    // Velda: 0 (the proto default) means the default of 1.
    a.default_slots_per_agent = Int(j, "default_slots_per_agent", 0);
    if (a.default_slots_per_agent == 0) a.default_slots_per_agent = 1;
    a.idle_decay = Ms(j, "idle_decay", a.idle_decay);
    a.sync_loop_interval = Ms(j, "sync_loop_interval", a.sync_loop_interval);
    a.kill_unknown_after = Ms(j, "kill_unknown_after", a.kill_unknown_after);
    a.register_timeout = Ms(j, "register_timeout", a.register_timeout);
    a.initial_delay = Ms(j, "initial_delay", a.initial_delay);
    a.scale_up_error_retry_delay =
        Ms(j, "scale_up_error_retry_delay", a.scale_up_error_retry_delay);
    // Velda: the reset defaults to the retry delay + 30s (90s with the default retry delay).
    a.allocation_error_reset_after = Ms(j, "allocation_error_reset_after",
                                        a.scale_up_error_retry_delay + std::chrono::seconds(30));
    std::string mode = Str(j, "mode", "MODE_STANDARD");
    a.mode = mode == "MODE_BATCH" ? PoolMode::kBatch : PoolMode::kStandard;
    a.max_concurrent_creates = Int(j, "max_concurrent_creates", a.max_concurrent_creates);
    if (a.max_concurrent_creates < 1) {
      Error(path + ".max_concurrent_creates", "must be at least 1");
    }
    a.create_rate_per_second = Double(j, "create_rate", a.create_rate_per_second);
    if (j.contains("min_agents") && a.min_agents > a.max_agents) {
      Error(path + ".min_agents", "min_agents (" + std::to_string(a.min_agents) +
                                      ") exceeds max_agents (" + std::to_string(a.max_agents) +
                                      ")");
    }
    const json& schedule = Sub(j, "schedule");
    for (size_t i = 0; i < schedule.size(); ++i) {
      a.schedule.push_back(BuildWindow(schedule[i], ItemPath(path + ".schedule", i), a));
    }
    const json& consolidate = Sub(Sub(j, "scale_in"), "consolidate");
    for (size_t i = 0; i < consolidate.size(); ++i) {
      a.consolidate_windows.push_back(
          BuildWindow(consolidate[i], ItemPath(path + ".scale_in.consolidate", i), a));
    }
    if (j.contains("utilization")) a.utilization = BuildUtilization(j["utilization"], path);

    if (a.mode == PoolMode::kBatch) Inactive(pool, path + ".mode", "auto_scaler.mode", "batch_mode");
    static const std::pair<const char*, const char*> kFeatureFields[] = {
        {"schedule", "schedule"},
        {"scale_in", "scale_in"},
        {"utilization", "utilization"},
        {"register_timeout", "drift_sync"},
        {"kill_unknown_after", "drift_sync"},
        {"initial_delay", "drift_sync"},
        {"sync_loop_interval", "drift_sync"},
        {"scale_up_error_retry_delay", "error_backoff"},
        {"allocation_error_reset_after", "error_backoff"},
        {"max_concurrent_creates", "create_limits"},
        {"create_rate", "create_limits"},
    };
    for (const auto& [field, feature] : kFeatureFields) {
      if (j.contains(field)) {
        Inactive(pool, ChildPath(path, field), std::string("auto_scaler.") + field, feature);
      }
    }
    return a;
  }

  ScheduleWindow BuildWindow(const json& w, const std::string& path, const AutoscalerConfig& a) {
    ScheduleWindow out;
    out.pos = Value(path);
    std::set<int> days;
    const json& entries = Sub(w, "days");
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!entries[i].is_string()) continue;  // already an error
      Result<std::vector<int>> d = ParseDays(entries[i].get<std::string>());
      if (d.ok()) days.insert(d->begin(), d->end());
      else Error(ItemPath(path + ".days", i), d.status().message());
    }
    out.days.assign(days.begin(), days.end());
    if (w.contains("hours")) {
      Result<std::pair<int, int>> h = ParseHours(Str(w, "hours"));
      if (h.ok()) std::tie(out.start_minute, out.end_minute) = *h;
      else Error(path + ".hours", h.status().message());
    }
    out.tz = Str(w, "tz");
    if (w.contains("tz")) Check(CheckTimeZone(out.tz), path + ".tz");
    out.min_agents = OptInt(w, "min_agents");
    out.min_idle_agents = OptInt(w, "min_idle_agents");
    out.max_agents = OptInt(w, "max_agents");
    if (out.min_agents || out.max_agents) {
      int min = out.min_agents.value_or(a.min_agents), max = out.max_agents.value_or(a.max_agents);
      if (min > max) {
        Error(path + (out.min_agents ? ".min_agents" : ".max_agents"),
              "in this window min_agents (" + std::to_string(min) + ") exceeds max_agents (" +
                  std::to_string(max) + ")");
      }
    }
    return out;
  }

  UtilizationPolicy BuildUtilization(const json& j, const std::string& parent) {
    std::string path = parent + ".utilization";
    UtilizationPolicy u;
    u.metric = Str(j, "metric", u.metric);
    u.scale_up_threshold = Double(j, "scale_up_threshold", u.scale_up_threshold);
    u.scale_down_threshold = Double(j, "scale_down_threshold", u.scale_down_threshold);
    u.scale_up_for = Ms(j, "scale_up_for", u.scale_up_for);
    u.scale_down_for = Ms(j, "scale_down_for", u.scale_down_for);
    u.step = Int(j, "step", u.step);
    u.cooldown = Ms(j, "cooldown", u.cooldown);
    u.abort_after = Ms(j, "abort_after", u.abort_after);
    bool in_range = true;
    for (const char* field : {"scale_up_threshold", "scale_down_threshold"}) {
      double v = Double(j, field, 0);
      if (v < 0 || v > 100) {
        Error(ChildPath(path, field), "must be a percentage between 0 and 100");
        in_range = false;
      }
    }
    if (in_range && u.scale_down_threshold >= u.scale_up_threshold) {
      Error(path + (j.contains("scale_down_threshold") ? ".scale_down_threshold"
                                                       : ".scale_up_threshold"),
            "scale_down_threshold must be below scale_up_threshold");
    }
    if (u.step < 1) Error(path + ".step", "step must be at least 1");
    return u;
  }

  const Document& doc_;
  std::vector<ConfigError>* errors_;
  FileConfig out_;
};

}  // namespace

FileConfig BuildFile(const Document& doc, std::vector<ConfigError>* errors) {
  return Builder(doc, errors).Build();
}

}  // namespace tidepool::config
