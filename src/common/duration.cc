#include "common/duration.h"

#include <cmath>
#include <cstdint>

#include <fmt/format.h>

namespace tidepool {

namespace {

struct Unit {
  std::string_view name;
  double ms;
};

// Longest names first so "ms" is not read as "m".
constexpr Unit kUnits[] = {
    {"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3}, {"ms", 1.0},
    {"s", 1e3},   {"m", 60e3},  {"h", 3600e3}, {"d", 86400e3},
};

}  // namespace

Result<Millis> ParseDuration(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty()) return InvalidArgument("empty duration");
  if (s == "0") return Millis(0);
  if (s.front() == '-') return InvalidArgument(fmt::format("negative duration \"{}\"", text));
  double total_ms = 0;
  while (!s.empty()) {
    size_t i = 0;
    bool dot = false;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && !dot))) {
      if (s[i] == '.') dot = true;
      ++i;
    }
    if (i == 0 || (i == 1 && dot)) {
      return InvalidArgument(fmt::format(
          "invalid duration \"{}\" (expected e.g. \"300s\", \"0.5s\", \"5m\", \"1h30m\")", text));
    }
    double number = std::stod(std::string(s.substr(0, i)));
    s.remove_prefix(i);
    const Unit* unit = nullptr;
    for (const Unit& u : kUnits) {
      if (s.substr(0, u.name.size()) == u.name) {
        // "m" must not swallow the "m" of "ms".
        if (u.name == "m" && s.size() > 1 && s[1] == 's') continue;
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) {
      return InvalidArgument(fmt::format(
          "invalid duration \"{}\": missing or unknown unit (use ms, s, m, h or d)", text));
    }
    s.remove_prefix(unit->name.size());
    total_ms += number * unit->ms;
  }
  if (total_ms > 1e15) return InvalidArgument(fmt::format("duration \"{}\" is too large", text));
  return Millis(static_cast<int64_t>(std::llround(total_ms)));
}

std::string FormatDuration(Millis d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  if (ms < 1000) return out + fmt::format("{}ms", ms);
  int64_t h = ms / 3600000;
  int64_t m = (ms / 60000) % 60;
  int64_t s = (ms / 1000) % 60;
  int64_t rest = ms % 1000;
  if (h) out += fmt::format("{}h", h);
  if (m) out += fmt::format("{}m", m);
  if (rest) {
    std::string frac = fmt::format("{:03d}", rest);
    while (frac.back() == '0') frac.pop_back();
    out += fmt::format("{}.{}s", s, frac);
  } else if (s) {
    out += fmt::format("{}s", s);
  }
  return out;
}

}  // namespace tidepool
