// What changed between two manifests of the same roots, and applying that to a tree.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/blob_dir.h"

namespace tidepool::workspace {

struct Change {
  std::string root;                        // absolute
  std::string path;                        // relative to root ("" = the root)
  std::optional<v1::WorkspaceEntry> before;  // nullopt: created
  std::optional<v1::WorkspaceEntry> after;   // nullopt: deleted
};

// A path as an entry may have: relative, '/'-separated, no empty, "." or ".." component, no NUL
// ("" is the root itself).
bool IsWorkspacePath(const std::string& p);

// Every path whose entry differs (kind, mode, hash, target; for files also size; mtime alone is
// not a change), in an order that can be applied: creations of a directory before its contents,
// deletions of contents before their directory. Roots only in `after` are all creations.
std::vector<Change> Diff(const v1::WorkspaceManifest& before, const v1::WorkspaceManifest& after);
// The same for one root at `root` (either side may be null: absent), appended to `out`.
void DiffRoot(const std::string& root, const v1::WorkspaceRoot* before, const v1::WorkspaceRoot* after,
              std::vector<Change>* out);

enum class OnConflict {
  kStop,    // report conflicts, change nothing at all
  kTheirs,  // the change wins over what is there
  kOurs,    // what is there stays; the other changes are applied
};

struct ApplyOptions {
  OnConflict on_conflict = OnConflict::kStop;
  // When false, what is on disk is not compared with `before` (the agent making its own tree
  // match a manifest: there is no one else's edit to protect).
  bool check_current = true;
  int64_t uid = -1, gid = -1;  // >= 0: chown what is created
  bool set_mtime = true;       // files get the entry's mtime_ns
};

struct ApplyResult {
  std::vector<std::string> conflicts;  // "ROOT/PATH" of each: on disk it is neither `before` nor `after`
  uint64_t written = 0, deleted = 0;
};

// Applies `changes`. For each path, what is on disk now must match `before` (or already match
// `after`: nothing to do) or it is a conflict; with kStop and any conflict, nothing is changed.
// Files are written to a temporary name in the same directory and renamed over, so a reader
// never sees half a file; content comes from `blobs`. A missing blob is an error naming it,
// found before anything is changed.
Result<ApplyResult> Apply(const std::vector<Change>& changes, const BlobDir& blobs, const ApplyOptions& options);

}  // namespace tidepool::workspace
