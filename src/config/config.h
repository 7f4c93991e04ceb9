// The server configuration: what config.md's YAML says, validated and typed.
//
// Loading never throws and never stops at the first problem: every error found is returned
// with its FILE:LINE:COL. A Config is only produced when there are no errors.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tidepool::config {

using Millis = std::chrono::milliseconds;

struct SourcePos {
  std::string file;
  int line = 0;    // 1-based; 0 = unknown (built-in default)
  int column = 0;  // 1-based
};

struct ConfigError {
  SourcePos pos;
  std::string message;
  // "FILE:LINE:COL: message"
  std::string ToString() const;
};

// A field that is set and valid but whose feature is not built yet. `tidepool config validate`
// and the server's start-up log report each one; none is silently ignored.
struct InactiveField {
  SourcePos pos;
  std::string pool;     // "" for server-level fields
  std::string field;    // dotted path, e.g. "auto_scaler.schedule"
  std::string feature;  // what it would turn on, e.g. "time-window pre-scaling"
};

// One backend block, e.g. `backend: { command: {...} }`.
struct BackendConfig {
  std::string type;  // the config key: local, command, ssh, slurm, kubernetes, aws_launch_template, ...
  // The backend's fields, validated against its schema, keys in snake_case. `${VAR}` already
  // expanded (except the command backend's scripts). Durations are integers in milliseconds.
  nlohmann::json fields = nlohmann::json::object();
  // Dotted paths inside `fields` whose values are secrets (api_token, pre_auth_key, ...).
  std::vector<std::string> secret_paths;
  SourcePos pos;

  // `fields` with every secret replaced by "<redacted>": the only form fit for logs and listings.
  nlohmann::json Redacted() const;
  // Changes when the template changes (used to mark workers outdated).
  std::string Fingerprint() const;
};

enum class PoolMode { kStandard, kBatch };

struct ScheduleWindow {
  std::vector<int> days;      // 0 = Sunday ... 6 = Saturday; empty = every day
  int start_minute = 0;       // minutes since local midnight
  int end_minute = 24 * 60;   // exclusive; 24:00 allowed
  std::string tz;             // IANA name; "" = server local time
  std::optional<int> min_agents;
  std::optional<int> min_idle_agents;
  std::optional<int> max_agents;
  SourcePos pos;
};

struct UtilizationPolicy {
  std::string metric = "cpu";  // cpu | gpu | memory | slots
  double scale_up_threshold = 80;
  Millis scale_up_for{std::chrono::minutes(5)};
  double scale_down_threshold = 20;
  Millis scale_down_for{std::chrono::minutes(15)};
  int step = 1;
  Millis cooldown{std::chrono::minutes(10)};
  Millis abort_after{std::chrono::minutes(15)};
};

struct AutoscalerConfig {
  BackendConfig backend;
  int max_agents = 0;  // 0 = never create
  int min_agents = 0;
  int min_idle_agents = 0;
  int max_idle_agents = 0;  // as written; the planner raises it to min_idle + slots - 1
  int default_slots_per_agent = 1;
  Millis idle_decay{0};
  Millis sync_loop_interval{std::chrono::seconds(60)};
  Millis kill_unknown_after{0};  // 0 = never
  Millis register_timeout{std::chrono::minutes(10)};
  Millis initial_delay{0};
  Millis scale_up_error_retry_delay{std::chrono::seconds(60)};
  Millis allocation_error_reset_after{std::chrono::seconds(90)};
  PoolMode mode = PoolMode::kStandard;
  int max_concurrent_creates = 10;
  double create_rate_per_second = 2.0;  // token bucket; burst = max_concurrent_creates
  std::vector<ScheduleWindow> schedule;
  std::vector<ScheduleWindow> consolidate_windows;  // scale_in.consolidate
  std::optional<UtilizationPolicy> utilization;
};

struct FixedConfig {
  BackendConfig backend;
  int count = 0;
};

// How a pool's workers see the caller's files (../shared/spec/workspace.md).
struct WorkspaceConfig {
  enum class Mode {
    kSync,    // brought to the worker before the task, changes brought back
    kShared,  // the workers see the caller's paths already (the local machine, NFS)
    kNone,    // nothing is brought; the task starts in the worker's own directory of that path
  };
  Mode mode = Mode::kShared;  // as written, or the backend's default (sync for backends that reach other machines)
  std::vector<std::string> extra;  // absolute paths added to the workspace
  bool gitignore = false;
  int64_t max_bytes = int64_t{2} << 30;
  int64_t cache_bytes = int64_t{20} << 30;
};

const char* WorkspaceModeName(WorkspaceConfig::Mode m);

struct PoolConfig {
  std::string name;
  std::string description;  // pool-level or auto_scaler.metadata.description
  bool is_default = false;
  std::vector<std::string> selectors;
  int selector_priority = 0;
  bool accepts_interactive = true;  // kinds
  bool accepts_batch = true;
  std::map<std::string, std::string> labels;
  std::optional<AutoscalerConfig> auto_scaler;  // neither set = static pool
  std::optional<FixedConfig> fixed;
  WorkspaceConfig workspace;
  SourcePos pos;

  bool is_static() const { return !auto_scaler && !fixed; }
  const BackendConfig* backend() const {
    if (auto_scaler) return &auto_scaler->backend;
    if (fixed) return &fixed->backend;
    return nullptr;
  }
};

struct TlsConfig {
  std::string cert;
  std::string key;
  std::string client_ca;
};

struct ServerConfig {
  std::string listen;          // "" = not set in the file
  std::string metrics_listen;
  std::string advertise;
  std::string data_dir;
  std::string db;
  std::optional<TlsConfig> tls;
  std::string users_file;      // auth.users_file
  // auth.metrics_token (a secret): opens /metrics only, for Prometheus; "" = none.
  std::string metrics_token;
};

struct Config {
  ServerConfig server;
  std::vector<PoolConfig> pools;
  std::vector<InactiveField> inactive;
  std::string source;  // the file or directory it came from; "<built-in default>"

  const PoolConfig* FindPool(const std::string& name) const;
  const PoolConfig* DefaultPool() const;
};

struct LoadResult {
  std::optional<Config> config;  // set iff errors is empty
  std::vector<ConfigError> errors;
};

// Looks up an environment variable for ${VAR} expansion; nullopt = unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
// The process environment.
EnvLookup ProcessEnv();

// A YAML file, or a directory whose *.yaml files are read in name order and merged.
LoadResult LoadConfigPath(const std::string& path, const EnvLookup& env = ProcessEnv());
// YAML text; `filename` is used in error positions.
LoadResult LoadConfigString(const std::string& yaml, const std::string& filename,
                            const EnvLookup& env = ProcessEnv());

// The values of every secret field set (backends' secret_paths, server.auth.metrics_token): what
// text from outside must be scrubbed of before it is stored or shown (common/redact.h).
std::vector<std::string> SecretValues(const Config& config);

// The built-in default (cli.md): one default pool `local` on the local backend.
Config DefaultConfig(int cpus);

// What `tidepool config validate` prints on success: one line per pool, then the inactive fields.
std::string Summarize(const Config& config);

}  // namespace tidepool::config
