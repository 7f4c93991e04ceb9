// Durations as written in config files and flags.
//
// Accepted: protobuf style ("300s", "0.5s") and human style ("5m", "12h", "1h30m", "90s",
// "250ms"); units ns, us, ms, s, m, h, d; a bare "0" means zero.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tidepool {

using Millis = std::chrono::milliseconds;

Result<Millis> ParseDuration(std::string_view text);

// Shortest human form: "0s", "250ms", "90s" -> "1m30s", "2h".
std::string FormatDuration(Millis d);

}  // namespace tidepool
