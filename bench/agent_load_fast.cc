// tidepool-agent-load --protocol fast (the default): what `tidepool-agent` speaks, the fast
// protocol's agent frames on one plain TCP connection per agent, all held by one epoll thread
// that also sends every heartbeat. See agent_load.cc.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agent_load.h"
#include "common/fast_protocol.h"

namespace agent_load {
namespace {

// --protocol fast: every connection on one epoll thread, heartbeats from a timer heap.
class FastLoad {
 public:
  explicit FastLoad(Options o) : o_(std::move(o)) {}
  int Run();

 private:
  enum State { kConnecting, kWaiting, kAccepted, kDone };
  struct Conn {
    int fd = -1;
    int index = 0;
    State state = kConnecting;
    std::string in, out;  // received, not yet parsed; to send, not yet taken by the socket
    bool magic = false;   // the server's "TPF1" came
    int64_t started_ms = 0;
    int heartbeat_ms = 5000;
    uint64_t seq = 0;
  };
  struct Due {
    int64_t at;
    int index;
    bool operator>(const Due& b) const { return at > b.at; }
  };

  void Open(int index);
  void Flush(Conn& c);
  void OnEvent(Conn& c, uint32_t events);
  void OnFrame(Conn& c, uint8_t type, std::string_view payload);
  void End(Conn& c, const std::string& why, bool refused = false);
  void Beat(Conn& c);
  void Watch(Conn& c, uint32_t events, int op = EPOLL_CTL_MOD) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = static_cast<uint32_t>(c.index);
    ::epoll_ctl(ep_, op, c.fd, &ev);
  }
  void Poll(int timeout_ms);

  Options o_;
  int ep_ = -1;
  addrinfo* addr_ = nullptr;
  std::string instance_;
  std::vector<Conn> conns_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> beats_;
  std::vector<Due> retry_;  // refused connects (a full backlog): tried again 100 ms later
  int connecting_ = 0;
  Report r_;
};

void FastLoad::Open(int index) {
  Conn& c = conns_[static_cast<size_t>(index)];
  c.fd = ::socket(addr_->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (o_.keepalive_ms > 0) {  // as src/agent/transport_fast.cc
    int idle = std::max(1, o_.keepalive_ms / 1000), intvl = std::max(1, std::min(o_.keepalive_ms, 20000) / 3000), cnt = 3;
    ::setsockopt(c.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
  }
  c.state = kConnecting;
  c.started_ms = NowMs();
  c.in.clear();
  c.magic = false;
  int rc = ::connect(c.fd, addr_->ai_addr, addr_->ai_addrlen);
  if (rc != 0 && errno != EINPROGRESS) {
    ::close(c.fd);
    c.fd = -1;
    retry_.push_back({NowMs() + 100, index});
    return;
  }
  v1::AgentMessage m;
  FillHello(o_, instance_, index, m.mutable_hello());
  c.out.assign(tidepool::fast::kMagic, sizeof(tidepool::fast::kMagic));
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kHello, R"({"v":1,"agent":true})");
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kAgent, m.SerializeAsString());
  Watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
}

void FastLoad::Flush(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      Watch(c, EPOLLIN | EPOLLOUT);
      return;
    }
    return End(c, std::string("send: ") + std::strerror(errno));
  }
  Watch(c, EPOLLIN);
}

void FastLoad::End(Conn& c, const std::string& why, bool refused) {
  if (c.state == kDone) return;
  if (c.state == kAccepted) {
    r_.dropped++;
    if (r_.first_drop.empty()) r_.first_drop = why;
  } else {
    connecting_--;
    (refused ? r_.refused : r_.failed)++;
    if (r_.first_error.empty()) r_.first_error = why;
  }
  c.state = kDone;
  ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  c.fd = -1;
}

void FastLoad::OnFrame(Conn& c, uint8_t type, std::string_view payload) {
  if (type == tidepool::fast::kFinish) {
    bool refused = std::string(payload).find("\"code\":7") != std::string::npos;
    return End(c, "FINISH " + std::string(payload), refused);
  }
  if (type != tidepool::fast::kServer) return;  // the WELCOME of the hello
  v1::ServerMessage m;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return End(c, "a malformed server message");
  if (m.has_welcome() && c.state != kAccepted) {
    c.state = kAccepted;
    connecting_--;
    r_.accepted++;
    r_.welcome_ms.push_back(NowMs() - c.started_ms);
    if (m.welcome().heartbeat_interval_ms() > 0) c.heartbeat_ms = static_cast<int>(m.welcome().heartbeat_interval_ms());
    beats_.push({NowMs() + (o_.heartbeat_ms > 0 ? o_.heartbeat_ms : c.heartbeat_ms), c.index});
  }
  if (m.has_heartbeat_interval() && m.heartbeat_interval().interval_ms() > 0) {
    c.heartbeat_ms = static_cast<int>(m.heartbeat_interval().interval_ms());
  }
}

void FastLoad::OnEvent(Conn& c, uint32_t events) {
  if (c.state == kConnecting && (events & EPOLLOUT)) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {  // refused (a full backlog): again shortly, as gRPC's wait_for_ready would
      ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
      c.fd = -1;
      retry_.push_back({NowMs() + 100, c.index});
      return;
    }
    c.state = kWaiting;
  }
  if (events & EPOLLOUT) Flush(c);
  if (c.state == kDone || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return End(c, n == 0 ? "closed by the server" : std::string("recv: ") + std::strerror(errno));
    c.in.append(buf, static_cast<size_t>(n));
  }
  size_t at = 0;
  if (!c.magic) {
    if (c.in.size() < sizeof(tidepool::fast::kMagic)) return;
    if (c.in.compare(0, 4, tidepool::fast::kMagic, 4) != 0) return End(c, "no TPF1 preface");
    c.magic = true;
    at = 4;
  }
  while (c.state != kDone && c.in.size() - at >= tidepool::fast::kHeaderSize) {
    uint32_t len = tidepool::fast::FrameLength(c.in.data() + at);
    if (c.in.size() - at - tidepool::fast::kHeaderSize < len) break;
    OnFrame(c, tidepool::fast::FrameTypeOf(c.in.data() + at),
            std::string_view(c.in.data() + at + tidepool::fast::kHeaderSize, len));
    at += tidepool::fast::kHeaderSize + len;
  }
  if (c.state != kDone) c.in.erase(0, at);
}

void FastLoad::Beat(Conn& c) {
  if (!c.out.empty()) {  // the previous message is still queued: skip this beat
    r_.beats_skipped++;
    return;
  }
  v1::AgentMessage m;
  m.mutable_heartbeat()->set_seq(++c.seq);
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kAgent, m.SerializeAsString());
  r_.beats_sent++;
  Flush(c);
}

void FastLoad::Poll(int timeout_ms) {
  int64_t now = NowMs();
  if (!beats_.empty()) timeout_ms = static_cast<int>(std::clamp<int64_t>(beats_.top().at - now, 0, timeout_ms));
  epoll_event events[256];
  int n = ::epoll_wait(ep_, events, 256, timeout_ms);
  for (int i = 0; i < n; ++i) {
    Conn& c = conns_[events[i].data.u32];
    if (c.state != kDone && c.fd >= 0) OnEvent(c, events[i].events);
  }
  now = NowMs();
  while (!beats_.empty() && beats_.top().at <= now) {
    Due d = beats_.top();
    beats_.pop();
    Conn& c = conns_[static_cast<size_t>(d.index)];
    if (c.state != kAccepted) continue;
    Beat(c);
    int interval = o_.heartbeat_ms > 0 ? o_.heartbeat_ms : c.heartbeat_ms;
    beats_.push({std::max(d.at + interval, now + 1), d.index});  // no drift from a late loop
  }
  for (size_t i = 0; i < retry_.size();) {
    if (retry_[i].at <= now) {
      int index = retry_[i].index;
      retry_[i] = retry_.back();
      retry_.pop_back();
      Open(index);
    } else {
      ++i;
    }
  }
}

int FastLoad::Run() {
  RaiseFileLimit(o_.n);
  instance_ = std::to_string(std::random_device{}()) + std::to_string(getpid());
  auto colon = o_.server.rfind(':');
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (colon == std::string::npos ||
      ::getaddrinfo(o_.server.substr(0, colon).c_str(), o_.server.substr(colon + 1).c_str(), &hints, &addr_) != 0) {
    Usage("--server: cannot resolve");
  }
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  conns_.resize(static_cast<size_t>(o_.n));
  for (int i = 0; i < o_.n; ++i) conns_[static_cast<size_t>(i)].index = i;
  r_.requested = o_.n;

  auto t0 = Clock::now();
  auto log_progress = [&](const char* phase) {
    if (o_.quiet) return;
    double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "[agent-load %6.1fs] %s: accepted %d, connecting %d, refused %d, failed %d, dropped %d\n", sec,
                 phase, r_.accepted, connecting_, r_.refused, r_.failed, r_.dropped);
  };
  auto ramp_deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.ramp_timeout_s));
  auto next_log = t0 + std::chrono::seconds(2);
  int started = 0;
  while (!g_stop && Clock::now() < ramp_deadline && (started < o_.n || connecting_ > 0)) {
    while (started < o_.n && connecting_ < o_.max_connecting) {
      connecting_++;
      Open(started++);
    }
    Poll(100);
    if (Clock::now() >= next_log) {
      log_progress("ramp");
      next_log += std::chrono::seconds(2);
    }
  }
  auto ramp_end = Clock::now();
  r_.ramp_s = std::chrono::duration<double>(ramp_end - t0).count();
  r_.failed += (o_.n - started) + connecting_;  // never opened, or never welcomed
  log_progress("ramp done");
  WriteReadyFile(o_.ready_file, r_.accepted);

  auto hold_end = ramp_end + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration_s));
  next_log = ramp_end + std::chrono::seconds(10);
  while (!g_stop && (o_.duration_s <= 0 || Clock::now() < hold_end)) {
    Poll(100);
    if (Clock::now() >= next_log) {
      log_progress("hold");
      next_log += std::chrono::seconds(10);
    }
  }
  r_.hold_s = std::chrono::duration<double>(Clock::now() - ramp_end).count();
  for (const Conn& c : conns_) r_.connected_at_end += c.state == kAccepted ? 1 : 0;
  return r_.Print();
}

}  // namespace

int RunFast(Options o) { return FastLoad(std::move(o)).Run(); }

}  // namespace agent_load
