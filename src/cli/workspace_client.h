// The client's side of the workspace (../shared/spec/workspace.md): before a submission, the
// caller's files go to the server (only what it lacks); after the task, its changes come back.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/client.h"
#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/diff.h"
#include "workspace/scan.h"

namespace tidepool::cli {

// Asks the server whether the pool `spec` names brings files (WorkspaceService.Settings). If
// so: scans the caller's workspace (the git work tree holding spec->cwd(), or that directory,
// plus the pool's extra paths), uploads what the server lacks (resuming a cut-off upload), and
// names it in spec->workspace. The progress line ("syncing workspace: 1,203 files, 48 MB to
// send") goes to stderr unless `quiet`. `base` receives the manifest (for BringBack).
Status PrepareWorkspace(Client& client, v1::TaskSpec* spec, bool quiet, v1::WorkspaceManifest* base);

// TIDEPOOL_CLIENT_TRACE (as the small clients): what each step of the workspace took, on stderr.
class Trace {
 public:
  Trace();
  void Step(const char* what);

 private:
  bool on_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// The pieces PrepareWorkspace is made of, which the workspace daemon (workspace_daemon.h) shares.
// ~/.cache/tidepool (or $XDG_CACHE_HOME/tidepool): the client's caches.
std::string CacheHome();
// What the pool wants (WorkspaceService.Settings) for the pool and kind `spec` names.
Result<v1::WorkspaceSettings> AskSettings(Client& client, const v1::TaskSpec& spec);
// The workspace of `cwd`: its git work tree or itself, then the pool's extra paths not inside it;
// empty when it is / (no project: nothing to bring).
std::vector<std::string> WorkspaceRoots(const std::string& cwd, const v1::WorkspaceSettings& settings);
// The name of a set of roots among the caches (stat-KEY, manifest-KEY).
std::string RootsKey(const std::vector<std::string>& roots);
// The stat cache of these roots (CACHE/stat-KEY; empty when there is none yet).
workspace::StatCache LoadStatCache(const std::vector<std::string>& roots);
// The caller's tree as the pool's rules say (two walkers; files whose stat `stat_cache` knows are
// not read); errors are prefixed "workspace: ", as the caller is told them.
Result<workspace::ScanResult> ScanCallersTree(const std::vector<std::string>& roots, bool gitignore, uint64_t max_bytes,
                                              workspace::StatCache* stat_cache);
// A line for the caller's stderr (progress, reports): printed, or sent to whoever asked.
using Say = std::function<void(const std::string& line)>;
void SayOnStderr(const std::string& line);

struct Upload {
  const std::string& hash;  // the manifest: its name, serialization and content
  const std::string& bytes;
  const v1::WorkspaceManifest& manifest;
  std::string base_hash;  // a manifest the server may have ("" = none): then only the difference goes
  std::string_view base_bytes;
  // That difference, when the caller knows it already (the workspace daemon, from what its watches
  // saw): not made again from the two serializations, and the server is not first asked whether
  // it has the manifest (it says so when it is given the delta).
  const v1::ManifestDelta* delta = nullptr;
};
// Puts the manifest and every file it names that the server lacks into the caller's store,
// resuming cut-off transfers; the progress line goes to `say` unless `quiet`. True when anything
// was sent (false: the server had the manifest already).
Result<bool> PutOnServer(Client& client, const Upload& upload, bool quiet, const Say& say);

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

// "tidepool: workspace: ..." lines for conflicts, naming how to settle them ("" when none).
std::string ConflictReport(const BroughtBack& b, const std::string& task_id);
void ReportConflicts(const BroughtBack& b, const std::string& task_id);

}  // namespace tidepool::cli
