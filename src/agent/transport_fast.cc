#include "agent/transport_fast.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/fast_protocol.h"

namespace tidepool::agent {

namespace {

constexpr int kConnectTimeoutMs = 5000;
constexpr int kWelcomeTimeoutMs = 10000;

void SetSockOpt(int fd, int level, int name, int value) { ::setsockopt(fd, level, name, &value, sizeof(value)); }

// Connects to one address within the timeout; -1 with *why on failure.
int ConnectTo(const addrinfo* ai, std::string* why) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) {
    *why = std::strerror(errno);
    return -1;
  }
  int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    rc = ::poll(&p, 1, kConnectTimeoutMs);
    int err = 0;
    socklen_t len = sizeof(err);
    if (rc == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
      rc = 0;
    } else {
      errno = rc == 0 ? ETIMEDOUT : (err != 0 ? err : errno);
      rc = -1;
    }
  }
  if (rc != 0) {
    *why = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

class FastStream final : public AgentStream {
 public:
  // fd: connected, blocking. A stream that failed to open has fd -1 and its reason.
  FastStream(int fd, Status failed) : fd_(fd), end_(std::move(failed)) {}
  ~FastStream() override {
    if (fd_ >= 0) ::close(fd_);
  }

  bool Write(const v1::AgentMessage& m) override {
    std::string payload;
    if (!m.SerializeToString(&payload)) return Fail(Internal("cannot encode an agent message"));
    out_.clear();
    fast::AppendFrame(out_, fast::kAgent, payload);
    return WriteAll(out_);
  }

  TryWrite TryWriteNow(const v1::AgentMessage& m) override {
    if (fd_ < 0 || cancelled_) return TryWrite::kFailed;
    std::string payload;
    if (!m.SerializeToString(&payload)) {
      Fail(Internal("cannot encode an agent message"));
      return TryWrite::kFailed;
    }
    direct_.clear();
    fast::AppendFrame(direct_, fast::kAgent, payload);
    ssize_t n;
    do n = ::send(fd_, direct_.data(), direct_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return TryWrite::kWouldBlock;
    if (n <= 0) {
      SocketFailed("send");
      return TryWrite::kFailed;
    }
    // Part of a small frame: the socket's buffer filled just now (rare). The rest must follow
    // before anything else, so it is written here, waiting if need be.
    std::string_view rest(direct_);
    rest.remove_prefix(static_cast<size_t>(n));
    return WriteAll(rest) ? TryWrite::kWritten : TryWrite::kFailed;
  }

  bool Read(v1::ServerMessage* m) override {
    while (true) {
      std::string_view payload;
      uint8_t type = 0;
      if (!ReadFrame(&type, &payload)) return false;
      if (type == fast::kServer) {
        if (!m->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          return Fail(Internal("the server sent a malformed message"));
        }
        return true;
      }
      if (type == fast::kFinish) return Fail(FinishStatus(payload));
      return Fail(Internal(fmt::format("the server sent an unexpected frame (type {})", type)));
    }
  }

  void Cancel() override {
    cancelled_ = true;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }

  Status Finish() override {
    std::lock_guard lock(mu_);
    if (!end_.ok()) return end_;
    return cancelled_ ? Status(StatusCode::kCancelled, "cancelled") : Unavailable("the server closed the connection");
  }

  // The preface, the agent's hello frame and the server's welcome; false (with the reason) if
  // the server said anything else.
  bool Handshake() {
    std::string hello(fast::kMagic, sizeof(fast::kMagic));
    fast::AppendFrame(hello, fast::kHello, R"({"v":1,"agent":true})");
    if (!WriteAll(hello)) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, kWelcomeTimeoutMs) == 0) return Fail(Unavailable("no answer to the hello within 10 s"));
    char magic[sizeof(fast::kMagic)];
    if (!ReadExactly(magic, sizeof(magic))) return false;
    if (std::memcmp(magic, fast::kMagic, sizeof(magic)) != 0) {
      return Fail(Unavailable("the server does not speak the fast protocol (TLS? then give the agent --tls-ca)"));
    }
    uint8_t type = 0;
    std::string_view payload;
    if (!ReadFrame(&type, &payload)) return false;
    if (type == fast::kWelcome) return true;
    if (type == fast::kFinish) return Fail(FinishStatus(payload));
    return Fail(Internal(fmt::format("the server answered the hello with a frame of type {}", type)));
  }

 private:
  static Status FinishStatus(std::string_view payload) {
    auto j = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return Internal("the server ended the connection with a malformed status");
    int code = j.value("code", static_cast<int>(StatusCode::kUnknown));
    std::string message = j.value("message", std::string());
    if (code == 0) return Unavailable("the server ended the connection");
    return Status(static_cast<StatusCode>(code), message);
  }

  bool Fail(Status s) {
    std::lock_guard lock(mu_);
    if (end_.ok()) end_ = std::move(s);
    return false;
  }
  bool SocketFailed(const char* what) {
    if (cancelled_) return false;
    return Fail(Unavailable(fmt::format("{}: {}", what, std::strerror(errno))));
  }

  bool WriteAll(std::string_view data) {
    if (fd_ < 0) return false;
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return SocketFailed("send");
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads n bytes through the buffer.
  bool ReadExactly(char* out, size_t n) {
    while (n > 0) {
      if (in_off_ == in_.size()) {
        in_.clear();
        in_off_ = 0;
        if (!Fill()) return false;
      }
      size_t take = std::min(n, in_.size() - in_off_);
      std::memcpy(out, in_.data() + in_off_, take);
      in_off_ += take;
      out += take;
      n -= take;
    }
    return true;
  }

  // One frame; the payload points into the buffer until the next read.
  bool ReadFrame(uint8_t* type, std::string_view* payload) {
    char header[fast::kHeaderSize];
    if (!ReadExactly(header, sizeof(header))) return false;
    uint32_t len = fast::FrameLength(header);
    *type = fast::FrameTypeOf(header);
    if (len > fast::kMaxEventFrame) return Fail(Internal(fmt::format("the server sent a frame of {} bytes", len)));
    if (in_.size() - in_off_ < len) {  // not all here: keep the part that is, read the rest after it
      in_.erase(0, in_off_);
      in_off_ = 0;
      while (in_.size() < len) {
        if (!Fill()) return false;
      }
    }
    *payload = std::string_view(in_.data() + in_off_, len);
    in_off_ += len;
    return true;
  }

  bool Fill() {
    if (fd_ < 0) return false;
    size_t old = in_.size();
    in_.resize(old + kReadChunk);
    while (true) {
      ssize_t n = ::recv(fd_, in_.data() + old, kReadChunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        in_.resize(old);
        if (n == 0) return false;  // closed: Finish says so
        return SocketFailed("recv");
      }
      in_.resize(old + static_cast<size_t>(n));
      return true;
    }
  }

  static constexpr size_t kReadChunk = 64 * 1024;
  const int fd_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  Status end_;
  std::string in_;  // reader thread only
  size_t in_off_ = 0;
  std::string out_;  // writer only (the connection thread for the hello, then the writer thread)
  std::string direct_;  // TryWriteNow's frame (never at the same time as a Write)
};

class FastTransport final : public Transport {
 public:
  FastTransport(std::string server, int keepalive_ms) : server_(std::move(server)), keepalive_ms_(keepalive_ms) {}

  std::unique_ptr<AgentStream> Open() override {
    std::string why;
    int fd = Dial(&why);
    if (fd < 0) return std::make_unique<FastStream>(-1, Unavailable(fmt::format("cannot reach {}: {}", server_, why)));
    auto stream = std::make_unique<FastStream>(fd, Status::Ok());
    stream->Handshake();  // a failure is the stream's: its Write/Read fail and Finish says why
    return stream;
  }

 private:
  int Dial(std::string* why) {
    auto colon = server_.rfind(':');
    if (colon == std::string::npos || colon + 1 == server_.size()) {
      *why = "expected HOST:PORT";
      return -1;
    }
    std::string host = server_.substr(0, colon), port = server_.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      *why = ::gai_strerror(rc);
      return -1;
    }
    int fd = -1;
    for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) fd = ConnectTo(ai, why);
    ::freeaddrinfo(res);
    if (fd < 0) return -1;
    // Blocking from here on: a reader thread and a writer thread each wait in their own call.
    int fl = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    SetSockOpt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    // As gRPC's keepalive did: probe after keepalive_ms of silence, give up on a peer that has
    // not answered min(keepalive, 20 s) later; unacknowledged data times out the same way.
    const int idle_s = std::max(1, keepalive_ms_ / 1000);
    const int timeout_ms = std::min(keepalive_ms_, 20000);
    SetSockOpt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    SetSockOpt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
    SetSockOpt(fd, IPPROTO_TCP, TCP_KEEPINTVL, std::max(1, timeout_ms / 3000));
    SetSockOpt(fd, IPPROTO_TCP, TCP_KEEPCNT, 3);
    SetSockOpt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, keepalive_ms_ + timeout_ms);
    return fd;
  }

  std::string server_;
  int keepalive_ms_;
};

}  // namespace

std::unique_ptr<Transport> MakeFastTransport(const std::string& server, int keepalive_ms) {
  return std::make_unique<FastTransport>(server, keepalive_ms);
}

}  // namespace tidepool::agent
