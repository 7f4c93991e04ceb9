// A vrun's side of the core: a run, its input, its client going away, and its client coming
// back after a server restart (Reattach). The output path itself is Core::AgentOutput (core.cc).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "server/core_internal.h"

namespace tidepool::server {

using autoscaler::PoolController;

std::string Core::Run(std::shared_ptr<RunClient> client, v1::TaskSpec spec, const Caller& caller) {
  std::lock_guard lock(mu_);
  if (stopped_) {
    client->Finish(Unavailable("the server is shutting down"));
    return "";
  }
  if (Status h = StoreTakesWork(); !h.ok()) {
    client->Finish(h);
    return "";
  }
  // As in Submit: the task and its assignment, one commit (P1: the first fsync of two).
  store::WriteBatcher::Hold group(&batcher_);
  spec.set_kind(v1::TASK_KIND_INTERACTIVE);
  spec.set_shards(0);
  spec.set_gang(false);
  auto created = CreateTask(std::move(spec), client, [client](const Status& s, const std::string& id, const std::string& pool) {
    if (!s.ok()) {
      client->Finish(Status(s.code(), fmt::format("the task could not be stored: {}", s.message())));
      return;
    }
    v1::RunEvent e;
    e.mutable_accepted()->set_task_id(id);
    e.mutable_accepted()->set_pool(pool);
    client->Send(std::move(e));
  }, caller);
  if (!created.ok()) {
    client->Finish(created.status());
    return "";
  }
  Task* t = *created;
  for (PoolController* p : t->eligible) Schedule(p);
  return t->id();
}

void Core::RunInput(const std::string& task_id, const v1::RunRequest& req) {
  std::lock_guard lock(mu_);
  Task* t = FindTask(task_id);
  if (!t || api::IsFinal(t->st().state())) return;
  v1::ServerMessage m;
  switch (req.request_case()) {
    case v1::RunRequest::kStdin:
      m.mutable_stdin()->set_task_id(task_id);
      m.mutable_stdin()->set_data(req.stdin());
      break;
    case v1::RunRequest::kStdinEof:
      m.mutable_stdin()->set_task_id(task_id);
      m.mutable_stdin()->set_eof(true);
      break;
    case v1::RunRequest::kSignal:
      if (!t->dispatched) {
        // Before it runs, any forwarded signal means "never mind".
        t->cancel_requested = true;
        t->cancel_reason = fmt::format("cancelled by signal {} while queued", req.signal());
        if (t->queued) Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
        return;
      }
      m.mutable_signal()->set_task_id(task_id);
      m.mutable_signal()->set_signal(req.signal());
      break;
    case v1::RunRequest::kResize:
      m.mutable_resize()->set_task_id(task_id);
      *m.mutable_resize()->mutable_size() = req.resize();
      break;
    case v1::RunRequest::kCancel:
      t->cancel_requested = true;
      t->cancel_reason = "cancelled";
      if (t->queued) {
        Finish(t, v1::TASK_STATE_CANCELLED, "cancelled while queued");
      } else if (t->dispatched) {
        v1::ServerMessage c;
        c.mutable_cancel()->set_task_id(task_id);
        c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
        SendToWorker(t->assigned, std::move(c));
      }
      return;
    default:
      return;
  }
  if (t->dispatched && !t->assigned.empty()) SendToWorker(t->assigned, std::move(m));
}

void Core::RunClientGone(const std::string& task_id) {
  std::lock_guard lock(mu_);
  // A server shutting down closes every vrun's connection: they reattach to the next server.
  if (stopped_) return;
  Task* t = FindTask(task_id);
  if (!t) return;
  t->client.reset();
  {
    std::lock_guard rl(routes_mu_);
    auto it = routes_.find(task_id);
    if (it != routes_.end()) {
      std::lock_guard l(it->second->mu);
      it->second->client.reset();
    }
  }
  if (api::IsFinal(t->st().state())) return;
  CancelUnattended(t, "its vrun disconnected");
}

void Core::CancelUnattended(Task* t, const std::string& reason) {
  t->cancel_requested = true;
  t->cancel_reason = reason;
  if (t->queued) {
    Finish(t, v1::TASK_STATE_CANCELLED, t->cancel_reason);
  } else if (t->dispatched) {
    v1::ServerMessage c;
    c.mutable_cancel()->set_task_id(t->id());
    c.mutable_cancel()->set_grace_ms(opts_.kill_grace.count());
    c.mutable_cancel()->set_reason(t->cancel_reason);
    SendToWorker(t->assigned, std::move(c));
  }
}

// ---- reattach --------------------------------------------------------------------------------

void Core::SendExited(RunClient* client, const v1::Task& st, bool* exit_sent) {
  if (!*exit_sent) {
    v1::RunEvent e;
    v1::Exited* x = e.mutable_exited();
    x->set_state(st.state());
    x->set_has_exit_code(st.has_exit_code());
    x->set_exit_code(st.exit_code());
    x->set_signal(st.signal());
    x->set_reason(st.reason());
    x->set_command_not_found(st.exit_code() == 127 && st.reason().rfind("command not found", 0) == 0);
    x->set_workspace_result(st.workspace_result());
    client->Send(std::move(e));
    *exit_sent = true;
  }
  client->Finish(Status::Ok());
}

std::string Core::Reattach(std::shared_ptr<RunClient> client, const v1::Reattach& req, const Caller& caller) {
  const std::string& id = req.task_id();
  auto accepted = [&client](const std::string& task_id, const std::string& pool) {
    v1::RunEvent e;
    e.mutable_accepted()->set_task_id(task_id);
    e.mutable_accepted()->set_pool(pool);
    client->Send(std::move(e));
  };
  {
    std::lock_guard lock(mu_);
    if (stopped_) {
      client->Finish(Unavailable("the server is shutting down"));
      return "";
    }
    Task* t = FindTask(id);
    if (t && !t->final()) {
      if (!MaySee(caller, t->st())) {
        client->Finish(TaskNotFound(id));  // exactly as a missing one
        return "";
      }
      if (!IsInteractive(t->rec.spec)) {
        client->Finish(FailedPrecondition(fmt::format("task {} is a batch task: follow it with `tidepool task logs -f {}`", id, id)));
        return "";
      }
      if (t->client) {
        client->Finish(Aborted(fmt::format("task {} already has a vrun attached", id)));
        return "";
      }
      t->client = client;
      t->exit_sent = false;
      t->detached = false;
      if (t->detach_timer) {
        timers_.Cancel(t->detach_timer);
        t->detach_timer = 0;
      }
      {
        std::lock_guard rl(routes_mu_);
        auto& route = routes_[id];
        if (!route) route = std::make_shared<OutputRoute>();
        std::lock_guard l(route->mu);
        route->client = client;
        route->detached = false;
        route->forwarded[1] = req.stdout_offset();
        route->forwarded[2] = req.stderr_offset();
        route->resumed[1] = route->resumed[2] = true;
      }
      spdlog::info("task {}: its vrun reattached (stdout from byte {}, stderr from byte {})", id, req.stdout_offset(),
                   req.stderr_offset());
      accepted(id, t->st().pool());
      if (t->dispatched) {
        v1::RunEvent e;
        e.mutable_started()->set_worker(t->assigned);
        client->Send(std::move(e));
        ResumeOutput(t);
      }
      return id;
    }
  }
  // It ended (and may be forgotten) while its vrun was away: the record says how.
  auto st = GetTask(id, caller);
  if (!st.ok()) {
    client->Finish(st.status());
    return "";
  }
  if (st->kind() != v1::TASK_KIND_INTERACTIVE) {
    client->Finish(FailedPrecondition(fmt::format("task {} is a batch task: follow it with `tidepool task logs -f {}`", id, id)));
    return "";
  }
  if (!api::IsFinal(st->state())) {  // between FindTask and the store: it just ended
    client->Finish(Unavailable(fmt::format("task {} is changing state; try again", id)));
    return "";
  }
  accepted(id, st->pool());
  bool sent = false;
  SendExited(client.get(), *st, &sent);
  return id;
}

void Core::ResumeOutput(Task* t) {
  auto sit = session_by_worker_.find(t->assigned);
  if (sit == session_by_worker_.end()) return;  // its agent sends everything when it reconnects
  Session* s = sit->second;
  if (t->held_exit) {
    v1::TaskExited e = std::move(*t->held_exit);
    t->held_exit.reset();
    if (!HoldExitForVrun(t, e)) {
      OnExited(s, e);
      return;
    }
  }
  // The agent holds the output the server refused while detached: an ack without retry_later,
  // at the offset the vrun needs, sends it all again (the agent then reports its exit again).
  std::shared_ptr<OutputRoute> route;
  {
    std::lock_guard rl(routes_mu_);
    if (auto it = routes_.find(t->id()); it != routes_.end()) route = it->second;
  }
  if (!route) return;
  std::lock_guard l(route->mu);
  for (auto stream : {v1::OUTPUT_STREAM_STDOUT, v1::OUTPUT_STREAM_STDERR}) {
    v1::ServerMessage m;
    m.mutable_output_ack()->set_task_id(t->id());
    m.mutable_output_ack()->set_stream(stream);
    m.mutable_output_ack()->set_offset(route->forwarded[stream == v1::OUTPUT_STREAM_STDERR ? 2 : 1]);
    s->link->Send(std::move(m));
  }
}

bool Core::HoldExitForVrun(Task* t, const v1::TaskExited& e) {
  if (!IsInteractive(t->rec.spec)) return false;
  std::shared_ptr<OutputRoute> route;
  {
    std::lock_guard rl(routes_mu_);
    if (auto it = routes_.find(t->id()); it != routes_.end()) route = it->second;
  }
  if (!route) return false;
  std::lock_guard l(route->mu);
  if (route->attempt != e.attempt()) return false;
  if (route->detached) return true;  // nobody has its output yet
  // Its vrun left for good, or the agent holds no byte it could send again (what the old server
  // saw written out and the vrun never got went with that server): nothing to wait for.
  if (!route->client || !e.output_pending()) return false;
  return route->forwarded[1] < e.stdout_bytes() || route->forwarded[2] < e.stderr_bytes();
}

void Core::Detach(Task* t) {
  t->detached = true;
  int64_t ms = t->rec.spec.reattach_for_ms() > 0 ? t->rec.spec.reattach_for_ms() : kDefaultReattachFor.count();
  std::string id = t->id();
  t->detach_timer = timers_.After(std::chrono::milliseconds(ms), [this, id] { Post([this, id] { DetachExpired(id); }); });
}

void Core::DetachExpired(const std::string& task_id) {
  Task* t = FindTask(task_id);
  if (!t || !t->detached || t->final()) return;
  t->detached = false;
  t->detach_timer = 0;
  {
    std::lock_guard rl(routes_mu_);
    if (auto it = routes_.find(task_id); it != routes_.end()) {
      std::lock_guard l(it->second->mu);
      it->second->detached = false;  // from now on its output has nobody to go to
    }
  }
  std::string why = fmt::format("its vrun did not come back within {} of the server restart",
                                FormatDuration(std::chrono::milliseconds(
                                    t->rec.spec.reattach_for_ms() > 0 ? t->rec.spec.reattach_for_ms()
                                                                      : kDefaultReattachFor.count())));
  spdlog::info("task {}: {}", task_id, why);
  if (t->held_exit) {
    // It ran to its end: the record says how, not CANCELLED.
    auto sit = session_by_worker_.find(t->assigned);
    if (sit != session_by_worker_.end()) {
      v1::TaskExited e = std::move(*t->held_exit);
      t->held_exit.reset();
      OnExited(sit->second, e);
    }
    return;  // else its agent reports again when it reconnects, and it is taken then
  }
  CancelUnattended(t, why);
}

}  // namespace tidepool::server
