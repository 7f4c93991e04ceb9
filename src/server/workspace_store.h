// The server's content stores for workspaces: one per owner (workspace.proto says why), under
// DATA_DIR/workspace/<OwnerStoreName(owner)> (workspace/blob_dir.h). Thread-safe.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/blob_dir.h"

namespace tidepool::server {

class WorkspaceStore {
 public:
  explicit WorkspaceStore(std::string dir) : dir_(std::move(dir)) {}
  // The owner's store, made on first use ("" = the owner of tasks when auth is off).
  Result<workspace::BlobDir*> For(const std::string& owner);

  // A manifest PutManifest made (and wrote to the store): its serialization, the likely base of
  // the store's next delta, and the delta it was made from, what an agent that has that base is
  // sent instead of the whole (agent_blobs.cc). Memory only (after a restart the whole is read or
  // sent): the last kMadePerStore of each store, for at most kMadeStores stores.
  struct Made {
    std::string hash;
    std::shared_ptr<const std::string> bytes;
    std::shared_ptr<const v1::ManifestDelta> delta;
  };
  void KeepMade(const workspace::BlobDir& store, Made made);
  // The one named `hash` of `store`, if kept.
  std::optional<Made> FindMade(const workspace::BlobDir& store, const std::string& hash) const;

 private:
  static constexpr size_t kMadePerStore = 4, kMadeStores = 16;
  std::string dir_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<workspace::BlobDir>> stores_;  // guarded by mu_
  std::map<std::string, std::deque<Made>> made_;                      // by store directory; guarded by mu_
};

}  // namespace tidepool::server
