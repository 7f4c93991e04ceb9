// The fast protocol's frames, as the front door's loop hands them over (fast_conn.h): the hello,
// then a run, submit or reattach (or an agent's stream), then a run's input.
#include <optional>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "server/fast_conn.h"

namespace tidepool::server::fast_conn {
namespace {

// A JSON object from a control frame, or a discarded value.
json ParseObject(std::string_view payload) {
  json j = json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return json(json::value_t::discarded);
  return j;
}

// Integer field of a control frame; nullopt if absent or not an integer.
std::optional<int64_t> IntField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

std::string FrameName(uint8_t type) {
  switch (type) {
    case fast::kHello: return "hello";
    case fast::kRun: return "run";
    case fast::kReattach: return "reattach";
    case fast::kSubmit: return "submit";
    case fast::kStdin: return "stdin";
    case fast::kStdinEof: return "stdin-eof";
    case fast::kSignal: return "signal";
    case fast::kResize: return "resize";
    case fast::kCancel: return "cancel";
    case fast::kAgent: return "agent";
    default: return fmt::format("type {}", type);
  }
}

// What the core sees of a fast vrun.
class FastRunClient final : public RunClient {
 public:
  explicit FastRunClient(std::shared_ptr<FastFrontDoor::Conn> conn) : conn_(std::move(conn)) {}
  bool Send(v1::RunEvent e, std::function<void()> written) override { return conn_->SendEvent(e, std::move(written)); }
  void Finish(const Status& s) override { conn_->Finish(s); }

 private:
  std::shared_ptr<FastFrontDoor::Conn> conn_;
};

// What the core sees of an agent on the fast protocol. Reading never pauses for a held hello
// (as the gRPC stream does): the agent sends nothing before the welcome, and the core has the
// session before it sends one.
class FastAgentLink final : public AgentLink {
 public:
  explicit FastAgentLink(std::shared_ptr<FastFrontDoor::Conn> conn)
      : conn_(std::move(conn)), read_horizon_(conn_->read_horizon()) {}
  bool Send(v1::ServerMessage m) override { return conn_->Send(fast::kServer, m.SerializeAsString()); }
  void Close(const Status& why) override { conn_->Finish(why); }
  // Cut at the front door's next sweep (within a second).
  void Abort(const Status& why) override { conn_->Finish(why, 0, {}, std::chrono::milliseconds(0)); }
  void Accepted() override {}
  // The front door's loop reads this link: while it is stuck or stopped, nothing it reads for
  // falls silent (server/silence.h).
  int64_t ReadHorizonMs(int64_t now_ms) const override { return std::min(now_ms, read_horizon_->load()); }

 private:
  std::shared_ptr<FastFrontDoor::Conn> conn_;
  std::shared_ptr<std::atomic<int64_t>> read_horizon_;
};

}  // namespace

void HandleFrame(FastFrontDoor::Conn& c, const std::shared_ptr<FastFrontDoor::Conn>& self, CoreRef* core_ref,
                 const Authenticator* auth, uint8_t type, std::string_view payload) {
  using Phase = FastFrontDoor::Conn::Phase;
  auto refuse = [&](const Status& s) {
    spdlog::debug("fast client: {}", s.message());
    c.phase = Phase::kDone;
    c.Finish(s);
  };
  switch (c.phase) {
    case Phase::kHello: {
      if (type != fast::kHello) return refuse(InvalidArgument("fast protocol: the first frame must be the hello"));
      json j = ParseObject(payload);
      if (j.is_discarded()) return refuse(InvalidArgument("fast protocol: malformed hello"));
      if (IntField(j, "v").value_or(0) != fast::kVersion) {
        // The client falls back to gRPC on UNIMPLEMENTED before the welcome.
        return refuse(Unimplemented(fmt::format("fast protocol version {} is not supported", Dump(j.value("v", json())))));
      }
      std::string token;
      if (auto it = j.find("token"); it != j.end()) {
        if (!it->is_string()) return refuse(InvalidArgument("fast protocol: malformed hello"));
        token = it->get<std::string>();
      }
      if (auto it = j.find("agent"); it != j.end()) {
        if (!it->is_boolean()) return refuse(InvalidArgument("fast protocol: malformed hello"));
        c.agent = it->get<bool>();
      }
      Core* core = core_ref->load();
      if (!core) return refuse(ServerStarting());
      // An agent is no user: it proves who it is with its worker token, in its AgentHello.
      if (!c.agent) {
        auto caller = auth->IdentifyToken(token);
        if (!caller.ok()) return refuse(caller.status());
        c.caller = *caller;
      }
      c.core = core;
      c.phase = Phase::kReady;
      c.Send(fast::kWelcome, Dump(json{{"v", fast::kVersion}}), nullptr, /*magic=*/true);
      return;
    }
    case Phase::kReady: {
      if (c.agent) {
        v1::AgentMessage m;
        if (type != fast::kAgent) {
          return refuse(InvalidArgument(fmt::format("fast protocol: expected the agent's hello, got {}", FrameName(type))));
        }
        if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size())) || !m.has_hello()) {
          return refuse(InvalidArgument("the first message must be a hello"));
        }
        c.agent_link = std::make_shared<FastAgentLink>(self);
        c.agent_link->last_heard_ms = SteadyMs();
        Status refusal;
        if (c.core->AgentHello(c.agent_link, m.hello(), &refusal) == HelloOutcome::kRefused) {
          c.agent_link.reset();
          return refuse(refusal);
        }
        c.phase = Phase::kAgent;
        return;
      }
      if (type == fast::kReattach) {
        json j = ParseObject(payload);
        const int64_t out = j.is_discarded() ? -1 : IntField(j, "stdout").value_or(-1);
        const int64_t err = j.is_discarded() ? -1 : IntField(j, "stderr").value_or(-1);
        auto id = j.is_discarded() ? j.end() : j.find("task_id");
        if (out < 0 || err < 0 || id == j.end() || !id->is_string()) {
          return refuse(InvalidArgument("fast protocol: malformed reattach"));
        }
        v1::Reattach req;
        req.set_task_id(id->get<std::string>());
        req.set_stdout_offset(static_cast<uint64_t>(out));
        req.set_stderr_offset(static_cast<uint64_t>(err));
        c.phase = Phase::kRunning;
        c.task_id = c.core->Reattach(std::make_shared<FastRunClient>(self), req, c.caller);
        if (c.task_id.empty()) c.phase = Phase::kDone;  // refused: the client has the error
        return;
      }
      if (type != fast::kRun && type != fast::kSubmit) {
        return refuse(InvalidArgument(fmt::format("fast protocol: expected a run or submit request, got {}", FrameName(type))));
      }
      // The spec in protobuf's own encoding: exactly what the full client would send over gRPC.
      v1::TaskSpec spec;
      if (!spec.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return refuse(InvalidArgument("fast protocol: the task spec is not a valid TaskSpec"));
      }
      if (type == fast::kRun) {
        c.phase = Phase::kRunning;
        c.task_id = c.core->Run(std::make_shared<FastRunClient>(self), std::move(spec), c.caller);
        if (c.task_id.empty()) c.phase = Phase::kDone;  // refused: the client has the error
        return;
      }
      c.phase = Phase::kDone;
      c.core->Submit(
          std::move(spec),
          [self](Result<std::string> id) {
            if (!id.ok()) {
              self->Finish(id.status());
              return;
            }
            self->Finish(Status::Ok(), fast::kSubmitted, Dump(json{{"id", *id}}));
          },
          c.caller);
      return;
    }
    case Phase::kRunning: {
      v1::RunRequest req;
      switch (type) {
        case fast::kStdin:
          req.set_stdin(std::string(payload));
          break;
        case fast::kStdinEof:
          req.set_stdin_eof(true);
          break;
        case fast::kSignal: {
          json j = ParseObject(payload);
          auto sig = j.is_discarded() ? std::nullopt : IntField(j, "signal");
          if (!sig || *sig <= 0 || *sig >= 65) return refuse(InvalidArgument("fast protocol: malformed signal"));
          req.set_signal(static_cast<int32_t>(*sig));
          break;
        }
        case fast::kResize: {
          json j = ParseObject(payload);
          auto rows = j.is_discarded() ? std::nullopt : IntField(j, "rows");
          auto cols = j.is_discarded() ? std::nullopt : IntField(j, "cols");
          if (!rows || !cols || *rows < 0 || *cols < 0 || *rows > 65535 || *cols > 65535) {
            return refuse(InvalidArgument("fast protocol: malformed resize"));
          }
          req.mutable_resize()->set_rows(static_cast<uint32_t>(*rows));
          req.mutable_resize()->set_cols(static_cast<uint32_t>(*cols));
          break;
        }
        case fast::kCancel:
          req.set_cancel(true);
          break;
        default:
          return refuse(InvalidArgument(fmt::format("fast protocol: unexpected {} frame while running", FrameName(type))));
      }
      c.core->RunInput(c.task_id, req);
      return;
    }
    case Phase::kAgent: {
      v1::AgentMessage m;
      if (type != fast::kAgent || !m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return refuse(InvalidArgument(fmt::format("fast protocol: expected an agent message, got a malformed {} frame",
                                                  FrameName(type))));
      }
      DeliverAgentMessage(c.core, c.agent_link.get(), m);
      return;
    }
    default:
      return;  // finished: whatever else arrives is dropped
  }
}

}  // namespace tidepool::server::fast_conn
