// AgentService.Connect: one bidirectional stream per worker.
#include <spdlog/spdlog.h>

#include "server/core_internal.h"
#include "server/outbox.h"
#include "server/resume_gate.h"
#include "server/services.h"

namespace tidepool::server {

namespace {

class Link final : public AgentLink {
 public:
  explicit Link(std::shared_ptr<Outbox<v1::ServerMessage>> outbox) : outbox_(std::move(outbox)) {}
  bool Send(v1::ServerMessage m) override { return outbox_->Send(std::move(m)); }
  void Close(const Status& why) override { outbox_->Finish(ToGrpc(why)); }
  void Accepted() override { gate_.Accept(); }
  ResumeGate& gate() { return gate_; }

 private:
  std::shared_ptr<Outbox<v1::ServerMessage>> outbox_;
  ResumeGate gate_;
};

class AgentStream final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ServerMessage> {
 public:
  explicit AgentStream(Core* core) : core_(core) {
    outbox_ = std::make_shared<Outbox<v1::ServerMessage>>(
        [this](const v1::ServerMessage* m) { StartWrite(m); }, [this](const grpc::Status& s) { Finish(s); });
    link_ = std::make_shared<Link>(outbox_);
    // gRPC may call OnCancel on another thread as soon as Connect returns, and its hand-off of
    // this object is inside libgrpc++, out of TSan's sight: publish the initialised object
    // through the flags OnCancel reads first (release here, seq_cst load there).
    attached_.store(false, std::memory_order_release);
    held_.store(false, std::memory_order_release);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      ReportGone();
      outbox_->Finish(grpc::Status::OK);
      return;
    }
    if (!attached_) {
      link_->last_heard_ms = SteadyMs();
      if (!in_.has_hello()) {
        outbox_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello"));
        return;
      }
      Status refusal;
      switch (core_->AgentHello(link_, in_.hello(), &refusal)) {
        case HelloOutcome::kRefused:
          outbox_->Finish(ToGrpc(refusal));
          return;
        case HelloOutcome::kPending:
          // Held until its name is known; Accepted() resumes reading (or Close() refuses). The
          // core may accept before this Hold (the gate remembers), or the stream may end first
          // (the gate refuses, and no read is outstanding to notice: finish here).
          held_ = true;
          if (!link_->gate().Hold([this] {
                held_ = false;
                attached_ = true;
                StartRead(&in_);
              })) {
            outbox_->Finish(grpc::Status::CANCELLED);
          }
          return;
        case HelloOutcome::kAccepted:
          break;
      }
      attached_ = true;
    } else {
      DeliverAgentMessage(core_, link_.get(), in_);
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { outbox_->OnWriteDone(ok); }

  void OnCancel() override {
    // No resume after this: an Accepted() arriving later would StartRead on a reactor that gRPC
    // may already be ending. A held hello has no read outstanding to notice the cancellation; a
    // resume that won the race has, and ends the stream by failing.
    if (link_->gate().End()) outbox_->Finish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    link_->gate().End();
    if (held_) core_->AgentHelloAbandoned(link_.get());
    ReportGone();
    outbox_->Detach();
    delete this;
  }

 private:
  // Whatever the core holds for this link goes. Not only when attached_: a held hello retried
  // just as the stream ended is attached by the core while its Accepted() finds the gate ended,
  // so attached_ never turns true. AgentGone of a link the core never attached does nothing (as
  // the fast front door's EndAgent relies on).
  void ReportGone() {
    if (!gone_) {
      gone_ = true;
      core_->AgentGone(link_.get());
    }
  }

  Core* core_;
  v1::AgentMessage in_;
  std::shared_ptr<Outbox<v1::ServerMessage>> outbox_;
  std::shared_ptr<Link> link_;
  std::atomic<bool> attached_{false};
  std::atomic<bool> held_{false};
  bool gone_ = false;
};

class Refuse final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ServerMessage> {
 public:
  explicit Refuse(grpc::Status s) { Finish(s); }
  void OnDone() override { delete this; }
};

}  // namespace

void DeliverAgentMessage(Core* core, AgentLink* link, const v1::AgentMessage& m) {
  link->last_heard_ms = SteadyMs();
  if (m.has_blob_fetch() || m.has_blob_query() || m.has_blob_put()) {
    ServeAgentBlobs(core, link, m);
    return;
  }
  if (!m.has_output()) {
    core->AgentMessage(link, m);
    return;
  }
  if (auto stored = core->AgentOutput(link, m.output())) {
    v1::ServerMessage ack;
    ack.mutable_output_ack()->set_task_id(m.output().task_id());
    ack.mutable_output_ack()->set_stream(m.output().stream());
    ack.mutable_output_ack()->set_offset(*stored);
    ack.mutable_output_ack()->set_retry_later(*stored < m.output().offset() + m.output().data().size());
    link->Send(std::move(ack));
  }
}

Result<Caller> Authenticator::Identify(const grpc::ServerContextBase* ctx) const {
  if (!users_) return Caller{};
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  std::string token;
  if (it != md.end()) {
    std::string value(it->second.data(), it->second.size());
    if (value.rfind("Bearer ", 0) == 0) token = value.substr(7);
  }
  return IdentifyToken(token);
}

Result<Caller> Authenticator::IdentifyToken(const std::string& token) const {
  if (!users_) return Caller{};
  if (const User* u = users_->Authenticate(token)) return Caller{u, u->name};
  if (Core* core = core_->load()) {
    std::string task = core->tokens().TaskOfToken(token);
    if (!task.empty()) {
      std::string owner = core->TaskOwner(task);
      if (const User* u = users_->Find(owner)) return Caller{u, u->name, task, Role::kSubmit};
    }
  }
  return Status(StatusCode::kUnauthenticated,
                token.empty() ? "this server needs a token: --token, $TIDEPOOL_TOKEN or ~/.config/tidepool/token"
                              : "the token was not accepted");
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

grpc::ServerBidiReactor<v1::AgentMessage, v1::ServerMessage>* AgentService::Connect(grpc::CallbackServerContext* ctx) {
  Core* core = core_->load();
  if (!core) return new Refuse(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is starting"));
  if (need_certificates_ && !(ctx->auth_context() && ctx->auth_context()->IsPeerAuthenticated())) {
    return new Refuse(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                   "agents must present a client certificate signed by server.tls.client_ca (mTLS)"));
  }
  return new AgentStream(core);
}

}  // namespace tidepool::server
