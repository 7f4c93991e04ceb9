#include "config/expand.h"

#include <vector>

#include "common/strings.h"

namespace tidepool::config {

bool IsEnvName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && i > 0))) return false;
  }
  return true;
}

Result<std::string> ExpandEnv(std::string_view text, const EnvLookup& env,
                              std::string_view unset_ok) {
  std::string out;
  std::vector<std::string> unset;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '$' || i + 1 >= text.size() || text[i + 1] != '{') {
      out += text[i++];
      continue;
    }
    size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      return InvalidArgument("unterminated \"${\" (write ${NAME} or ${NAME:-default})");
    }
    std::string_view body = text.substr(i + 2, close - i - 2);
    std::string_view name = body;
    std::optional<std::string_view> fallback;
    if (size_t sep = body.find(":-"); sep != std::string_view::npos) {
      name = body.substr(0, sep);
      fallback = body.substr(sep + 2);
    }
    if (!IsEnvName(name)) {
      return InvalidArgument("invalid variable name \"" + std::string(name) + "\" in ${...}");
    }
    std::optional<std::string> value = env ? env(std::string(name)) : std::nullopt;
    if (fallback && (!value || value->empty())) {
      out += *fallback;
    } else if (value) {
      out += *value;
    } else if (name != unset_ok) {
      unset.emplace_back(name);
    }
    i = close + 1;
  }
  if (unset.size() == 1) {
    return InvalidArgument("environment variable " + unset[0] + " is not set (use ${" + unset[0] +
                           ":-default} to give a default)");
  }
  if (!unset.empty()) {
    return InvalidArgument("environment variables " + Join(unset, ", ") + " are not set");
  }
  return out;
}

}  // namespace tidepool::config
