#include "backends/slurm/squeue.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "common/strings.h"

namespace tidepool::backends::slurm {

namespace {

bool AllOf(std::string_view s, std::string_view chars) {
  return !s.empty() && s.find_first_not_of(chars) == std::string_view::npos;
}
constexpr std::string_view kDigits = "0123456789";
constexpr std::string_view kHex = "0123456789abcdef";

}  // namespace

std::vector<Job> ParseJobs(std::string_view text) {
  std::vector<Job> out;
  for (const std::string& line : Split(text, '\n')) {
    std::string_view rest = line;
    std::vector<std::string_view> f;
    for (int i = 0; i < 4; ++i) {
      size_t bar = rest.find('|');
      if (bar == std::string_view::npos) break;
      f.push_back(rest.substr(0, bar));
      rest.remove_prefix(bar + 1);
    }
    if (f.size() != 4) continue;  // not a line of ours (a warning squeue printed)
    out.push_back({std::string(Trim(f[0])), std::string(Trim(f[1])), std::string(Trim(f[2])), ParseElapsed(f[3]),
                   std::string(Trim(rest))});
  }
  return out;
}

int64_t ParseElapsed(std::string_view text) {
  std::string t(Trim(text));
  int64_t days = 0;
  if (size_t dash = t.find('-'); dash != std::string::npos) {
    if (!AllOf(t.substr(0, dash), kDigits)) return 0;
    days = std::stoll(t.substr(0, dash));
    t = t.substr(dash + 1);
  }
  int64_t s = 0;
  std::vector<std::string> parts = Split(t, ':');
  if (parts.empty() || parts.size() > 3) return 0;
  for (const std::string& p : parts) {
    if (!AllOf(p, kDigits) || p.size() > 9) return 0;
    s = s * 60 + std::stoll(p);
  }
  return days * 86400 + s;
}

std::vector<Step> ParseSteps(std::string_view text) {
  std::vector<Step> out;
  for (const std::string& line : Split(text, '\n')) {
    size_t bar = line.find('|');
    if (bar == std::string::npos) continue;
    out.push_back({std::string(Trim(line.substr(0, bar))), std::string(Trim(line.substr(bar + 1)))});
  }
  return out;
}

JobName ParseJobName(std::string_view name, std::string_view prefix) {
  if (name.size() < prefix.size() + 9 || name.substr(0, prefix.size()) != prefix || name[prefix.size()] != '-') {
    return {};
  }
  std::string_view hex = name.substr(prefix.size() + 1, 8);
  if (!AllOf(hex, kHex)) return {};
  std::string stem(name.substr(0, prefix.size() + 9));
  std::string_view rest = name.substr(stem.size());
  if (rest.empty()) return {1, stem};
  if (rest.size() < 3 || rest.substr(0, 2) != "-x" || !AllOf(rest.substr(2), kDigits) || rest.size() > 8) return {};
  int n = std::stoi(std::string(rest.substr(2)));
  if (n < 1) return {};
  return {n, stem};
}

std::string BatchJobName(const std::string& stem, int count) { return fmt::format("{}-x{}", stem, count); }

std::string BatchWorkerName(const std::string& stem, int count, int index) {
  return fmt::format("{}-x{}-{}", stem, count, index);
}

WorkerState StateOf(std::string_view s) {
  if (s == "PENDING" || s == "CONFIGURING" || s == "REQUEUED" || s == "REQUEUE_HOLD" || s == "REQUEUE_FED" ||
      s == "RESV_DEL_HOLD") {
    return WorkerState::kPending;
  }
  if (s == "RUNNING" || s == "SUSPENDED" || s == "STOPPED" || s == "RESIZING") return WorkerState::kRunning;
  if (s == "COMPLETING" || s == "SIGNALING" || s == "STAGE_OUT") return WorkerState::kStopping;
  return WorkerState::kStopped;  // COMPLETED, CANCELLED, FAILED, TIMEOUT, NODE_FAIL, PREEMPTED, ...
}

std::vector<ListedWorker> WorkersOf(const std::vector<Job>& jobs, const std::vector<Step>& steps,
                                    std::string_view prefix, const std::set<std::string>& deleted,
                                    int64_t step_grace_s) {
  std::set<std::string> step_names;
  for (const Step& s : steps) step_names.insert(s.name);
  std::vector<ListedWorker> out;
  for (const Job& j : jobs) {
    JobName n = ParseJobName(j.name, prefix);
    if (n.count == 0) continue;
    WorkerState st = StateOf(j.state);
    std::string detail;
    if (st == WorkerState::kPending) {
      std::string lower = j.state;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      detail = j.reason.empty() || j.reason == "None" ? lower : lower + ": " + j.reason;
    } else if (j.state == "SUSPENDED" || j.state == "STOPPED") {
      detail = "suspended by Slurm";
    }
    const std::string line = fmt::format("{} {} {}", j.id, j.state, j.name);
    if (n.count == 1 && j.name == n.stem) {
      out.push_back({j.name, st, detail, line});
      continue;
    }
    for (int i = 0; i < n.count; ++i) {
      std::string w = BatchWorkerName(n.stem, n.count, i);
      WorkerState ws = st;
      std::string d = detail;
      if (st == WorkerState::kRunning && !step_names.count(w)) {
        if (deleted.count(w) || j.elapsed_s >= step_grace_s) {
          ws = WorkerState::kStopped;
          d = "its agent's step ended";
        } else {
          ws = WorkerState::kPending;
          d = "starting its agent's step";
        }
      }
      if (deleted.count(w) && ws == WorkerState::kPending) ws = WorkerState::kStopping;
      out.push_back({w, ws, d, line});
    }
  }
  return out;
}

}  // namespace tidepool::backends::slurm
