// Core: an agent's worker name, checked at its hello (issue 17): a valid worker name
// (common/worker_name.h), and not one another live agent holds (server/name_claim.h).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/worker_name.h"
#include "server/core.h"
#include "server/core_internal.h"
#include "server/name_claim.h"

namespace tidepool::server {

Status Core::CheckHelloName(const v1::AgentHello& hello, bool credentials_ok) {
  if (std::string why = WorkerNameProblem(hello.name()); !why.empty()) {
    return PermissionDenied(fmt::format("agent hello: worker name {} refused: it {}", QuoteForLog(hello.name()), why));
  }
  if (!credentials_ok) return Status::Ok();  // refused for its credentials, without learning who holds the name
  auto it = session_by_worker_.find(hello.name());
  if (it == session_by_worker_.end()) return Status::Ok();
  const Session& holder = *it->second;
  const int64_t now = SteadyMs();
  const int64_t silent = silence_.SilentFor(now, holder.link->last_heard_ms.load(), holder.link->ReadHorizonMs(now));
  switch (JudgeNameClaim(NameHolderLink{holder.instance_id, silent, holder.heartbeat_ms}, hello.instance_id())) {
    case NameClaim::kFree:
    case NameClaim::kReconnect:
      return Status::Ok();
    case NameClaim::kReplaceStale:
      spdlog::info("worker {}: nothing heard from its connection for {} ms; a new agent takes the name over",
                   hello.name(), silent);
      return Status::Ok();
    case NameClaim::kConflict:
      break;
  }
  std::string where;
  if (PoolController* pool = Pool(holder.pool)) {
    if (Worker* w = pool->Find(hello.name()); w && !w->address.empty()) where = " from " + QuoteForLog(w->address);
  }
  return Status(StatusCode::kAlreadyExists,
                fmt::format("worker {} is already connected{} (another agent, heard from {} ms ago): a second agent "
                            "with that name{} is refused; one name, one worker (give each its own --name)",
                            hello.name(), where, silent,
                            hello.address().empty() ? "" : " from " + QuoteForLog(hello.address())));
}

}  // namespace tidepool::server
