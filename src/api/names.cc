#include "api/names.h"

#include <algorithm>
#include <cctype>

#include "common/time.h"

namespace tidepool::api {

std::string StateName(v1::TaskState s) {
  switch (s) {
    case v1::TASK_STATE_PENDING: return "PENDING";
    case v1::TASK_STATE_QUEUEING: return "QUEUEING";
    case v1::TASK_STATE_RUNNING: return "RUNNING";
    case v1::TASK_STATE_RUNNING_SUBTASKS: return "RUNNING_SUBTASKS";
    case v1::TASK_STATE_SUCCESS: return "SUCCESS";
    case v1::TASK_STATE_FAILURE: return "FAILURE";
    case v1::TASK_STATE_FAILED_UPSTREAM: return "FAILED_UPSTREAM";
    case v1::TASK_STATE_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

std::optional<v1::TaskState> ParseState(const std::string& name) {
  std::string up = name;
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  for (int i = v1::TASK_STATE_PENDING; i <= v1::TASK_STATE_CANCELLED; ++i) {
    auto s = static_cast<v1::TaskState>(i);
    if (StateName(s) == up) return s;
  }
  return std::nullopt;
}

bool IsFinal(v1::TaskState s) {
  return s == v1::TASK_STATE_SUCCESS || s == v1::TASK_STATE_FAILURE || s == v1::TASK_STATE_FAILED_UPSTREAM ||
         s == v1::TASK_STATE_CANCELLED;
}

std::string WorkerStateName(v1::WorkerState s) {
  switch (s) {
    case v1::WORKER_STATE_REQUESTED: return "requested";
    case v1::WORKER_STATE_STARTING: return "starting";
    case v1::WORKER_STATE_IDLE: return "idle";
    case v1::WORKER_STATE_BUSY: return "busy";
    case v1::WORKER_STATE_DRAINING: return "draining";
    case v1::WORKER_STATE_DELETING: return "deleting";
    case v1::WORKER_STATE_LOST: return "lost";
    case v1::WORKER_STATE_UNKNOWN: return "unknown";
    default: return "unspecified";
  }
}

std::string KindName(v1::TaskKind k) { return k == v1::TASK_KIND_INTERACTIVE ? "interactive" : "batch"; }

int ExitStatusOf(const v1::Task& t) {
  if (t.state() == v1::TASK_STATE_SUCCESS) return 0;
  if (t.state() == v1::TASK_STATE_CANCELLED || t.state() == v1::TASK_STATE_FAILED_UPSTREAM) return 1;
  if (t.signal() > 0) return 128 + t.signal();
  if (t.has_exit_code() && t.exit_code() != 0) return t.exit_code();
  return 1;
}

namespace {
nlohmann::json Time(int64_t ms) { return ms ? nlohmann::json(FormatRfc3339(ms)) : nlohmann::json(nullptr); }
}  // namespace

nlohmann::json TaskJson(const v1::Task& t) {
  nlohmann::json j;
  j["id"] = t.id();
  j["name"] = t.name();
  j["parent"] = t.parent().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.parent());
  j["state"] = StateName(t.state());
  j["kind"] = KindName(t.kind());
  j["pool"] = t.pool();
  j["owner"] = t.owner().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.owner());
  j["priority"] = t.priority();
  j["command"] = std::vector<std::string>(t.argv().begin(), t.argv().end());
  j["cwd"] = t.cwd();
  j["exit_code"] = t.has_exit_code() ? nlohmann::json(t.exit_code()) : nlohmann::json(nullptr);
  j["signal"] = t.signal() ? nlohmann::json(t.signal()) : nlohmann::json(nullptr);
  j["reason"] = t.reason().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.reason());
  j["worker"] = t.worker().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.worker());
  j["created_at"] = Time(t.created_at_ms());
  j["started_at"] = Time(t.started_at_ms());
  j["finished_at"] = Time(t.finished_at_ms());
  j["attempts"] = t.attempts();
  j["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : t.labels()) j["labels"][k] = v;
  return j;
}

nlohmann::json WorkerJson(const v1::Worker& w) {
  nlohmann::json j;
  j["name"] = w.name();
  j["pool"] = w.pool();
  j["state"] = WorkerStateName(w.state());
  j["slots"] = w.slots();
  j["used_slots"] = w.used_slots();
  j["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : w.labels()) j["labels"][k] = v;
  j["address"] = w.address();
  j["tasks"] = std::vector<std::string>(w.tasks().begin(), w.tasks().end());
  j["created_at"] = Time(w.created_at_ms());
  j["last_seen"] = Time(w.last_seen_ms());
  j["detail"] = w.detail();
  j["ends_at"] = Time(w.ends_at_ms());
  j["drain_at"] = Time(w.drain_at_ms());
  return j;
}

nlohmann::json PoolJson(const v1::Pool& p) {
  nlohmann::json j;
  j["name"] = p.name();
  j["default"] = p.default_();
  j["description"] = p.description();
  j["selectors"] = std::vector<std::string>(p.selectors().begin(), p.selectors().end());
  j["backend"] = p.backend().empty() ? nlohmann::json(nullptr) : nlohmann::json(p.backend());
  j["mode"] = p.mode();
  j["min_agents"] = p.min_agents();
  j["max_agents"] = p.max_agents();
  j["workers"] = nlohmann::json::object();
  for (const auto& [k, v] : p.workers()) j["workers"][k] = v;
  j["queued"] = p.queued();
  j["idle_slots"] = p.idle_slots();
  j["busy_slots"] = p.busy_slots();
  j["status"] = p.status();
  j["last_error"] = p.last_error().empty() ? nlohmann::json(nullptr) : nlohmann::json(p.last_error());
  return j;
}

}  // namespace tidepool::api
