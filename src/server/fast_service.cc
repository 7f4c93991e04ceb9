// The fast protocol's server side and the port's front door (see fast_service.h).
#include "server/fast_service.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <deque>

#include <fmt/format.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/names.h"
#include "common/fast_protocol.h"
#include "server/core_internal.h"

namespace tidepool::server {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// A connection whose first byte has not come this soon after it was accepted is gRPC's. Fast
// clients send theirs with the connection; many gRPC clients do too, but not all of them:
// a sync-API client (the agent) that reconnects while it is not polling sends its HTTP/2
// preface only later, and then needs the server's SETTINGS, which gRPC sends on accept, to
// be there already (its connect deadline can be as short as 100 ms). A fast client that misses
// the window gets gRPC's answer to its preface and falls back: slower, never wrong.
constexpr auto kSniffGrace = std::chrono::milliseconds(20);
constexpr auto kHelloTimeout = std::chrono::seconds(10);   // "TPF1" but no hello by then: refused
constexpr auto kLingerTimeout = std::chrono::seconds(10);  // after FINISH, for the client to close
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kReadBudget = 1 << 20;  // per connection per wakeup: one busy client cannot starve the rest
constexpr uint64_t kWakeId = 0;
constexpr uint64_t kFirstConnId = 1 << 20;  // ids below are listening sockets (index + 1)

void SetSockOpt(int fd, int level, int name, int value) { ::setsockopt(fd, level, name, &value, sizeof(value)); }

// Strings from tasks and backends may hold any bytes: never throw on invalid UTF-8.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

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

}  // namespace

// One accepted connection. The loop thread owns the reading side and the phase; Send/Finish may
// be called from any thread (the core calls them, sometimes under its lock): they never block
// and never call back into the core.
class FastFrontDoor::Conn : public std::enable_shared_from_this<Conn> {
 public:
  enum class Phase { kSniff, kMagic, kHello, kReady, kRunning, kAgent, kDone };

  Conn(FastFrontDoor* door, int fd, uint64_t id) : door_(door), fd_(fd), id_(id) {}
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }

  uint64_t id() const { return id_; }
  int fd() const { return fd_; }
  const std::shared_ptr<std::atomic<int64_t>>& read_horizon() const { return door_->read_horizon_; }

  // Queues a frame (and with `magic`, the preface before it) and writes what the socket takes
  // now. `written` runs once the frame has left for the client. false once finished or broken.
  bool Send(uint8_t type, std::string_view payload, std::function<void()> written = nullptr, bool magic = false) {
    std::vector<std::function<void()>> done;
    {
      std::lock_guard lock(mu_);
      if (closed_ || finishing_ || broken_) return false;
      if (magic) out_.append(fast::kMagic, sizeof(fast::kMagic));
      fast::AppendFrame(out_, type, payload);
      queued_ += (magic ? sizeof(fast::kMagic) : 0) + fast::kHeaderSize + payload.size();
      if (written) written_.emplace_back(queued_, std::move(written));
      FlushLocked(&done);
    }
    for (auto& f : done) f();
    return true;
  }
  bool SendJson(uint8_t type, const json& j) { return Send(type, Dump(j)); }

  // The FINISH frame (the request's status), then the write side is closed. Idempotent. With
  // `last_type`, the frame `last` goes just before it, in the same write: the client wakes once
  // for both (a submission's id and its FINISH, P2).
  // `linger`: how long the peer has to read the FINISH and close before the connection is cut.
  void Finish(const Status& s, uint8_t last_type = 0, std::string_view last = {},
              std::chrono::milliseconds linger = kLingerTimeout) {
    std::vector<std::function<void()>> done;
    {
      std::lock_guard lock(mu_);
      if (closed_ || finishing_ || broken_) return;
      if (last_type != 0) {
        fast::AppendFrame(out_, last_type, last);
        queued_ += fast::kHeaderSize + last.size();
      }
      std::string payload = Dump(json{{"code", static_cast<int>(s.code())}, {"message", s.message()}});
      fast::AppendFrame(out_, fast::kFinish, payload);
      queued_ += fast::kHeaderSize + payload.size();
      finishing_ = true;
      finish_deadline_ = Clock::now() + linger;
      FlushLocked(&done);
    }
    for (auto& f : done) f();
  }

  // RunEvent -> frame.
  bool SendEvent(const v1::RunEvent& e, std::function<void()> written) {
    switch (e.event_case()) {
      case v1::RunEvent::kAccepted:
        return SendJson(fast::kAccepted, json{{"task_id", e.accepted().task_id()}, {"pool", e.accepted().pool()}});
      case v1::RunEvent::kWaiting: {
        const v1::Waiting& w = e.waiting();
        return SendJson(fast::kWaiting, json{{"pool", w.pool()},
                                             {"starting", w.starting()},
                                             {"idle", w.idle()},
                                             {"position", w.position()},
                                             {"allocation_error", w.allocation_error()},
                                             {"starting_detail", w.starting_detail()}});
      }
      case v1::RunEvent::kStarted:
        return SendJson(fast::kStarted, json{{"worker", e.started().worker()}});
      case v1::RunEvent::kOutput:
        return Send(e.output().stream() == v1::OUTPUT_STREAM_STDERR ? fast::kStderr : fast::kStdout, e.output().data(),
                    std::move(written));
      case v1::RunEvent::kExited: {
        const v1::Exited& x = e.exited();
        return SendJson(fast::kExited, json{{"state", api::StateName(x.state())},
                                            {"has_exit_code", x.has_exit_code()},
                                            {"exit_code", x.exit_code()},
                                            {"signal", x.signal()},
                                            {"reason", x.reason()},
                                            {"command_not_found", x.command_not_found()},
                                            {"workspace_result", x.workspace_result()}});
      }
      case v1::RunEvent::kStdinWritten:
        return SendJson(fast::kStdinWritten, json{{"written", e.stdin_written()}});
      default:
        return true;
    }
  }

  // Loop thread: the socket can take more.
  void OnWritable() {
    std::vector<std::function<void()>> done;
    {
      std::lock_guard lock(mu_);
      if (closed_ || broken_) return;
      epoll_out_ = false;
      FlushLocked(&done);
      if (!epoll_out_) Watch(EPOLLIN | EPOLLRDHUP);
    }
    for (auto& f : done) f();
  }

  // Loop thread: closes the socket; later sends are refused.
  void CloseFd() {
    std::lock_guard lock(mu_);
    closed_ = true;
    written_.clear();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Loop thread: the fd now belongs to gRPC.
  int Release() {
    std::lock_guard lock(mu_);
    closed_ = true;
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

  bool finishing() {
    std::lock_guard lock(mu_);
    return finishing_ || broken_;
  }
  bool broken() {
    std::lock_guard lock(mu_);
    return broken_;
  }
  bool LingeredTooLong(Clock::time_point now) {
    std::lock_guard lock(mu_);
    return (finishing_ && now > finish_deadline_) || broken_;
  }

  // ---- the loop thread's side ----
  Phase phase = Phase::kSniff;
  Clock::time_point deadline;   // for kMagic, kHello
  std::string in;               // bytes received, not yet handled
  size_t in_off = 0;
  Core* core = nullptr;         // from the hello on
  Caller caller;
  std::string task_id;          // a vrun's task
  bool gone_told = false;       // RunClientGone was called
  bool agent = false;           // the hello said so: the connection carries an agent's stream
  std::shared_ptr<AgentLink> agent_link;  // from the agent's hello until the connection ends

 private:
  void Watch(uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id_;
    ::epoll_ctl(door_->epoll_fd_, EPOLL_CTL_MOD, fd_, &ev);
  }

  // Requires mu_. Writes without blocking; what the socket does not take waits for EPOLLOUT.
  void FlushLocked(std::vector<std::function<void()>>* done) {
    if (epoll_out_ || fd_ < 0) return;  // the loop flushes when the socket is writable
    while (out_off_ < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        out_off_ += static_cast<size_t>(n);
        sent_ += static_cast<uint64_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        epoll_out_ = true;
        Watch(EPOLLIN | EPOLLOUT | EPOLLRDHUP);
        break;
      }
      // The peer is gone: what is queued will never be read. The loop sees the end on read.
      broken_ = true;
      out_.clear();
      out_off_ = 0;
      written_.clear();
      return;
    }
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
      if (finishing_ && !shut_) {
        ::shutdown(fd_, SHUT_WR);
        shut_ = true;
      }
    } else if (out_off_ > (1u << 20) && out_off_ > out_.size() / 2) {
      out_.erase(0, out_off_);
      out_off_ = 0;
    }
    while (!written_.empty() && written_.front().first <= sent_) {
      done->push_back(std::move(written_.front().second));
      written_.pop_front();
    }
  }

  FastFrontDoor* door_;
  std::mutex mu_;
  int fd_;
  const uint64_t id_;
  std::string out_;
  size_t out_off_ = 0;
  uint64_t queued_ = 0, sent_ = 0;  // bytes ever queued / written
  std::deque<std::pair<uint64_t, std::function<void()>>> written_;
  bool epoll_out_ = false;  // EPOLLOUT is armed; the loop writes
  bool finishing_ = false;
  bool shut_ = false;
  bool broken_ = false;
  bool closed_ = false;
  Clock::time_point finish_deadline_{};
};

namespace {

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

// The loop thread's end of an agent connection: the core forgets the agent (a held hello is
// dropped, an attached one is gone) and the link lets go of the connection.
void EndAgent(FastFrontDoor::Conn& c) {
  if (!c.agent_link) return;
  c.core->AgentHelloAbandoned(c.agent_link.get());
  c.core->AgentGone(c.agent_link.get());
  c.agent_link.reset();
}

// "HOST:PORT" -> host (brackets removed), port; false if malformed.
bool SplitHostPort(const std::string& hostport, std::string* host, std::string* port) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) return false;
  *host = hostport.substr(0, colon);
  *port = hostport.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return !port->empty();
}

int BindListen(const sockaddr* addr, socklen_t len, bool dual_stack) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  SetSockOpt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  SetSockOpt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (addr->sa_family == AF_INET6) SetSockOpt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? 0 : 1);
  if (::bind(fd, addr, len) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int PortOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

}  // namespace

FastFrontDoor::~FastFrontDoor() {
  Stop();
  for (int fd : listen_fds_) ::close(fd);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status FastFrontDoor::Listen(const std::string& hostport, int* port) {
  std::string host, service;
  if (!SplitHostPort(hostport, &host, &service)) return InvalidArgument(fmt::format("bad address {}", hostport));
  int bound_port = 0;
  auto add = [&](sockaddr* addr, socklen_t len, bool dual) {
    if (bound_port != 0) {  // every address on the same port (":0" chooses it on the first)
      if (addr->sa_family == AF_INET) reinterpret_cast<sockaddr_in*>(addr)->sin_port = htons(bound_port);
      if (addr->sa_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(addr)->sin6_port = htons(bound_port);
    }
    int fd = BindListen(addr, len, dual);
    if (fd < 0) return false;
    if (bound_port == 0) bound_port = PortOf(fd);
    listen_fds_.push_back(fd);
    return true;
  };
  char* end = nullptr;
  long p = std::strtol(service.c_str(), &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) return InvalidArgument(fmt::format("bad port in {}", hostport));
  if (host.empty() || host == "0.0.0.0" || host == "::") {
    // A wildcard: both IPv4 and IPv6, as gRPC does (one dual-stack socket when possible).
    sockaddr_in6 a6{};
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_any;
    a6.sin6_port = htons(static_cast<uint16_t>(p));
    if (!add(reinterpret_cast<sockaddr*>(&a6), sizeof(a6), true)) {
      sockaddr_in a4{};
      a4.sin_family = AF_INET;
      a4.sin_addr.s_addr = htonl(INADDR_ANY);
      a4.sin_port = htons(static_cast<uint16_t>(p));
      add(reinterpret_cast<sockaddr*>(&a4), sizeof(a4), false);
    }
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
      return Unavailable(fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
    }
    for (addrinfo* ai = res; ai; ai = ai->ai_next) add(ai->ai_addr, ai->ai_addrlen, false);
    ::freeaddrinfo(res);
  }
  if (listen_fds_.empty()) return Unavailable(fmt::format("cannot listen on {}: {}", hostport, std::strerror(errno)));
  *port = bound_port;
  return Status::Ok();
}

void FastFrontDoor::Start(grpc::Server* grpc) {
  grpc_ = grpc;
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeId;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  for (size_t i = 0; i < listen_fds_.size(); ++i) {
    ev.data.u64 = i + 1;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fds_[i], &ev);
  }
  thread_ = std::thread(&FastFrontDoor::Loop, this);
}

void FastFrontDoor::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

void FastFrontDoor::Loop() {
  epoll_event events[64];
  auto next_sweep = Clock::now() + std::chrono::seconds(1);
  while (!stop_) {
    int timeout_ms = accept_paused_ ? 100 : 1000;
    if (!sniffing_.empty()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(sniffing_.front().first - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, timeout_ms));
    }
    const int64_t pass_start = SteadyMs();
    int n = ::epoll_wait(epoll_fd_, events, 64, timeout_ms);
    for (int i = 0; i < n && !stop_; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == kWakeId) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof(v));
        continue;
      }
      if (id < kFirstConnId) {
        Accept(listen_fds_[id - 1]);
        continue;
      }
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      std::shared_ptr<Conn> c = it->second;
      if (events[i].events & EPOLLOUT) c->OnWritable();
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) OnReadable(c);
    }
    // Every socket ready when this pass began has been read from (all of them fitted in one
    // epoll_wait): nothing that arrived before pass_start is unread any more.
    if (n >= 0 && n < 64) read_horizon_->store(pass_start);
    auto now = Clock::now();
    // Connections still silent after the grace are gRPC's (in accept order: the deadlines are too).
    while (!sniffing_.empty() && sniffing_.front().first <= now) {
      auto it = conns_.find(sniffing_.front().second);
      sniffing_.pop_front();
      if (it == conns_.end() || it->second->phase != Conn::Phase::kSniff) continue;
      std::shared_ptr<Conn> c = it->second;
      OnReadable(c);  // a last look: the first byte may have come just now
      if (conns_.count(c->id()) && c->phase == Conn::Phase::kSniff) HandOff(c);
    }
    if (accept_paused_ && now >= resume_accepting_) PauseAccepting(false);
    if (now >= next_sweep) {
      Sweep();
      next_sweep = now + std::chrono::seconds(1);
    }
  }
  // Shutting down: nothing more is accepted; connections not handed to gRPC end here.
  for (auto& [id, c] : conns_) {
    if (c->core && !c->task_id.empty() && !c->gone_told) {
      c->gone_told = true;
      c->core->RunClientGone(c->task_id);
    }
    EndAgent(*c);
    c->CloseFd();
  }
  conns_.clear();
  sniffing_.clear();
  for (int fd : listen_fds_) ::close(fd);
  listen_fds_.clear();
}

void FastFrontDoor::PauseAccepting(bool paused) {
  accept_paused_ = paused;
  for (size_t i = 0; i < listen_fds_.size(); ++i) {
    epoll_event ev{};
    ev.events = paused ? 0u : static_cast<uint32_t>(EPOLLIN);
    ev.data.u64 = i + 1;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fds_[i], &ev);
  }
}

// The one place a connection's descriptor is made; kept out of line so that scripts/tsan.supp can
// name exactly this frame (see the entry there: gRPC closes handed-off sockets where TSan cannot
// see it).
[[gnu::noinline]] static int FrontDoorAcceptSocket(int listen_fd) {
  return ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void FastFrontDoor::Accept(int listen_fd) {
  while (true) {
    int fd = FrontDoorAcceptSocket(listen_fd);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: a level-triggered listening socket would spin; look again later.
        spdlog::warn("accept: {}; pausing new connections for 100ms", std::strerror(errno));
        resume_accepting_ = Clock::now() + std::chrono::milliseconds(100);
        PauseAccepting(true);
      }
      return;
    }
    SetSockOpt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    auto c = std::make_shared<Conn>(this, fd, kFirstConnId + next_id_++);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->id();
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) continue;  // c closes fd
    conns_.emplace(c->id(), c);
    OnReadable(c);  // the first bytes usually arrive with the connection
    if (c->phase == Conn::Phase::kSniff && conns_.count(c->id())) sniffing_.emplace_back(Clock::now() + kSniffGrace, c->id());
  }
}

void FastFrontDoor::HandOff(const std::shared_ptr<Conn>& c) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd(), nullptr);
  conns_.erase(c->id());
  int fd = c->Release();
  grpc::AddInsecureChannelFromFd(grpc_, fd);
}

void FastFrontDoor::Close(const std::shared_ptr<Conn>& c) {
  if (c->core && !c->task_id.empty() && !c->gone_told) {
    c->gone_told = true;
    c->core->RunClientGone(c->task_id);
  }
  EndAgent(*c);
  c->CloseFd();  // also leaves the epoll set
  conns_.erase(c->id());
}

void FastFrontDoor::Sweep() {
  auto now = Clock::now();
  std::vector<std::shared_ptr<Conn>> due;
  for (auto& [id, c] : conns_) {
    bool waiting_for_start = c->phase == Conn::Phase::kMagic || c->phase == Conn::Phase::kHello;
    if ((waiting_for_start && now > c->deadline) || c->LingeredTooLong(now)) due.push_back(c);
  }
  for (auto& c : due) {
    if ((c->phase == Conn::Phase::kMagic || c->phase == Conn::Phase::kHello) && !c->finishing()) {
      c->phase = Conn::Phase::kDone;
      c->Finish(DeadlineExceeded("no hello within 10s"));
    } else {
      Close(c);
    }
  }
}

namespace {

// Handles one frame of a fast connection; may finish it (the phase is then kDone).
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

}  // namespace

void FastFrontDoor::OnReadable(const std::shared_ptr<Conn>& c) {
  if (c->phase == Conn::Phase::kSniff) {
    char first = 0;
    ssize_t n = ::recv(c->fd(), &first, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) return Close(c);
    if (first != fast::kMagic[0]) return HandOff(c);  // gRPC ("PRI * HTTP/2.0" ...) or whatever it is
    c->phase = Conn::Phase::kMagic;
    c->deadline = Clock::now() + kHelloTimeout;
    SetSockOpt(c->fd(), SOL_SOCKET, SO_KEEPALIVE, 1);  // a vanished client is noticed, as with gRPC keepalive
    SetSockOpt(c->fd(), IPPROTO_TCP, TCP_KEEPIDLE, 20);
    SetSockOpt(c->fd(), IPPROTO_TCP, TCP_KEEPINTVL, 10);
    SetSockOpt(c->fd(), IPPROTO_TCP, TCP_KEEPCNT, 3);
  }
  size_t budget = kReadBudget;
  bool eof = false;
  char buf[kReadChunk];
  while (budget > 0) {
    ssize_t n = ::recv(c->fd(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      eof = true;
      break;
    }
    budget -= std::min(budget, static_cast<size_t>(n));
    // An agent is heard as soon as its bytes are read, even the start of a long frame.
    if (c->agent_link) c->agent_link->last_heard_ms = SteadyMs();
    if (c->phase == Conn::Phase::kDone || c->finishing()) continue;  // finished: drain until the client closes
    c->in.append(buf, static_cast<size_t>(n));
    // Handle what is complete.
    if (c->phase == Conn::Phase::kMagic) {
      if (c->in.size() < sizeof(fast::kMagic)) continue;
      if (std::memcmp(c->in.data(), fast::kMagic, sizeof(fast::kMagic)) != 0) {
        spdlog::debug("fast client: garbage instead of the TPF1 preface; closing");
        return Close(c);
      }
      c->in_off = sizeof(fast::kMagic);
      c->phase = Conn::Phase::kHello;
    }
    while (c->phase != Conn::Phase::kDone && c->in.size() - c->in_off >= fast::kHeaderSize) {
      const char* h = c->in.data() + c->in_off;
      uint32_t len = fast::FrameLength(h);
      if (len > fast::kMaxRequestFrame) {
        c->phase = Conn::Phase::kDone;
        c->Finish(InvalidArgument(
            fmt::format("fast protocol: a frame of {} bytes is over the limit of {} bytes", len, fast::kMaxRequestFrame)));
        break;
      }
      if (c->in.size() - c->in_off < fast::kHeaderSize + len) break;
      uint8_t type = fast::FrameTypeOf(h);
      std::string_view payload(h + fast::kHeaderSize, len);
      HandleFrame(*c, c, core_, auth_, type, payload);
      c->in_off += fast::kHeaderSize + len;
    }
    if (c->phase == Conn::Phase::kDone) {
      c->in.clear();
      c->in_off = 0;
    } else if (c->in_off == c->in.size()) {
      c->in.clear();
      c->in_off = 0;
    } else if (c->in_off > kReadChunk) {
      c->in.erase(0, c->in_off);
      c->in_off = 0;
    }
  }
  // A client that went away, or broke our writes: its vrun is gone (the task is cancelled, as
  // when a gRPC stream ends), and a truncated frame is simply dropped.
  if (eof || c->broken()) Close(c);
}

}  // namespace tidepool::server
