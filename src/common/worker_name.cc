#include "common/worker_name.h"

#include <algorithm>

#include <fmt/format.h>

namespace tidepool {

namespace {

bool NameByte(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

std::string ByteName(unsigned char c) {
  if (c == ' ') return "a space";
  if (c == '\t') return "a tab";
  if (c == '\n') return "a newline";
  if (c >= 0x21 && c < 0x7f) return fmt::format("'{}'", static_cast<char>(c));
  return fmt::format("byte 0x{:02x}", c);
}

}  // namespace

std::string WorkerNameProblem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > kMaxWorkerName) {
    return fmt::format("is {} bytes (a worker name is at most {})", name.size(), kMaxWorkerName);
  }
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (!NameByte(c)) {
      return fmt::format("has {} at byte {} (a worker name is only A-Z a-z 0-9 . _ -)", ByteName(c), i + 1);
    }
  }
  return "";
}

std::string QuoteForLog(std::string_view s, size_t max) {
  std::string out = "\"";
  const size_t n = std::min(s.size(), max);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (n < s.size()) out += fmt::format("… ({} bytes)", s.size());
  return out;
}

}  // namespace tidepool
