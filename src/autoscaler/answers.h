// What a backend answered, checked before the pool believes it (issue 17, "One name, one worker"
// and "Names checked at the door"). Pure: no I/O, no clock of its own (times are arguments).
//
//   create answer  ""                    the name arrives later (list or the connecting agent)
//                  a name nobody holds   the new worker's
//                  a name an unknown machine holds that was first listed by a list taken after
//                  this create was launched: that machine is the one it made (a list saw it first)
//                  any other held name   an error of the backend: the pool already has that name
//                  not a worker name     an error of the backend
// A refused answer may still have made a machine the pool cannot name: it counts against
// max_agents for a while (RefusedCreateHeldUntil) and starts the create cooldown like any failed
// create, so a backend that keeps answering one name is asked at most max_agents times per
// cooldown, not forever.
//
// A list entry whose name is not a worker name is refused (reported, never tracked, so never
// deleted), and so is a line that begins with a create answer refused earlier: "my machine
// running" is the machine answered as "my machine", not a machine called "my" (and a record "my"
// made from a list taken while that create was in flight is forgotten, never deleted).
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "autoscaler/planner.h"
#include "backends/backend.h"

namespace tidepool::autoscaler {

// The record that already holds the name a create answered.
struct NameHolder {
  Phase phase = Phase::kIdle;
  bool listed_unasked = false;  // recorded from a list as a machine nobody asked for
  TimePoint recorded_at{};      // when the pool first recorded it (listed: when that list was taken)
};

enum class CreateVerdict { kNameless, kNew, kAdoptListed, kInvalid, kDuplicate };

struct CreateJudgement {
  CreateVerdict verdict = CreateVerdict::kNew;
  std::string error;  // kInvalid, kDuplicate: one line naming the answer and why
};

CreateJudgement JudgeCreateAnswer(std::string_view answer, const std::optional<NameHolder>& holder,
                                  TimePoint launched_at);

// Until when a create whose answer was refused counts against max_agents: the register_timeout
// any machine made has to connect, and never less than the cooldown before the next create.
TimePoint RefusedCreateHeldUntil(TimePoint answered_at, Millis register_timeout, Millis cooldown);

// The cooldown after the n-th consecutive failed create: `base` doubled per failure after the
// first, at most `max`.
Millis CreateCooldown(Millis base, int consecutive_failures, Millis max);

using backends::ErrorClass;

// What the pool does after the n-th consecutive failed create, by the failure's class
// (backends/backend.h). Pure; the controller applies it (PoolController::AllocationFailed).
//   transient         cooldown CreateCooldown(base, n, max); queued creates stay queued
//   out_of_capacity,  cooldown CreateCooldown(base, n, max); queued creates dropped, so their
//   quota             demand goes to the selector's backup pools at once (a pool cooling down
//                     is not healthy: scheduler/group_matcher.h)
//   auth,             cooldown `max` at once (asking again will not help, and must not storm);
//   bad_request       queued creates dropped
struct CreateFailureResponse {
  Millis cooldown{0};
  bool drop_queued = false;
};
CreateFailureResponse RespondToCreateFailure(ErrorClass cls, Millis base, int consecutive_failures, Millis max);

// The entries of a list the pool may believe: workers (pending or running; stopping and
// stopped entries are dropped without a word) with valid names that are not a refused create's
// machine under another name.
struct CheckedList {
  std::vector<backends::ListedWorker> workers;  // the entries the pool may believe
  std::vector<std::string> problems;            // one line per refused entry
};
CheckedList CheckListed(std::vector<backends::ListedWorker> listed, const std::deque<std::string>& refused_answers);

// The first field of a refused create answer that has a field separator in it ("my" of
// "my machine"): a machine listed under that name after the create was launched is the one the
// create made, split by the list's format, not a machine of its own; "" when there is none.
std::string_view FirstFieldOfRefused(std::string_view refused_answer);

// The problems of a list as one line: the first few, and how many more.
std::string SummarizeListProblems(const std::vector<std::string>& problems);

}  // namespace tidepool::autoscaler
