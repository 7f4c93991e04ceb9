// What unfinished tasks may hold in the server's memory: every unfinished task (pending, queued
// or running) keeps its spec (argv, environment, ...) in the core until it is final, so the
// number of them and the bytes of their specs are capped per user and for the whole server, and
// one task's argv + environment is capped on its own. A submission over a cap is refused before
// anything of it is stored or acknowledged, with an error naming the cap, the user and the
// current figure. Tasks restored at a start are counted but never refused.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "tidepool/v1/common.pb.h"

namespace tidepool::server {

struct QueueLimits {
  // 0 = no cap.
  int64_t max_tasks = 200000;                   // --max-queued-tasks
  int64_t max_tasks_per_user = 50000;           // --max-queued-tasks-per-user
  int64_t max_bytes = int64_t{1} << 30;         // --max-queued-bytes (1 GiB)
  int64_t max_bytes_per_user = int64_t{256} << 20;  // --max-queued-bytes-per-user
  int64_t max_spec_bytes = int64_t{1} << 20;    // --max-spec-bytes: one task's argv + environment
};
// The largest --max-spec-bytes: a task must fit in a reply (and in a gRPC request: 16 MiB).
constexpr int64_t kMaxSpecBytesCap = int64_t{8} << 20;

class QueueBudget {
 public:
  explicit QueueBudget(QueueLimits limits = {}) : limits_(limits) {}
  const QueueLimits& limits() const { return limits_; }

  // OK if `user` may add `tasks` tasks holding `bytes` of specs; else RESOURCE_EXHAUSTED naming
  // the cap (and its server flag), the user and the current figure.
  Status Admit(const std::string& user, int64_t tasks, int64_t bytes) const;
  // INVALID_ARGUMENT if one task's argv + environment is over --max-spec-bytes.
  Status CheckSpec(const v1::TaskSpec& spec) const;
  void Charge(const std::string& user, int64_t bytes);   // one task
  void Release(const std::string& user, int64_t bytes);  // one task

  int64_t tasks() const { return total_.tasks; }
  int64_t bytes() const { return total_.bytes; }
  int64_t tasks_of(const std::string& user) const;
  int64_t bytes_of(const std::string& user) const;

 private:
  struct Figures {
    int64_t tasks = 0;
    int64_t bytes = 0;
  };
  QueueLimits limits_;
  Figures total_;
  std::unordered_map<std::string, Figures> users_;
};

// What a task's spec holds in memory, as counted against the caps.
int64_t SpecBytes(const v1::TaskSpec& spec);
// "1.5 MiB", "512 B".
std::string FormatBytes(int64_t bytes);
// "1048576", "64KiB", "1MiB", "1G" (powers of 1024) -> bytes; for the server's flags.

}  // namespace tidepool::server
