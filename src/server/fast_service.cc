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
#include <spdlog/spdlog.h>

#include "common/fast_protocol.h"
#include "server/core_internal.h"
#include "server/fast_conn.h"

namespace tidepool::server {

using fast_conn::Clock;

namespace {

// A connection whose first byte has not come this soon after it was accepted is gRPC's. Fast
// clients send theirs with the connection; many gRPC clients do too, but not all of them:
// a sync-API client (the agent) that reconnects while it is not polling sends its HTTP/2
// preface only later, and then needs the server's SETTINGS, which gRPC sends on accept, to
// be there already (its connect deadline can be as short as 100 ms). A fast client that misses
// the window gets gRPC's answer to its preface and falls back: slower, never wrong.
constexpr auto kSniffGrace = std::chrono::milliseconds(20);
constexpr auto kHelloTimeout = std::chrono::seconds(10);   // "TPF1" but no hello by then: refused
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kReadBudget = 1 << 20;  // per connection per wakeup: one busy client cannot starve the rest
constexpr uint64_t kWakeId = 0;
constexpr uint64_t kFirstConnId = 1 << 20;  // ids below are listening sockets (index + 1)

void SetSockOpt(int fd, int level, int name, int value) { ::setsockopt(fd, level, name, &value, sizeof(value)); }

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
      fast_conn::HandleFrame(*c, c, core_, auth_, type, payload);
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
