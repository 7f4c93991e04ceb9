// `tidepool agent`: runs on a worker, dials the server, proves who it is, runs tasks.
//
// One event-loop thread owns every task: its process (watched through a pidfd), its output
// pipes or PTY, its stdin, its timers. Output is kept until the server acknowledges it, so a
// task keeps running and its output is delivered when the server comes back; a finished task's
// exit is kept until acknowledged too. Unacknowledged output per stream is bounded: above the
// bound the agent stops reading the pipe and the task waits on its own writes (nothing is lost).
#pragma once

#include <map>
#include <memory>
#include <string>

namespace tidepool::agent {

struct AgentFlags {
  std::string server;
  std::string pool;
  std::string name;
  std::string token;
  int slots = 1;
  std::string work_dir;
  // The workspace content cache (workspace_sync.h); "" = /var/cache/tidepool/workspace for root,
  // else $XDG_CACHE_HOME or ~/.cache, /tidepool/workspace.
  std::string cache_dir;
  std::map<std::string, std::string> labels;
  std::string log_level = "info";
  int keepalive_ms = 60000;  // ping the server this often when idle; a dead link is noticed 20 s later
  // TLS: the CA to trust, and for mTLS this agent's certificate and key (PEM files).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Whose Unix user runs each task (task_users.h): "owner", "agent", or "" (owner when root).
  std::string run_tasks_as;
  std::string task_uids;     // FIRST-LAST; "" = the default range
  std::string task_uid_map;  // "" = /var/lib/tidepool/task-uids
  // A walltime (a Slurm job's end, unix ms) and from when to take no new tasks; 0 = none. Told to
  // the server, which drains the worker then (the pool replaces it ahead of time).
  int64_t ends_at_ms = 0;
  int64_t drain_at_ms = 0;
};

class Transport;  // connection.h

// Runs until SIGTERM/SIGINT (tasks are then stopped) or until the server refuses the agent.
// Returns the process exit status.
int RunAgent(const AgentFlags& flags, std::unique_ptr<Transport> transport);

}  // namespace tidepool::agent
