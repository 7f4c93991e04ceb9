// Logging setup. Everything logs through spdlog's default logger.
//
// Secrets: never pass a token, key or credential to a log call. Values that may hold one
// (task environments, backend configs) are not logged at all.
#pragma once

#include <string>

namespace tidepool {

// level: trace|debug|info|warn|error; file "" = stderr.
void InitLogging(const std::string& level, const std::string& file = "");

}  // namespace tidepool
