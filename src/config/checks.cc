#include "config/checks.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>

#include "common/strings.h"

namespace tidepool::config {

namespace {

constexpr std::string_view kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

int DayIndex(std::string_view name) {
  for (int i = 0; i < 7; ++i) {
    if (name == kDayNames[i]) return i;
  }
  return -1;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int ToInt(std::string_view s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// "HH:MM" -> minutes; -1 when malformed. 24:00 is accepted here; the caller limits it to ends.
int ParseClock(std::string_view s) {
  if (s.size() != 5 || s[2] != ':' || !AllDigits(s.substr(0, 2)) || !AllDigits(s.substr(3))) {
    return -1;
  }
  int h = ToInt(s.substr(0, 2)), m = ToInt(s.substr(3));
  if (m > 59 || h > 24 || (h == 24 && m != 0)) return -1;
  return h * 60 + m;
}

}  // namespace

Status CheckPoolName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  }
  if (ok) return Status::Ok();
  return InvalidArgument("invalid pool name \"" + std::string(name) +
                         "\": use 1-63 lowercase letters, digits and '-', starting with a letter");
}

Result<std::vector<int>> ParseDays(std::string_view entry) {
  std::string e = Lower(Trim(entry));
  if (e == "weekdays") return std::vector<int>{1, 2, 3, 4, 5};
  if (e == "weekends") return std::vector<int>{0, 6};
  std::string_view first = e, last = e;
  if (size_t dash = e.find('-'); dash != std::string::npos) {
    first = std::string_view(e).substr(0, dash);
    last = std::string_view(e).substr(dash + 1);
  }
  int a = DayIndex(first), b = DayIndex(last);
  if (a < 0 || b < 0) {
    return InvalidArgument("invalid day \"" + std::string(entry) +
                           "\": use mon, tue, wed, thu, fri, sat, sun, a range such as mon-fri, "
                           "weekdays or weekends");
  }
  std::vector<int> days;
  for (int d = a;; d = (d + 1) % 7) {
    days.push_back(d);
    if (d == b) break;
  }
  return days;
}

Result<std::pair<int, int>> ParseHours(std::string_view text) {
  std::string_view t = Trim(text);
  size_t dash = t.find('-');
  int start = dash == std::string_view::npos ? -1 : ParseClock(Trim(t.substr(0, dash)));
  int end = dash == std::string_view::npos ? -1 : ParseClock(Trim(t.substr(dash + 1)));
  if (start < 0 || end < 0 || start == 24 * 60) {
    return InvalidArgument("invalid hours \"" + std::string(text) +
                           "\": use \"HH:MM-HH:MM\" (24-hour clock, 24:00 allowed as the end)");
  }
  if (end <= start) {
    return InvalidArgument("invalid hours \"" + std::string(text) +
                           "\": the end must be after the start (split a window that crosses "
                           "midnight in two)");
  }
  return std::make_pair(start, end);
}

Status CheckTimeZone(std::string_view tz, const std::string& zoneinfo_dir) {
  std::string name(tz);
  bool safe = !name.empty() && name[0] != '/' && name.find("..") == std::string::npos;
  struct stat st;
  if (safe && ::stat((zoneinfo_dir + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    return Status::Ok();
  }
  return InvalidArgument("unknown time zone \"" + name + "\" (not found under " + zoneinfo_dir +
                         "; use an IANA name such as \"Europe/Berlin\" or \"UTC\")");
}

bool IsPostgresUrl(std::string_view db) {
  return db.starts_with("postgresql://") || db.starts_with("postgres://");
}

Status CheckDbUrl(std::string_view db) {
  if (db.starts_with("sqlite:") && db.size() > 7) return Status::Ok();
  if (IsPostgresUrl(db)) return Status::Ok();
  return InvalidArgument("db must be \"sqlite:PATH\" or a \"postgresql://\" URL");
}

Status CheckHostPort(std::string_view address) {
  size_t colon = address.rfind(':');
  bool ok = colon != std::string_view::npos && colon > 0;
  if (ok) {
    std::string_view host = address.substr(0, colon), port = address.substr(colon + 1);
    if (host.front() == '[') ok = host.size() > 2 && host.back() == ']';
    else ok = host.find(':') == std::string_view::npos;
    ok = ok && AllDigits(port) && port.size() <= 5 && ToInt(port) <= 65535;
  }
  if (ok) return Status::Ok();
  return InvalidArgument("invalid address \"" + std::string(address) +
                         "\": use HOST:PORT, e.g. \"127.0.0.1:7700\"");
}

}  // namespace tidepool::config
