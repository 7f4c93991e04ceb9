#include "backends/slurm/slurm_time.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/duration.h"
#include "common/strings.h"

namespace tidepool::backends {

namespace {

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Status CheckSlurmTimeLimit(std::string_view text) {
  std::string t(Trim(text));
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "unlimited" || t == "infinite") return Status::Ok();
  std::string_view rest = t;
  if (size_t dash = rest.find('-'); dash != std::string_view::npos) {
    rest = AllDigits(rest.substr(0, dash)) ? rest.substr(dash + 1) : std::string_view();
  }
  std::vector<std::string> parts = Split(rest, ':');
  bool ok = !rest.empty() && parts.size() <= 3;
  for (const std::string& p : parts) ok = ok && AllDigits(p);
  if (ok) return Status::Ok();
  return InvalidArgument("invalid Slurm time limit \"" + std::string(text) +
                         "\": use MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or "
                         "UNLIMITED");
}

std::optional<int64_t> SlurmTimeSeconds(std::string_view text) {
  if (!CheckSlurmTimeLimit(text).ok()) {
    auto d = ParseDuration(Trim(text));
    if (d.ok() && d->count() > 0) return (d->count() + 59999) / 60000 * 60;
    return std::nullopt;
  }
  std::string t(Trim(text));
  if (!AllDigits(t.substr(0, 1))) return std::nullopt;  // UNLIMITED
  int64_t days = -1;
  if (size_t dash = t.find('-'); dash != std::string::npos) {
    days = std::stoll(t.substr(0, dash));
    t = t.substr(dash + 1);
  }
  std::vector<int64_t> p;
  for (const std::string& x : Split(t, ':')) p.push_back(x.empty() ? 0 : std::stoll(x));
  if (days >= 0) {  // D-H, D-H:M, D-H:M:S
    int64_t h = p.size() > 0 ? p[0] : 0, m = p.size() > 1 ? p[1] : 0, sec = p.size() > 2 ? p[2] : 0;
    return ((days * 24 + h) * 60 + m) * 60 + sec;
  }
  if (p.size() == 1) return p[0] * 60;              // M
  if (p.size() == 2) return p[0] * 60 + p[1];       // M:S
  return (p[0] * 60 + p[1]) * 60 + p[2];            // H:M:S
}

Result<std::string> SlurmTimeArg(std::string_view text) {
  if (CheckSlurmTimeLimit(text).ok()) return std::string(Trim(text));
  auto d = ParseDuration(Trim(text));
  if (d.ok() && d->count() > 0) return std::to_string((d->count() + 59999) / 60000);
  return InvalidArgument("invalid Slurm time limit \"" + std::string(text) +
                         "\": use MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, UNLIMITED or a duration "
                         "such as 8h");
}

}  // namespace tidepool::backends
