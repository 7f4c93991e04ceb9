// Worker names, checked at the door (issue 17, "Names checked at the door"): 1-253 bytes of
// [A-Za-z0-9._-], DNS-like. A name from anywhere outside the server (a backend's create answer or
// list, an agent's hello) is checked before it is used, logged or stored; a refusal quotes at most
// a bounded prefix of what it refuses (QuoteForLog), so a 10 MB name makes a one-line message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tidepool {

inline constexpr size_t kMaxWorkerName = 253;

// "" when `name` is a valid worker name, else why not ("is empty", "is 10485760 bytes (at most
// 253)", "has ' ' at byte 3; ...").
std::string WorkerNameProblem(std::string_view name);
inline bool IsValidWorkerName(std::string_view name) { return WorkerNameProblem(name).empty(); }

// `s` quoted for one log line: at most `max` bytes of it, control and non-ASCII bytes escaped
// (\n, \xNN), and when cut, how long it was: "aaaa…" (10485760 bytes).
std::string QuoteForLog(std::string_view s, size_t max = 64);

}  // namespace tidepool
