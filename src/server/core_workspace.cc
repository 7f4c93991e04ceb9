// Workspaces in the core: which pools want the caller's files, and who may fetch them.
#include <fmt/format.h>

#include "server/core.h"
#include "server/core_internal.h"
#include "workspace/hash.h"
#include "workspace/protocol.h"

namespace tidepool::server {

using autoscaler::PoolController;
using config::WorkspaceConfig;

namespace {

bool Syncs(const PoolController* p) { return p->config().workspace.mode == WorkspaceConfig::Mode::kSync; }

}  // namespace

Result<v1::WorkspaceSettings> Core::WorkspaceSettingsFor(const v1::SettingsRequest& request, const Caller& caller) {
  std::lock_guard lock(mu_);
  v1::TaskSpec spec;
  spec.set_pool(request.pool());
  spec.set_kind(request.batch() ? v1::TASK_KIND_BATCH : v1::TASK_KIND_INTERACTIVE);
  auto eligible = ResolveTarget(spec, nullptr);
  if (!eligible.ok()) return eligible.status();
  v1::WorkspaceSettings out;
  uint64_t max_bytes = 0;
  for (const PoolController* p : *eligible) {
    if (!caller.Can(p->name(), Role::kSubmit) || !Syncs(p)) continue;
    const WorkspaceConfig& w = p->config().workspace;
    out.set_sync(true);
    for (const std::string& e : w.extra) {
      if (std::find(out.extra().begin(), out.extra().end(), e) == out.extra().end()) out.add_extra(e);
    }
    out.set_gitignore(out.gitignore() || w.gitignore);
    if (w.max_bytes > 0 && (max_bytes == 0 || static_cast<uint64_t>(w.max_bytes) < max_bytes)) max_bytes = w.max_bytes;
  }
  out.set_max_bytes(max_bytes);
  return out;
}

Status Core::CheckWorkspace(const v1::TaskSpec& spec, const std::vector<PoolController*>& eligible,
                            const std::string& owner) {
  const std::string& manifest = spec.workspace().manifest();
  if (manifest.empty() && !spec.workspace().none()) {
    for (const PoolController* p : eligible) {
      if (Syncs(p)) {
        return FailedPrecondition(fmt::format(
            "{}pool {} brings the caller's files to its workers (workspace.mode sync) and this client sent none",
            kWorkspaceNeeded, p->name()));
      }
    }
    return Status::Ok();
  }
  if (manifest.empty()) return Status::Ok();
  if (!workspace::IsHash(manifest)) return InvalidArgument("workspace.manifest is not a SHA-256 hash");
  auto store = workspace_store_.For(owner);
  if (!store.ok()) return store.status();
  if (!(*store)->Has(manifest)) {
    return FailedPrecondition(fmt::format("workspace manifest {} is not on the server: upload it first", manifest));
  }
  return Status::Ok();
}

void Core::CountWorkspaceBytes(const char* direction, const char* peer, uint64_t bytes) {
  if (!opts_.metrics || bytes == 0) return;
  opts_.metrics
      ->Counter("tidepool_workspace_bytes_total", "Workspace content moved, by direction and peer",
                {{"direction", direction}, {"peer", peer}})
      .Inc(static_cast<double>(bytes));
}

Result<std::string> Core::LinkTaskOwner(AgentLink* link, const std::string& task_id) {
  std::lock_guard lock(mu_);
  Session* s = SessionOf(link);
  Task* t = FindTask(task_id);
  if (!s || !t || t->assigned != s->worker) return NotFound(fmt::format("task {} is not this worker's", task_id));
  return t->st().owner();
}

}  // namespace tidepool::server
