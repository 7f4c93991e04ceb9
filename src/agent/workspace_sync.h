// One task's workspace on an agent (workspace.proto): before the command starts, its cache is
// filled from the server and the roots are made to match the task's manifest; after the command
// ends, what it changed is put into the owner's store on the server, and the exit report names
// the result.
//
// Driven by the agent's event-loop thread alone (no locks): it sends through `send`, and the
// agent hands it the server's answers to its requests (request ids from `next_id`). Scanning and
// writing files happen on that thread, with the filesystem rights of the task's user when the
// agent runs each owner's tasks as a user of their own (agent/task_users.h, agent/fs_user.h): a
// manifest cannot make a root agent write a path its owner could not, nor a result read one. That
// owner's store in the cache is then theirs (the cache's parent is 0711: crossed, not listed).
//
// The agent's cache holds one store per owner (a cache shared by owners would tell one whether
// another has a file), under CACHE_DIR/<OwnerStoreName(owner)> (workspace/blob_dir.h), root's alone
// (0700). The roots themselves are shared by the tasks of one agent: a task starting in a root
// where another still runs changes the files under it (as two commands in one directory would).
//
// A root the agent has made is watched (workspace/root_watch.h): while the watch vouches that
// nothing under it changed, or that what changed is as the agent left it, the root is not walked
// again, neither before a task (to make it match) nor after one (to see what the task changed).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "tidepool/v1/agent.pb.h"
#include "workspace/blob_dir.h"
#include "workspace/diff.h"
#include "workspace/scan.h"
#include "workspace/root_watch.h"

namespace tidepool::agent {

// What an agent keeps across its tasks' workspaces.
struct WorkspaceShared {
  std::string cache_dir;
  // What each root path was last left as (made to match a manifest, or scanned after a task), and
  // the watch that vouches it still is (none: it is scanned when next used).
  struct Root {
    std::shared_ptr<const v1::WorkspaceManifest> manifest;  // state() is its roots(index)
    int index = 0;
    bool gitignore = false;  // the ignore rules a scan of it used
    std::unique_ptr<workspace::RootWatch> watch;
    uint64_t used = 0;  // when a task last started in it (the least recently used go first)
    const v1::WorkspaceRoot& state() const { return manifest->roots(index); }
  };
  std::map<std::string, Root> roots;  // at most kMaxRoots (each watch is an inotify instance)
  static constexpr size_t kMaxRoots = 16;
  uint64_t clock = 0;
  std::map<std::string, uint64_t> unevicted;  // per owner: bytes fetched since its cache was last trimmed
  std::set<std::string> trimmed;               // owners whose cache was trimmed since the agent started
  // The manifest last parsed (and whose): a task in an unchanged tree does not parse it again.
  std::string parsed_owner, parsed_hash;
  std::shared_ptr<const v1::WorkspaceManifest> parsed;
  uint64_t next_id = 1;
};

class TaskWorkspace {
 public:
  using Send = std::function<bool(v1::AgentMessage)>;
  TaskWorkspace(std::string task_id, std::string owner, v1::WorkspaceStart start, int64_t uid, int64_t gid,
                WorkspaceShared* shared, Send send);

  // Fetches what the cache lacks, then makes the roots; `ready` gets OK or why the task cannot
  // start (it does not start on a partial tree).
  void Prepare(std::function<void(Status)> ready);
  // After the command: scans the roots, sends the server what it lacks, and gives `done` the
  // result manifest's hash (or why it could not be sent).
  void Collect(std::function<void(Result<std::string>)> done);

  // The server's answers; false if `id` is not one of this workspace's requests.
  bool OnBlobData(const v1::BlobData& d);
  bool OnBlobAnswer(const v1::BlobQueryAnswer& a);
  // The link came back: requests in flight were lost with the old one and go again.
  void Reconnected();

 private:
  // Runs `work` with the task owner's filesystem rights (agent/fs_user.h), then the callback it
  // left (ready or done) with the agent's own.
  void AsOwner(const std::function<void()>& work);
  Status OwnCache(const std::string& dir);
  void Done(Result<std::string> r);
  void HandleBlobData(const v1::BlobData& d);
  Status TakeDelta(const v1::ManifestDelta& delta);
  void HandleBlobAnswer(const v1::BlobQueryAnswer& a);
  void CollectAsOwner();
  void FetchMissing();
  bool Plan();  // false: failed (Fail called)
  // Root `i` (at `path`), which is as delta_base_ has it: its changes from the delta's paths alone,
  // appended to changes_. False when the delta has it whole (or not at all).
  bool DiffByDelta(const std::string& path, const v1::WorkspaceRoot& before, int i);
  void Materialize();
  // Whether root `i` of the task's manifest is still as the agent left it after Materialize (by
  // its watch, without walking it).
  bool Unchanged(int i);
  // Root `i` brought up to date from what its watch saw change (workspace::Rescan), or nullopt:
  // it must be scanned whole.
  std::optional<v1::WorkspaceRoot> Rescan(int i);
  // Scans one root (a new watch first, so what the scan finds is vouched for from then on).
  Result<workspace::ScanResult> ScanRoot(const std::string& path, const v1::WorkspaceRoot* known);
  void Query();
  void Fail(const Status& s);

  std::string task_id_, owner_;
  v1::WorkspaceStart start_;
  int64_t uid_, gid_;
  WorkspaceShared* shared_;
  Send send_;
  std::optional<workspace::BlobDir> cache_;
  std::shared_ptr<const v1::WorkspaceManifest> manifest_;
  // Planned: the changes that make the roots match the manifest, and the content they need.
  bool planned_ = false;
  std::vector<workspace::Change> changes_;
  std::set<std::string> needed_;
  bool fetched_ = false;  // content came into the cache
  // The manifest came as this delta from delta_base_ (the one parsed before).
  std::optional<v1::ManifestDelta> delta_;
  std::shared_ptr<const v1::WorkspaceManifest> delta_base_;
  bool whole_manifest_ = false;  // a delta did not make it: asked for whole
  std::map<std::string, std::unique_ptr<workspace::RootWatch>> new_watches_;  // started by Plan's scans

  enum class Phase { kIdle, kFetching, kReady, kCollecting, kDone } phase_ = Phase::kIdle;
  uint64_t request_ = 0;  // the id of the request in flight (0 = none)
  std::chrono::steady_clock::time_point began_;  // of Prepare, then of Collect (for the log)
  double manifest_ms_ = 0, plan_ms_ = 0;          // when Prepare had the manifest, and the plan
  std::function<void(Status)> ready_;
  std::function<void()> pending_;  // the callback to run once the owner's rights are given back
  std::function<void(Result<std::string>)> done_;
  // Collecting: the result, and what the server was last told it lacks.
  std::string result_hash_;
  std::set<std::string> to_send_;
  int rounds_without_progress_ = 0;
  size_t last_missing_ = SIZE_MAX;
};

}  // namespace tidepool::agent
