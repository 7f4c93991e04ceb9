#include "common/redact.h"

#include <algorithm>
#include <cctype>

namespace tidepool {

namespace {

bool ContainsFolded(std::string_view hay, std::string_view needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return std::toupper(static_cast<unsigned char>(a)) == b; });
  return it != hay.end();
}

bool TokenChar(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '_'; }

// The length of a server token (tpw_/tpj_/tpt_ + at least 16 of [0-9a-f_]) starting at `at`, or 0.
size_t ServerTokenAt(std::string_view text, size_t at) {
  if (text.size() - at < 4 || text.substr(at, 2) != "tp" || text[at + 3] != '_') return 0;
  char kind = text[at + 2];
  if (kind != 'w' && kind != 'j' && kind != 't') return 0;
  size_t end = at + 4;
  while (end < text.size() && TokenChar(text[end])) ++end;
  return end - at - 4 >= 16 ? end - at : 0;
}

}  // namespace

bool Redactor::SecretName(std::string_view name) {
  for (std::string_view word : {"TOKEN", "KEY", "SECRET", "PASSWORD"}) {
    if (ContainsFolded(name, word)) return true;
  }
  return false;
}

void Redactor::AddValue(std::string_view value) {
  if (value.size() < kMinLength) return;
  if (std::find(values_.begin(), values_.end(), value) != values_.end()) return;
  values_.emplace_back(value);
  std::stable_sort(values_.begin(), values_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

void Redactor::AddEnvironment(const std::vector<std::string>& env) {
  for (const std::string& kv : env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    if (SecretName(std::string_view(kv).substr(0, eq))) AddValue(std::string_view(kv).substr(eq + 1));
  }
}

std::string Redactor::Scrub(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t len = ServerTokenAt(text, i);
    for (const std::string& v : values_) {
      if (v.size() > len && text.substr(i, v.size()) == v) {
        len = v.size();
        break;  // longest first
      }
    }
    if (len > 0) {
      out += kMarker;
      i += len;
    } else {
      out += text[i++];
    }
  }
  return out;
}

}  // namespace tidepool
