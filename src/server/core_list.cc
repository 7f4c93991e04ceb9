// Listing tasks, one bounded page at a time (Core::ListTasks): newest first, from a cursor, read
// from the store a few rows at a time, so neither the reply nor the server's memory for it grows
// with the number of tasks stored.
#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "common/time.h"
#include "server/core_internal.h"

namespace tidepool::server {

namespace {

// Rows read from the store per step: a page's matches may be far apart (a viewer who sees few of
// the tasks), and each row holds the task's argv, so the reads go in small steps.
constexpr int kListChunk = 64;

bool Matches(const v1::ListTasksRequest& req, const v1::Task& t) {
  if (req.state() != v1::TASK_STATE_UNSPECIFIED && t.state() != req.state()) return false;
  if (!req.pool().empty() && t.pool() != req.pool()) return false;
  if (!req.parent().empty() && t.parent() != req.parent()) return false;
  for (const auto& [k, v] : req.labels()) {
    auto it = t.labels().find(k);
    if (it == t.labels().end() || it->second != v) return false;
  }
  return true;
}

}  // namespace

Result<Core::TaskPage> Core::ListTasks(const v1::ListTasksRequest& req, const Caller& caller) {
  if (req.limit() < 0 || req.limit() > kMaxListLimit) {
    return InvalidArgument(fmt::format("limit {}: a page holds 1 to {} tasks", req.limit(), kMaxListLimit));
  }
  const size_t limit = req.limit() > 0 ? static_cast<size_t>(req.limit()) : kDefaultListLimit;
  store::TaskQuery q;
  if (!req.all()) q.finished_after_ms = NowUnixMs() - 3600 * 1000;  // unfinished + the last hour
  // The core's copy of an unfinished task may be fresher than its record: the state is filtered
  // again below, on the freshest copy.
  q.state = req.state();
  q.state_or_unfinished = true;
  q.pool = req.pool();
  q.parent = req.parent();
  q.without_spec = true;  // a listing shows no environment; the specs are the bulk of a record
  q.newest_first = true;
  q.limit = static_cast<int>(std::min<size_t>(limit + 1, kListChunk));
  if (!req.after().empty()) {
    // The cursor is a task the caller may see; anything else is "no such task" (no leak).
    std::optional<store::TaskRecord> found;
    {
      std::lock_guard lock(mu_);
      if (Task* t = FindTask(req.after())) found = t->rec;
    }
    if (!found) {
      auto r = store_->GetTask(req.after());
      if (!r.ok()) return r.status();
      found = std::move(r).value();
    }
    std::lock_guard lock(mu_);
    if (!found || !MaySee(caller, found->status)) {
      return InvalidArgument(fmt::format("after {}: no such task (give the id a previous page ended with)",
                                         req.after()));
    }
    q.before_seq = found->seq;
  }

  TaskPage page;
  size_t bytes = 0;
  bool more = false;
  while (!more) {
    auto stored = store_->ListTasks(q);
    if (!stored.ok()) return stored.status();
    std::lock_guard lock(mu_);
    for (store::TaskRecord& r : *stored) {
      q.before_seq = r.seq;
      // The in-memory copy is the freshest (its latest write may not be committed yet).
      const Task* t = FindTask(r.status.id());
      if (!t && !api::IsFinal(r.status.state())) {
        // Read while unfinished, and forgotten since: the core forgets a task only once its final
        // record is committed, so that record is read again (a point read, rare: a task that
        // ended between the store read and this lock; a shard listed RUNNING after its group
        // was seen SUCCESS, as `task sync` once saw).
        auto again = store_->GetTask(r.status.id());
        if (again.ok() && again->has_value()) r.status = std::move((*again)->status);
      }
      const v1::Task& st = t ? t->rec.status : r.status;
      if (!MaySee(caller, st) || !Matches(req, st)) continue;
      size_t size = st.ByteSizeLong();
      if (page.tasks.size() == limit || (!page.tasks.empty() && bytes + size > kMaxListBytes)) {
        more = true;  // one more exists: the page ends here, with a cursor
        break;
      }
      bytes += size;
      page.tasks.push_back(st);
    }
    if (stored->size() < static_cast<size_t>(q.limit)) break;  // the store has no more
  }
  if (more) page.next_after = page.tasks.back().id();
  return page;
}

}  // namespace tidepool::server
