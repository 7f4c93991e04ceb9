// Wall-clock helpers. Decisions use std::chrono::steady_clock; these are for display and storage.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tidepool {

using SteadyTime = std::chrono::steady_clock::time_point;

int64_t NowUnixMs();
// RFC 3339 in UTC with milliseconds, "" for 0.
std::string FormatRfc3339(int64_t unix_ms);
// An RFC 3339 time ("2026-12-07T01:02:03Z", "...03.25+01:00") as Unix milliseconds; nullopt if it
// is not one.
std::optional<int64_t> ParseRfc3339(const std::string& text);
// "3s", "5m", "2h", "3d": for AGE / LAST-SEEN columns.
std::string FormatAge(int64_t ms);

}  // namespace tidepool
