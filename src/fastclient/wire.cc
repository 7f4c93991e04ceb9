#include "fastclient/wire.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "cli/client_env.h"

namespace tidepool::fastclient {

bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  for (char ch : *port) {
    if (ch < '0' || ch > '9') return false;
  }
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
    for (char ch : *host) {
      if (!std::isxdigit(static_cast<unsigned char>(ch)) && ch != ':' && ch != '.') return false;
    }
    return true;
  }
  if (host->empty()) return false;
  for (char ch : *host) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') return false;
  }
  return true;
}

json ParseJson(const std::string& payload) {
  json j = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json::object();
}
std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}
int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}
bool Bool(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

bool AwaitAnswer(Connection& conn, const std::string& address) {
  static bool told = false;
  if (told || conn.WaitReadable(kWelcomeTimeoutMs)) return told;
  fmt::print(stderr, "tidepool: the server at {} has not answered for {} s; still waiting while the connection is open\n",
             address, kWelcomeTimeoutMs / 1000);
  told = true;
  return told;
}

[[noreturn]] void LostUnanswered(const std::string& address) {
  fmt::print(stderr, "tidepool: the connection to the server at {} ended before it answered; the request may have been taken\n",
             address);
  std::fflush(stderr);
  std::exit(cli::kExitTidepoolFailed);
}

}  // namespace tidepool::fastclient
