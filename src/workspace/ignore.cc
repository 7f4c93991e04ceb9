#include "workspace/ignore.h"

namespace tidepool::workspace {
namespace {

// Splits on '/' not preceded by a '\' escape; empty components are dropped.
std::vector<std::string> SplitPattern(std::string_view p) {
  std::vector<std::string> parts;
  std::string cur;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size()) {
      cur += p[i];
      cur += p[++i];
    } else if (p[i] == '/') {
      if (!cur.empty()) parts.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += p[i];
    }
  }
  if (!cur.empty()) parts.push_back(std::move(cur));
  return parts;
}

// `[...]` at pattern[pi] (just after '['): sets `matched` and returns the index after ']', or
// npos when there is no closing ']' (then '[' is literal).
size_t MatchClass(std::string_view p, size_t pi, unsigned char c, bool* matched) {
  bool negate = false;
  if (pi < p.size() && (p[pi] == '!' || p[pi] == '^')) {
    negate = true;
    ++pi;
  }
  bool found = false;
  bool first = true;
  while (pi < p.size() && (p[pi] != ']' || first)) {
    first = false;
    unsigned char lo = static_cast<unsigned char>(p[pi]);
    if (lo == '\\' && pi + 1 < p.size()) lo = static_cast<unsigned char>(p[++pi]);
    ++pi;
    unsigned char hi = lo;
    if (pi + 1 < p.size() && p[pi] == '-' && p[pi + 1] != ']') {
      hi = static_cast<unsigned char>(p[pi + 1]);
      pi += 2;
      if (hi == '\\' && pi < p.size()) hi = static_cast<unsigned char>(p[pi++]);
    }
    if (c >= lo && c <= hi) found = true;
  }
  if (pi >= p.size()) return std::string_view::npos;
  *matched = found != negate;
  return pi + 1;
}

// Matches components parts[pi..] against names[ni..]; "**" takes any number of names (at least
// one when it is the last part: `x/**` is what is inside x, not x).
bool MatchParts(const std::vector<std::string>& parts, size_t pi, const std::vector<std::string_view>& names,
                size_t ni) {
  while (pi < parts.size()) {
    if (parts[pi] == "**") {
      if (pi + 1 == parts.size()) return ni < names.size();
      for (size_t k = ni; k <= names.size(); ++k) {
        if (MatchParts(parts, pi + 1, names, k)) return true;
      }
      return false;
    }
    if (ni >= names.size() || !MatchComponent(parts[pi], names[ni])) return false;
    ++pi;
    ++ni;
  }
  return ni == names.size();
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> names;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) names.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return names;
}

}  // namespace

bool MatchComponent(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0;
  size_t star_p = std::string_view::npos, star_s = 0;  // backtracking point of the last '*'
  while (si < s.size()) {
    if (pi < p.size()) {
      char pc = p[pi];
      if (pc == '*') {
        while (pi < p.size() && p[pi] == '*') ++pi;
        star_p = pi;
        star_s = si;
        continue;
      }
      if (pc == '?') {
        ++pi;
        ++si;
        continue;
      }
      if (pc == '[') {
        bool matched = false;
        size_t next = MatchClass(p, pi + 1, static_cast<unsigned char>(s[si]), &matched);
        if (next != std::string_view::npos) {
          if (matched) {
            pi = next;
            ++si;
            continue;
          }
        } else if (s[si] == '[') {
          ++pi;
          ++si;
          continue;
        }
      } else {
        if (pc == '\\' && pi + 1 < p.size()) pc = p[pi + 1];
        if (pc == s[si]) {
          pi += (p[pi] == '\\' && pi + 1 < p.size()) ? 2 : 1;
          ++si;
          continue;
        }
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::shared_ptr<const IgnoreList> IgnoreList::Parse(std::string base, std::string_view text) {
  auto list = std::make_shared<IgnoreList>();
  list->base_ = std::move(base);
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Trailing spaces go, unless escaped.
    while (!line.empty() && line.back() == ' ' && !(line.size() >= 2 && line[line.size() - 2] == '\\')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line[0] == '#') continue;
    Pattern pat;
    if (line[0] == '!') {
      pat.negate = true;
      line.remove_prefix(1);
    }
    if (!line.empty() && line.back() == '/' && !(line.size() >= 2 && line[line.size() - 2] == '\\')) {
      pat.dir_only = true;
      line.remove_suffix(1);
    }
    // A '/' left (leading or in the middle) anchors the pattern to the file's directory.
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\') {
        ++i;
      } else if (line[i] == '/') {
        pat.anchored = true;
        break;
      }
    }
    pat.parts = SplitPattern(line);
    if (pat.parts.empty()) continue;
    // `**/name` is `name` at any depth: the same as an unanchored single component.
    if (pat.parts.size() == 2 && pat.parts[0] == "**" && pat.parts[1] != "**") {
      pat.parts.erase(pat.parts.begin());
      pat.anchored = false;
    }
    list->patterns_.push_back(std::move(pat));
  }
  return list;
}

IgnoreList::Verdict IgnoreList::Match(std::string_view path, bool is_dir) const {
  std::string_view rel = path;
  if (!base_.empty()) {
    if (rel.size() <= base_.size() || rel.substr(0, base_.size()) != base_ || rel[base_.size()] != '/') {
      return Verdict::kNoMatch;
    }
    rel.remove_prefix(base_.size() + 1);
  }
  std::string_view name = rel.substr(rel.rfind('/') + 1);  // npos + 1 == 0
  std::vector<std::string_view> names;
  for (size_t i = patterns_.size(); i-- > 0;) {
    const Pattern& p = patterns_[i];
    if (p.dir_only && !is_dir) continue;
    bool m;
    if (p.anchored) {
      if (names.empty()) names = SplitPath(rel);
      m = MatchParts(p.parts, 0, names, 0);
    } else {
      m = MatchComponent(p.parts[0], name);
    }
    if (m) return p.negate ? Verdict::kIncluded : Verdict::kIgnored;
  }
  return Verdict::kNoMatch;
}

bool IgnoreStack::Ignored(std::string_view path, bool is_dir) const {
  for (size_t i = lists_.size(); i-- > 0;) {
    IgnoreList::Verdict v = lists_[i]->Match(path, is_dir);
    if (v != IgnoreList::Verdict::kNoMatch) return v == IgnoreList::Verdict::kIgnored;
  }
  return false;
}

}  // namespace tidepool::workspace
