// Watching a workspace root an agent has made, so that it need not walk the root before and after
// every task to know what is there (spec P12: an unchanged tree adds < 50 ms).
//
// A RootWatch holds an inotify watch on every directory under one root. What it vouches for:
// every path created, written, re-moded, renamed or deleted under the root since it was started
// (or since the last Clear) is in dirty(), unless lost() is true. It does not vouch for writes
// through a hard link from outside the root or through a mapping already open (inotify sees
// neither); a dirty file with more than one link is never taken as unchanged (see StillMatches),
// which covers links within the root.
//
// The intended use: Start, then scan (the scan's result is then what the watch vouches for); later
// Drain, and if !lost() and StillMatches(root, state, dirty()), the root is still `state` and
// needs no scan; Clear after accounting for the dirty paths. Not thread-safe: one thread (the
// agent's event loop) owns it.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"

namespace tidepool::workspace {

class RootWatch {
 public:
  // Watches `root` (absolute) and every directory below it. Fails when inotify cannot be had
  // (out of instances or watches): the caller then scans every time.
  static Result<std::unique_ptr<RootWatch>> Start(const std::string& root);
  ~RootWatch();
  RootWatch(const RootWatch&) = delete;
  RootWatch& operator=(const RootWatch&) = delete;

  // Reads the events queued so far into dirty() (new directories get watches of their own).
  void Drain();
  // The watch cannot vouch for the root any more: the kernel's queue overflowed, the root itself
  // was moved or removed, a directory was renamed (its watches' paths would be wrong), or a new
  // directory could not be watched. Only a new Start mends it.
  bool lost() const { return lost_; }
  // Paths relative to the root ("" = the root) touched since Start or Clear.
  const std::set<std::string>& dirty() const { return dirty_; }
  void Clear() { dirty_.clear(); }

 private:
  RootWatch(int fd, std::string root) : fd_(fd), root_(std::move(root)) {}
  bool AddTree(const std::string& rel);  // watches rel and every directory below it

  int fd_;
  std::string root_;
  std::map<int, std::string> dirs_;  // watch descriptor -> directory relative to the root
  std::set<std::string> dirty_;
  bool lost_ = false;
};

// Whether each of `dirty` (paths relative to `root`) is on disk as `state` says (the same kind and
// mode; for a file the same size and mtime and no second link; for a link the same target), or absent
// from both. A path absent from `state` but present on disk (even one an ignore file would leave
// out) is a difference: only a scan can tell.
bool StillMatches(const std::string& root, const v1::WorkspaceRoot& state, const std::set<std::string>& dirty);

}  // namespace tidepool::workspace
