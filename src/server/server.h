// `tidepool server`: resolves settings (flags > config file > defaults), opens the store, starts
// gRPC and the core, and runs until SIGTERM/SIGINT.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"

namespace tidepool::server {

struct ServerFlags {
  std::string config_path;  // "" = the built-in default configuration
  std::string listen;
  std::string data_dir;
  std::string db;
  std::string metrics_listen;
  std::string log_level = "info";
  std::string worker_lost_grace;  // how long a lost worker's tasks wait for it (default 60s)
  std::string heartbeat_interval;  // agents beat this often; 3 silent intervals close a link (default 5s)
  int max_heartbeat_rate = -1;     // heartbeats/s the server asks for in all (-1: default 250; 0 = no cap)
  // Caps on unfinished tasks (server/queue_budget.h); -1 / "" = the default, 0 = no cap.
  int64_t max_queued_tasks = -1;
  int64_t max_queued_tasks_per_user = -1;
  std::string max_queued_bytes;           // a size: 1073741824, 1GiB, 256MiB ...
  std::string max_queued_bytes_per_user;
  std::string max_spec_bytes;             // one task's argv + environment
  std::string k8s_pools;                  // a namespace whose AgentPools are pools (k8s_pools.h)
};

struct Settings {
  config::Config config;
  std::string data_dir;
  std::string sqlite_path;
  std::string listen;
};

// Loads and validates everything. On failure prints the errors (FILE:LINE:COL for the config)
// to stderr and returns nullopt; the caller exits 2.
std::optional<Settings> ResolveSettings(const ServerFlags& flags);

// Runs the server in the foreground; returns the process exit status.
int RunServer(const ServerFlags& flags);

// Files in the data dir.
std::string PidFile(const std::string& data_dir);
std::string AddrFile(const std::string& data_dir);
std::string LogFile(const std::string& data_dir);

}  // namespace tidepool::server
