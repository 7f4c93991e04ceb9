// Ignore rules for a workspace scan: `.tidepoolignore` files (and `.gitignore` files when asked),
// with gitignore's semantics.
//
// An ignore file in directory D (relative to the root, "" = the root) applies to paths below D.
// Each line is a pattern; blank lines and lines starting with `#` are skipped, trailing spaces are
// dropped (unless escaped with `\`), and `\` escapes the next character (`\#`, `\!`, `\*`).
//   !pat      re-includes what an earlier pattern ignored (the last matching pattern wins; the
//             patterns of a deeper file win over those of its ancestors)
//   pat/      matches directories only
//   a/b       a pattern with a `/` other than a trailing one is anchored to D (a leading `/` only
//             anchors); without one it matches the name at any depth below D
//   * ? [a-z] [!a-z]   within one path component (never `/`)
//   **/x  x/**  a/**/b  any number of directories (leading, trailing: everything inside, middle)
// A directory that is ignored is not descended into, so nothing below it can be re-included
// (as in git). Nothing is ignored by default: `.git` is part of the workspace unless a pattern
// says otherwise. Names are bytes; no locale or encoding is assumed.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tidepool::workspace {

// The patterns of one ignore file.
class IgnoreList {
 public:
  // `base`: the directory holding the file, relative to the root ("" = the root), no trailing '/'.
  static std::shared_ptr<const IgnoreList> Parse(std::string base, std::string_view text);

  enum class Verdict { kNoMatch, kIgnored, kIncluded };
  // What the last pattern matching `path` (relative to the root, below base()) says.
  Verdict Match(std::string_view path, bool is_dir) const;

  const std::string& base() const { return base_; }
  size_t size() const { return patterns_.size(); }

 private:
  struct Pattern {
    std::vector<std::string> parts;  // '/'-separated components; "**" is any number of them
    bool negate = false;
    bool dir_only = false;
    bool anchored = false;  // else `parts` has one component, matched against the name
  };
  std::string base_;
  std::vector<Pattern> patterns_;
};

// The ignore lists in force at one point of a walk: those of the directories from the root down.
class IgnoreStack {
 public:
  void Push(std::shared_ptr<const IgnoreList> list) { lists_.push_back(std::move(list)); }
  size_t depth() const { return lists_.size(); }
  void Truncate(size_t depth) { lists_.resize(depth); }
  // True when the deepest list with a matching pattern says ignored.
  bool Ignored(std::string_view path, bool is_dir) const;

 private:
  std::vector<std::shared_ptr<const IgnoreList>> lists_;
};

// Glob match of one path component (`*`, `?`, `[...]`, `\` escapes; bytes, no locale).
bool MatchComponent(std::string_view pattern, std::string_view name);

}  // namespace tidepool::workspace
