#include "autoscaler/answers.h"

#include <algorithm>

#include <fmt/format.h>

#include "autoscaler/worker.h"
#include "common/worker_name.h"

namespace tidepool::autoscaler {

CreateJudgement JudgeCreateAnswer(std::string_view answer, const std::optional<NameHolder>& holder,
                                  TimePoint launched_at) {
  if (answer.empty()) return {CreateVerdict::kNameless, ""};
  if (std::string why = WorkerNameProblem(answer); !why.empty()) {
    return {CreateVerdict::kInvalid, fmt::format("answered {}, which is not a worker name: it {}",
                                                 QuoteForLog(answer), why)};
  }
  if (!holder) return {CreateVerdict::kNew, ""};
  if (holder->listed_unasked && holder->recorded_at >= launched_at) return {CreateVerdict::kAdoptListed, ""};
  return {CreateVerdict::kDuplicate,
          fmt::format("answered {}, a name the pool already has (its worker is {}): one name, one worker",
                      QuoteForLog(answer), PhaseName(holder->phase))};
}

TimePoint RefusedCreateHeldUntil(TimePoint answered_at, Millis register_timeout, Millis cooldown) {
  return answered_at + std::max(register_timeout, cooldown);
}

Millis CreateCooldown(Millis base, int consecutive_failures, Millis max) {
  Millis delay = base;
  for (int i = 1; i < consecutive_failures && delay < max; ++i) delay *= 2;
  return std::min(delay, max);
}

CreateFailureResponse RespondToCreateFailure(ErrorClass cls, Millis base, int consecutive_failures, Millis max) {
  switch (cls) {
    case ErrorClass::kTransient: return {CreateCooldown(base, consecutive_failures, max), false};
    case ErrorClass::kOutOfCapacity:
    case ErrorClass::kQuota: return {CreateCooldown(base, consecutive_failures, max), true};
    case ErrorClass::kAuth:
    case ErrorClass::kBadRequest: return {std::max(max, base), true};
  }
  return {CreateCooldown(base, consecutive_failures, max), false};
}

namespace {

// Whether `line` is the listing of the machine a refused create answer named: the line begins
// with that answer, followed by the end of the line or a field separator.
bool ListsRefusedAnswer(std::string_view line, std::string_view answer) {
  if (answer.empty() || line.size() < answer.size() || line.substr(0, answer.size()) != answer) return false;
  return line.size() == answer.size() || line[answer.size()] == ' ' || line[answer.size()] == '\t';
}

}  // namespace

std::string_view FirstFieldOfRefused(std::string_view refused_answer) {
  size_t sep = refused_answer.find_first_of(" \t");
  if (sep == std::string_view::npos) return {};
  return refused_answer.substr(0, sep);
}

CheckedList CheckListed(std::vector<backends::ListedWorker> listed, const std::deque<std::string>& refused_answers) {
  CheckedList out;
  out.workers.reserve(listed.size());
  for (backends::ListedWorker& lw : listed) {
    if (!backends::IsWorker(lw.state)) continue;  // stopping or stopped: gone, for the pool
    if (std::string why = WorkerNameProblem(lw.name); !why.empty()) {
      out.problems.push_back(fmt::format("listed name {} is not a worker name: it {}", QuoteForLog(lw.name), why));
      continue;
    }
    auto refused = std::find_if(refused_answers.begin(), refused_answers.end(),
                                [&](const std::string& a) { return ListsRefusedAnswer(lw.line, a); });
    if (refused != refused_answers.end()) {
      out.problems.push_back(fmt::format("listed line {} is the machine a create answered as {}, not a worker "
                                         "called {}; not tracked, never deleted",
                                         QuoteForLog(lw.line), QuoteForLog(*refused), QuoteForLog(lw.name)));
      continue;
    }
    out.workers.push_back(std::move(lw));
  }
  return out;
}

std::string SummarizeListProblems(const std::vector<std::string>& problems) {
  constexpr size_t kShown = 3;
  std::string out = fmt::format("{} listed entr{} refused: ", problems.size(), problems.size() == 1 ? "y" : "ies");
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) out += (i ? "; " : "") + problems[i];
  if (problems.size() > kShown) out += fmt::format("; and {} more", problems.size() - kShown);
  return out;
}

}  // namespace tidepool::autoscaler
