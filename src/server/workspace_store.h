// The server's content stores for workspaces: one per owner (workspace.proto says why), under
// DATA_DIR/workspace/<OwnerStoreName(owner)> (workspace/blob_dir.h). Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "workspace/blob_dir.h"

namespace tidepool::server {

class WorkspaceStore {
 public:
  explicit WorkspaceStore(std::string dir) : dir_(std::move(dir)) {}
  // The owner's store, made on first use ("" = the owner of tasks when auth is off).
  Result<workspace::BlobDir*> For(const std::string& owner);

 private:
  std::string dir_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<workspace::BlobDir>> stores_;  // guarded by mu_
};

}  // namespace tidepool::server
