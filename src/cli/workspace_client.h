// The client's side of the workspace (../shared/spec/workspace.md): before a submission, the
// caller's files go to the server (only what it lacks); after the task, its changes come back.
#pragma once

#include <string>
#include <vector>

#include "cli/client.h"
#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/diff.h"

namespace tidepool::cli {

// Asks the server whether the pool `spec` names brings files (WorkspaceService.Settings). If
// so: scans the caller's workspace (the git work tree holding spec->cwd(), or that directory,
// plus the pool's extra paths), uploads what the server lacks (resuming a cut-off upload), and
// names it in spec->workspace. The progress line ("syncing workspace: 1,203 files, 48 MB to
// send") goes to stderr unless `quiet`. `base` receives the manifest (for BringBack).
Status PrepareWorkspace(Client& client, v1::TaskSpec* spec, bool quiet, v1::WorkspaceManifest* base);

struct BroughtBack {
  std::vector<std::string> conflicts;  // not brought back: the caller changed them meanwhile
  uint64_t written = 0, deleted = 0;
};

// Brings the changes from `base` to `result` (manifest hashes in the caller's store; `base_known`
// may hold the base already) into the caller's tree. With kStop and conflicts, nothing changes.
Result<BroughtBack> BringBack(Client& client, const std::string& base, const std::string& result,
                              workspace::OnConflict on_conflict, const v1::WorkspaceManifest* base_known = nullptr);

// Several results of one base (a group's shards), merged: a path changed by two of them in
// different ways is a conflict and is not brought back.
Result<BroughtBack> BringBackAll(Client& client, const std::string& base, const std::vector<std::string>& results,
                                 workspace::OnConflict on_conflict);

// "tidepool: workspace: ..." lines for conflicts, naming how to settle them.
void ReportConflicts(const BroughtBack& b, const std::string& task_id);

}  // namespace tidepool::cli
