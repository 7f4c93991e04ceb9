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

void WorkspaceStore::KeepMade(const workspace::BlobDir& store, Made made) {
  std::lock_guard lock(mu_);
  if (!made_.count(store.dir()) && made_.size() >= kMadeStores) made_.erase(made_.begin());
  std::deque<Made>& kept = made_[store.dir()];
  for (auto it = kept.begin(); it != kept.end(); ++it) {
    if (it->hash == made.hash) {
      kept.erase(it);
      break;
    }
  }
  kept.push_back(std::move(made));
  while (kept.size() > kMadePerStore) kept.pop_front();
}

std::optional<WorkspaceStore::Made> WorkspaceStore::FindMade(const workspace::BlobDir& store, const std::string& hash) const {
  std::lock_guard lock(mu_);
  auto it = made_.find(store.dir());
  if (it == made_.end()) return std::nullopt;
  for (const Made& m : it->second) {
    if (m.hash == hash) return m;
  }
  return std::nullopt;
}

}  // namespace tidepool::server
