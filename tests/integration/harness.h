// Test harness: a real server in a fresh data dir on a free port, and helpers that run the
// real `tidepool`, `vrun` and `vbatch` binaries against it and capture what they print.
//
// Waiting is always for a condition, with a generous deadline that only guards against hangs;
// no test asserts how long anything took.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tidepool::testing {

using namespace std::chrono_literals;

struct ProcResult {
  int exit_code = -1;   // -1 if killed by a signal or timed out
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
};

std::string BinDir();
std::string SourceDir();
std::string ReadAll(const std::string& path);
void WriteAll(const std::string& path, const std::string& content);
std::vector<std::string> Lines(const std::string& text);
std::vector<std::string> SplitWords(const std::string& text);

// A process running in the background with its output going to files.
class Background {
 public:
  Background(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
             const std::string& dir, const std::string& stdin_path = "");
  ~Background();
  Background(Background&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)), out_path_(std::move(o.out_path_)), err_path_(std::move(o.err_path_)),
        reaped_(o.reaped_), result_(std::move(o.result_)) {}
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit (killing it after `timeout`).
  ProcResult Wait(std::chrono::milliseconds timeout = 120s);
  std::string Stdout() const;
  std::string Stderr() const;
  bool Running();

 private:
  pid_t pid_ = -1;
  std::string out_path_, err_path_;
  bool reaped_ = false;
  ProcResult result_;
};

// Runs to completion (killed after `timeout`).
ProcResult RunProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
               const std::string& dir, const std::string& stdin_data = "", std::chrono::milliseconds timeout = 120s);

// Polls `pred` until it holds; false when `deadline` passes first.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds deadline = 60s);

// The default test pool: `local`, default, up to 4 workers that stay idle for 60 s.
std::string DefaultConfig();
// A config with one default pool on the local backend. `extra` adds auto_scaler fields (one
// per line, e.g. "idle_decay: \"2s\""); `backend` is the local backend's block.
std::string OnePool(const std::string& name, int max_agents, const std::vector<std::string>& extra = {},
                    const std::string& backend = "{}");

class Server {
 public:
  // An empty config means DefaultConfig(). `flags` are extra `tidepool server` flags.
  // `listen` is the first start's --listen (empty: 127.0.0.1:0, any free port on loopback).
  explicit Server(const std::string& config_yaml = "", std::vector<std::string> flags = {},
                  std::string listen = "",
                  std::map<std::string, std::string> env = {});
  ~Server();  // stops the server and every agent it started

  // Starts (or restarts, on the same data dir) and waits until it answers.
  void Start();
  void Stop(int sig = SIGTERM);  // and wait for it to exit
  void Kill() { Stop(SIGKILL); }
  // Sends the running server a signal and returns (SIGSTOP / SIGCONT: a frozen server).
  void Signal(int sig);

  // A copy: a restart (Start) may change it while test threads read it (the chaos test).
  std::string address() const {
    std::lock_guard lock(address_mu_);
    return address_;
  }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& dir() const { return dir_; }  // scratch space for the test
  std::string ServerLog() const;

  std::map<std::string, std::string> ClientEnv() const;
  ProcResult Tidepool(const std::vector<std::string>& args, const std::string& stdin_data = "");
  ProcResult Vrun(const std::vector<std::string>& args, const std::string& stdin_data = "");
  ProcResult Vbatch(const std::vector<std::string>& args);
  Background VrunBackground(const std::vector<std::string>& args);

  nlohmann::json Json(const std::vector<std::string>& args);  // runs `tidepool ARGS --json`
  nlohmann::json Pool(const std::string& name) { return Json({"pool", "get", name}); }
  nlohmann::json Task(const std::string& id) { return Json({"task", "get", id}); }
  // Workers of the pool in any of `states` (all states if empty).
  int Workers(const std::string& pool, const std::vector<std::string>& states = {});
  // Waits for the task to be final and returns its JSON.
  nlohmann::json WaitTask(const std::string& id, std::chrono::milliseconds deadline = 120s);
  // pids of the agents the local backend started (from its ledger).
  std::vector<pid_t> AgentPids() const;

 private:
  void KillAgents();

  std::string dir_;
  std::string data_dir_;
  std::string config_path_;
  mutable std::mutex address_mu_;
  std::string address_;  // guarded by address_mu_
  pid_t pid_ = -1;
  std::vector<std::string> flags_;
  std::string listen_;
  std::map<std::string, std::string> env_;  // extra environment for the server process
};

}  // namespace tidepool::testing
