// One task's workspace on an agent (workspace.proto): before the command starts, its cache is
// filled from the server and the roots are made to match the task's manifest; after the command
// ends, what it changed is put into the owner's store on the server, and the exit report names
// the result.
//
// Driven by the agent's event-loop thread alone (no locks): it sends through `send`, and the
// agent hands it the server's answers to its requests (request ids from `next_id`). Scanning and
// writing files happen on that thread.
//
// The agent's cache holds one store per owner (a cache shared by owners would tell one whether
// another has a file), under CACHE_DIR/<OwnerStoreName(owner)> (workspace/blob_dir.h), root's alone
// (0700). The roots themselves are shared by the tasks of one agent: a task starting in a root
// where another still runs changes the files under it (as two commands in one directory would).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "common/status.h"
#include "tidepool/v1/agent.pb.h"
#include "workspace/blob_dir.h"

namespace tidepool::agent {

// What an agent keeps across its tasks' workspaces.
struct WorkspaceShared {
  std::string cache_dir;
  // The manifest last made at each root path, so a later task's scan need not read unchanged files.
  std::map<std::string, v1::WorkspaceRoot> applied;
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
  void FetchMissing();
  void Materialize();
  void Query();
  void Fail(const Status& s);

  std::string task_id_, owner_;
  v1::WorkspaceStart start_;
  int64_t uid_, gid_;
  WorkspaceShared* shared_;
  Send send_;
  std::optional<workspace::BlobDir> cache_;
  std::optional<v1::WorkspaceManifest> manifest_;

  enum class Phase { kIdle, kFetching, kReady, kCollecting, kDone } phase_ = Phase::kIdle;
  uint64_t request_ = 0;  // the id of the request in flight (0 = none)
  std::function<void(Status)> ready_;
  std::function<void(Result<std::string>)> done_;
  // Collecting: the result, and what the server was last told it lacks.
  std::string result_hash_;
  std::set<std::string> to_send_;
  int rounds_without_progress_ = 0;
  size_t last_missing_ = SIZE_MAX;
};

}  // namespace tidepool::agent
