#include "backends/planned/slurm_time.h"

#include <algorithm>
#include <string>
#include <vector>

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

}  // namespace tidepool::backends
