// TaskService: vrun's stream, vbatch's submit, and the task queries and streams.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>

#include <spdlog/spdlog.h>

#include "api/names.h"
#include "server/outbox.h"
#include "server/services.h"

namespace tidepool::server {

namespace {

constexpr size_t kLogChunk = 256 * 1024;

grpc::Status NotStarted() { return ToGrpc(ServerStarting()); }

class RunClientImpl final : public RunClient {
 public:
  explicit RunClientImpl(std::shared_ptr<Outbox<v1::RunEvent>> outbox) : outbox_(std::move(outbox)) {}
  bool Send(v1::RunEvent e, std::function<void()> written) override { return outbox_->Send(std::move(e), std::move(written)); }
  void Finish(const Status& s) override { outbox_->Finish(ToGrpc(s)); }

 private:
  std::shared_ptr<Outbox<v1::RunEvent>> outbox_;
};

// vrun: the first request is the spec; later ones are stdin, signals, resizes and cancel.
class RunStream final : public grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent> {
 public:
  RunStream(Core* core, Caller caller) : core_(core), caller_(std::move(caller)) {
    outbox_ = std::make_shared<Outbox<v1::RunEvent>>([this](const v1::RunEvent* e) { StartWrite(e); },
                                                    [this](const grpc::Status& s) { Finish(s); });
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      ClientGone();
      outbox_->Finish(grpc::Status::OK);
      return;
    }
    if (task_id_.empty()) {
      if (in_.has_reattach()) {
        task_id_ = core_->Reattach(std::make_shared<RunClientImpl>(outbox_), in_.reattach(), caller_);
        if (task_id_.empty()) return;  // refused; the outbox has the error
        StartRead(&in_);
        return;
      }
      if (!in_.has_start()) {
        outbox_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first request must carry the task"));
        return;
      }
      task_id_ = core_->Run(std::make_shared<RunClientImpl>(outbox_), std::move(*in_.mutable_start()), caller_);
      if (task_id_.empty()) return;  // refused; the outbox has the error
    } else {
      core_->RunInput(task_id_, in_);
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { outbox_->OnWriteDone(ok); }

  void OnDone() override {
    ClientGone();
    outbox_->Detach();
    delete this;
  }

 private:
  void ClientGone() {
    if (!task_id_.empty() && !gone_) {
      gone_ = true;
      core_->RunClientGone(task_id_);
    }
  }

  Core* core_;
  Caller caller_;
  v1::RunRequest in_;
  std::string task_id_;
  bool gone_ = false;
  std::shared_ptr<Outbox<v1::RunEvent>> outbox_;
};

// Streams a task's stored output, then (with follow) what arrives, until the task is final.
// The sink's listener may fire on any thread at any time, so the reading state lives in a
// shared object that outlives the reactor; the reactor pointer in it is cleared in OnDone.
class LogStream final : public grpc::ServerWriteReactor<v1::LogChunk> {
 public:
  LogStream(std::shared_ptr<LogSink> sink, bool final, bool follow, bool want_out, bool want_err)
      : state_(std::make_shared<State>()) {
    state_->reactor = this;
    state_->sink = std::move(sink);
    state_->final = final;
    state_->follow = follow;
    if (want_out) state_->sources.push_back({v1::OUTPUT_STREAM_STDOUT, -1, 0});
    if (want_err) state_->sources.push_back({v1::OUTPUT_STREAM_STDERR, -1, 0});
    for (auto& src : state_->sources) src.fd = ::open(state_->sink->path(src.stream).c_str(), O_RDONLY | O_CLOEXEC);
    if (follow && !final) {
      std::weak_ptr<State> weak = state_;
      state_->listener = state_->sink->AddListener([weak] {
        if (auto st = weak.lock()) st->Pump();
      });
    }
    state_->Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard lock(state_->mu);
      state_->writing = false;
      if (!ok || state_->cancelled) {
        state_->FinishLocked(grpc::Status::CANCELLED);
        return;
      }
    }
    state_->Pump();
  }

  // A follower that left (or a server that stops) while no write is pending: without this the
  // stream would wait for output that may never come, and gRPC's shutdown waits for the stream.
  // A write in flight ends first (its completion sees `cancelled`).
  void OnCancel() override {
    std::lock_guard lock(state_->mu);
    state_->cancelled = true;
    if (!state_->writing) state_->FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    if (state_->listener) state_->sink->RemoveListener(state_->listener);
    {
      std::lock_guard lock(state_->mu);
      state_->reactor = nullptr;
    }
    delete this;
  }

 private:
  struct Source {
    v1::OutputStream stream;
    int fd;
    uint64_t offset;
  };

  struct State {
    std::mutex mu;
    LogStream* reactor = nullptr;
    std::shared_ptr<LogSink> sink;
    bool final = false;
    bool follow = false;
    std::vector<Source> sources;
    uint64_t listener = 0;
    bool writing = false;
    bool cancelled = false;
    bool finished = false;
    v1::LogChunk chunk;

    ~State() {
      for (auto& src : sources) {
        if (src.fd >= 0) ::close(src.fd);
      }
    }

    void Pump() {
      std::lock_guard lock(mu);
      if (!reactor || writing || finished) return;
      // Read "complete" before the sizes: if it was complete then, everything is in the files.
      bool complete = final || !follow || sink->complete();
      for (auto& src : sources) {
        // A stream's file appears with its first byte.
        if (src.fd < 0) src.fd = ::open(sink->path(src.stream).c_str(), O_RDONLY | O_CLOEXEC);
        if (src.fd < 0) continue;
        struct stat st {};
        uint64_t size = ::fstat(src.fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
        if (src.offset >= size) continue;
        size_t n = static_cast<size_t>(std::min<uint64_t>(size - src.offset, kLogChunk));
        std::string buf(n, '\0');
        ssize_t got = ::pread(src.fd, buf.data(), n, static_cast<off_t>(src.offset));
        if (got <= 0) continue;
        buf.resize(static_cast<size_t>(got));
        src.offset += static_cast<uint64_t>(got);
        chunk.set_stream(src.stream);
        chunk.set_data(std::move(buf));
        writing = true;
        reactor->StartWrite(&chunk);
        return;
      }
      if (complete) FinishLocked(grpc::Status::OK);
    }

    void FinishLocked(const grpc::Status& s) {
      if (finished || !reactor) return;
      finished = true;
      reactor->Finish(s);
    }
  };

  std::shared_ptr<State> state_;
};

// One message per state change of a task, until it is final.
class WatchStream final : public grpc::ServerWriteReactor<v1::Task> {
 public:
  WatchStream(Core* core, const std::string& id, const Caller& caller) : core_(core), id_(id) {
    outbox_ = std::make_shared<Outbox<v1::Task>>([this](const v1::Task* t) { StartWrite(t); },
                                                [this](const grpc::Status& s) { Finish(s); });
    auto outbox = outbox_;
    auto watch = core_->Watch(
        id_,
        [outbox](const v1::Task& t) {
          outbox->Send(t);
          if (api::IsFinal(t.state())) outbox->Finish(grpc::Status::OK);
        },
        caller);
    if (!watch.ok()) {
      outbox_->Finish(ToGrpc(watch.status()));
    } else {
      watch_ = *watch;
    }
  }
  void OnWriteDone(bool ok) override { outbox_->OnWriteDone(ok); }
  void OnCancel() override { outbox_->Finish(grpc::Status::CANCELLED); }
  void OnDone() override {
    if (watch_ != 0 && watch_ != UINT64_MAX) core_->Unwatch(id_, watch_);
    outbox_->Detach();
    delete this;
  }

 private:
  Core* core_;
  std::string id_;
  uint64_t watch_ = 0;
  std::shared_ptr<Outbox<v1::Task>> outbox_;
};

template <class Msg>
class FinishedWriter final : public grpc::ServerWriteReactor<Msg> {
 public:
  explicit FinishedWriter(grpc::Status s) { this->Finish(s); }
  void OnDone() override { delete this; }
};

class FinishedBidi final : public grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent> {
 public:
  explicit FinishedBidi(grpc::Status s) { Finish(s); }
  void OnDone() override { delete this; }
};

// Task listings never carry the environment a task was given.
v1::Task Public(v1::Task t) { return t; }

}  // namespace

grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent>* TaskService::Run(grpc::CallbackServerContext* ctx) {
  Core* core = core_->load();
  if (!core) return new FinishedBidi(NotStarted());
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) return new FinishedBidi(ToGrpc(caller.status()));
  return new RunStream(core, *caller);
}

grpc::ServerUnaryReactor* TaskService::Submit(grpc::CallbackServerContext* ctx, const v1::SubmitRequest* req,
                                              v1::SubmitResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = core_->load();
  if (!core) {
    reactor->Finish(NotStarted());
    return reactor;
  }
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) {
    reactor->Finish(ToGrpc(caller.status()));
    return reactor;
  }
  core->Submit(
      req->spec(),
      [reactor, resp](Result<std::string> id) {
        if (!id.ok()) {
          reactor->Finish(ToGrpc(id.status()));
          return;
        }
        resp->set_id(*id);
        reactor->Finish(grpc::Status::OK);
      },
      *caller);
  return reactor;
}

grpc::ServerUnaryReactor* TaskService::ListTasks(grpc::CallbackServerContext* ctx, const v1::ListTasksRequest* req,
                                                 v1::ListTasksResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = core_->load();
  if (!core) {
    reactor->Finish(NotStarted());
    return reactor;
  }
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) {
    reactor->Finish(ToGrpc(caller.status()));
    return reactor;
  }
  auto tasks = core->ListTasks(*req, *caller);
  if (!tasks.ok()) {
    reactor->Finish(ToGrpc(tasks.status()));
    return reactor;
  }
  for (auto& t : tasks->tasks) *resp->add_tasks() = Public(std::move(t));
  resp->set_next_after(tasks->next_after);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TaskService::GetTask(grpc::CallbackServerContext* ctx, const v1::GetTaskRequest* req,
                                               v1::Task* resp) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = core_->load();
  if (!core) {
    reactor->Finish(NotStarted());
    return reactor;
  }
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) {
    reactor->Finish(ToGrpc(caller.status()));
    return reactor;
  }
  auto t = core->GetTask(req->id(), *caller);
  if (!t.ok()) {
    reactor->Finish(ToGrpc(t.status()));
    return reactor;
  }
  *resp = Public(std::move(t).value());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TaskService::CancelTask(grpc::CallbackServerContext* ctx, const v1::CancelTaskRequest* req,
                                                  v1::CancelTaskResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = core_->load();
  if (!core) {
    reactor->Finish(NotStarted());
    return reactor;
  }
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) {
    reactor->Finish(ToGrpc(caller.status()));
    return reactor;
  }
  auto r = core->CancelTask(req->id(), *caller);
  if (!r.ok()) {
    reactor->Finish(ToGrpc(r.status()));
    return reactor;
  }
  for (auto& id : *r) resp->add_cancelled(id);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::LogChunk>* TaskService::StreamLogs(grpc::CallbackServerContext* ctx,
                                                                const v1::StreamLogsRequest* req) {
  Core* core = core_->load();
  if (!core) return new FinishedWriter<v1::LogChunk>(NotStarted());
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) return new FinishedWriter<v1::LogChunk>(ToGrpc(caller.status()));
  auto logs = core->Logs(req->id(), *caller);
  if (!logs.ok()) return new FinishedWriter<v1::LogChunk>(ToGrpc(logs.status()));
  bool both = !req->stdout() && !req->stderr();
  return new LogStream(logs->first, logs->second, req->follow(), both || req->stdout(), both || req->stderr());
}

grpc::ServerWriteReactor<v1::Task>* TaskService::WatchTask(grpc::CallbackServerContext* ctx,
                                                           const v1::WatchTaskRequest* req) {
  Core* core = core_->load();
  if (!core) return new FinishedWriter<v1::Task>(NotStarted());
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) return new FinishedWriter<v1::Task>(ToGrpc(caller.status()));
  return new WatchStream(core, req->id(), *caller);
}

}  // namespace tidepool::server
