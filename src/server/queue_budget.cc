#include "server/queue_budget.h"

#include <cctype>

#include <fmt/format.h>

namespace tidepool::server {

namespace {

Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }

std::string Who(const std::string& user) { return user.empty() ? "user (anonymous: auth is off)" : "user " + user; }

}  // namespace

int64_t SpecBytes(const v1::TaskSpec& spec) { return static_cast<int64_t>(spec.ByteSizeLong()); }

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (int64_t{1} << 20)) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  if (bytes < (int64_t{1} << 30)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.1f} GiB", bytes / 1073741824.0);
}


int64_t QueueBudget::tasks_of(const std::string& user) const {
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second.tasks;
}

int64_t QueueBudget::bytes_of(const std::string& user) const {
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second.bytes;
}

Status QueueBudget::Admit(const std::string& user, int64_t tasks, int64_t bytes) const {
  const int64_t mine = tasks_of(user), my_bytes = bytes_of(user);
  if (limits_.max_tasks_per_user > 0 && mine + tasks > limits_.max_tasks_per_user) {
    return ResourceExhausted(fmt::format(
        "refused: {} has {} unfinished tasks (queued or running) and this submission adds {}, over the per-user cap "
        "of {} (server flag --max-queued-tasks-per-user); wait for some to finish or cancel some",
        Who(user), mine, tasks, limits_.max_tasks_per_user));
  }
  if (limits_.max_bytes_per_user > 0 && my_bytes + bytes > limits_.max_bytes_per_user) {
    return ResourceExhausted(fmt::format(
        "refused: the unfinished tasks of {} hold {} of specs (command, environment, ...) and this submission adds "
        "{}, over the per-user cap of {} (server flag --max-queued-bytes-per-user)",
        Who(user), FormatBytes(my_bytes), FormatBytes(bytes), FormatBytes(limits_.max_bytes_per_user)));
  }
  if (limits_.max_tasks > 0 && total_.tasks + tasks > limits_.max_tasks) {
    return ResourceExhausted(fmt::format(
        "refused: the server holds {} unfinished tasks (queued or running, {} of them of {}) and this submission "
        "adds {}, over the server-wide cap of {} (server flag --max-queued-tasks)",
        total_.tasks, mine, Who(user), tasks, limits_.max_tasks));
  }
  if (limits_.max_bytes > 0 && total_.bytes + bytes > limits_.max_bytes) {
    return ResourceExhausted(fmt::format(
        "refused: the server's unfinished tasks hold {} of specs ({} of them of {}) and this submission adds {}, over "
        "the server-wide cap of {} (server flag --max-queued-bytes)",
        FormatBytes(total_.bytes), FormatBytes(my_bytes), Who(user), FormatBytes(bytes), FormatBytes(limits_.max_bytes)));
  }
  return Status::Ok();
}

Status QueueBudget::CheckSpec(const v1::TaskSpec& spec) const {
  if (limits_.max_spec_bytes <= 0) return Status::Ok();
  int64_t argv = 0, env = 0;
  for (const std::string& a : spec.argv()) argv += static_cast<int64_t>(a.size()) + 1;
  for (const auto& [k, v] : spec.env()) env += static_cast<int64_t>(k.size() + v.size()) + 2;
  if (argv + env <= limits_.max_spec_bytes) return Status::Ok();
  return InvalidArgument(fmt::format(
      "the task's command and environment are {} (command {}, environment {} in {} variable{}); a task may have at "
      "most {} (server flag --max-spec-bytes)",
      FormatBytes(argv + env), FormatBytes(argv), FormatBytes(env), spec.env_size(), spec.env_size() == 1 ? "" : "s",
      FormatBytes(limits_.max_spec_bytes)));
}

void QueueBudget::Charge(const std::string& user, int64_t bytes) {
  Figures& u = users_[user];
  u.tasks++;
  u.bytes += bytes;
  total_.tasks++;
  total_.bytes += bytes;
}

void QueueBudget::Release(const std::string& user, int64_t bytes) {
  auto it = users_.find(user);
  if (it != users_.end()) {
    it->second.tasks--;
    it->second.bytes -= bytes;
    if (it->second.tasks <= 0) users_.erase(it);
  }
  total_.tasks--;
  total_.bytes -= bytes;
}

}  // namespace tidepool::server
