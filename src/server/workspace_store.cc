#include "server/workspace_store.h"


namespace tidepool::server {

Result<workspace::BlobDir*> WorkspaceStore::For(const std::string& owner) {
  std::lock_guard lock(mu_);
  auto it = stores_.find(owner);
  if (it != stores_.end()) return it->second.get();
  auto dir = workspace::BlobDir::Open(dir_ + "/" + workspace::OwnerStoreName(owner));
  if (!dir.ok()) return dir.status();
  auto& slot = stores_[owner];
  slot = std::make_unique<workspace::BlobDir>(std::move(*dir));
  return slot.get();
}

}  // namespace tidepool::server
