// Small string helpers the standard library lacks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tidepool {

std::vector<std::string> Split(std::string_view s, char sep);
std::vector<std::string> SplitWhitespace(std::string_view s);
std::string_view Trim(std::string_view s);
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
// Quotes an argv for display the way a shell user would type it.
std::string ShellQuote(const std::vector<std::string>& argv);

}  // namespace tidepool
