// Wall-clock helpers. Decisions use std::chrono::steady_clock; these are for display and storage.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace tidepool {

using SteadyTime = std::chrono::steady_clock::time_point;

int64_t NowUnixMs();
// RFC 3339 in UTC with milliseconds, "" for 0.
std::string FormatRfc3339(int64_t unix_ms);
// "3s", "5m", "2h", "3d": for AGE / LAST-SEEN columns.
std::string FormatAge(int64_t ms);

}  // namespace tidepool
