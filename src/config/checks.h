// Checks and parsers for values whose format is more than their type: pool names, schedule
// days and hours, time zones, store URLs, addresses.
//
// Each returns a non-OK status whose message says what is wrong and what is allowed.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tidepool::config {

// 1-63 characters of [a-z0-9-], starting with a letter (pool names become labels and hosts).
Status CheckPoolName(std::string_view name);

// One `days` entry: "mon".."sun", a range "mon-fri" (may wrap: "fri-mon"), "weekdays",
// "weekends". Case-insensitive. Returns days as 0 = Sunday ... 6 = Saturday.
Result<std::vector<int>> ParseDays(std::string_view entry);

// "HH:MM-HH:MM" -> minutes since midnight [start, end); 24:00 is allowed as the end.
Result<std::pair<int, int>> ParseHours(std::string_view text);

// An IANA zone name that exists under `zoneinfo_dir`.
Status CheckTimeZone(std::string_view tz, const std::string& zoneinfo_dir = "/usr/share/zoneinfo");

// `sqlite:PATH`, `postgresql://...` or `postgres://...`. Never echoes the URL (it may hold a
// password).
Status CheckDbUrl(std::string_view db);
bool IsPostgresUrl(std::string_view db);

// HOST:PORT, [V6]:PORT; port 0-65535 (0 = pick one, for tests).
Status CheckHostPort(std::string_view address);


}  // namespace tidepool::config
