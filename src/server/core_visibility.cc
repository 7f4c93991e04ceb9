// Who may see which task, and the answers that must not tell "not yours" from "not there"
// (issue 17, "No oracles"): a task the caller may not see answers exactly as a missing one, in
// every per-task call (core_tasks.cc) and as a dependency.
#include <algorithm>

#include <fmt/format.h>

#include "server/core_internal.h"

namespace tidepool::server {

Status TaskNotFound(const std::string& id) { return NotFound(fmt::format("task not found: {}", id)); }

bool Core::MaySee(const Caller& caller, const v1::Task& t) {
  if (!caller.InTree(t.id())) return false;  // a task token: its own tree only
  if (!caller.user || t.owner() == caller.name) return true;
  if (Pool(t.pool())) return caller.Can(t.pool(), Role::kManage);
  for (auto& [name, p] : pools_) {  // a selector: managing any of its pools is enough
    const auto& sel = p->config().selectors;
    if (std::find(sel.begin(), sel.end(), t.pool()) != sel.end() && caller.Can(name, Role::kManage)) return true;
  }
  return false;
}

Status Core::ResolveDependencies(v1::TaskSpec& spec, const Task* parent, const Caller& caller) {
  // A dependency is a task id or, for a child, a sibling's name. Stored resolved, so a restart
  // needs no context to read them. One the caller may not see is not found, like a missing one:
  // otherwise whether the dependent runs would tell how someone else's task ended.
  auto resolve = [&](std::string* dep) -> Status {
    std::vector<std::string> candidates;
    if (parent && dep->find('/') == std::string::npos) candidates.push_back(parent->id() + "/" + *dep);
    candidates.push_back(*dep);
    for (const std::string& c : candidates) {
      if (Task* t = FindTask(c)) {
        if (!MaySee(caller, t->rec.status)) continue;
        *dep = c;
        return Status::Ok();
      }
      auto r = store_->GetTask(c);
      if (!r.ok()) return r.status();
      if (r->has_value() && MaySee(caller, (*r)->status)) {
        *dep = c;
        return Status::Ok();
      }
    }
    return NotFound(fmt::format("dependency not found: {}", *dep));
  };
  for (auto* list : {spec.mutable_after(), spec.mutable_after_success(), spec.mutable_after_fail()}) {
    for (std::string& dep : *list) {
      if (Status s = resolve(&dep); !s.ok()) return s;
    }
  }
  return Status::Ok();
}

}  // namespace tidepool::server
