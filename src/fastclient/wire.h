// The fast client's wire: one TCP connection to the server carrying frames of the fast protocol
// (common/fast_protocol.h), and the small helpers every request shares. Used by fast_client.cc
// (the requests, the fallback) and run_session.cc (vrun's events, and its reattaching).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fast_protocol.h"

namespace tidepool::fastclient {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kConnectTimeoutMs = 20000;  // gRPC's minimum connect timeout
constexpr int kWelcomeTimeoutMs = 10000;  // no answer by then: the user is told, and we wait on
// gRPC status codes, as FINISH carries them.
constexpr int kUnknown = 2, kNotFound = 5, kFailedPrecondition = 9, kUnimplemented = 12, kUnavailable = 14;

// "HOST:PORT" with a plain host name, IPv4 or [IPv6] address; anything else (gRPC target URIs
// such as unix:PATH or dns:///NAME) is for the full client.
bool SplitAddress(const std::string& address, std::string* host, std::string* port);

// Reads happen on one thread (the main one); writes on any, each frame whole. A vrun that lost
// its server closes it and connects again (Close, then Connect): writes in between fail.
class Connection {
 public:
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

  // The main thread: ends this connection (writers blocked on it return false) so that Connect
  // may make a new one.
  void Close() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    std::lock_guard lock(write_mu_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    write_closed_ = true;
    pos_ = len_ = 0;
  }

  enum class Outcome { kConnected, kUnreachable, kNameNotResolved };

  // kUnreachable: the caller says so, as the full client would.
  Outcome Connect(const std::string& host, const std::string& port) {
    std::vector<sockaddr_storage> addrs;
    auto numeric = [&](const std::string& h) {
      sockaddr_storage ss{};
      auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
      auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
      uint16_t p = htons(static_cast<uint16_t>(std::atoi(port.c_str())));
      if (::inet_pton(AF_INET, h.c_str(), &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = p;
      } else if (::inet_pton(AF_INET6, h.c_str(), &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = p;
      } else {
        return false;
      }
      addrs.push_back(ss);
      return true;
    };
    if (!numeric(host)) {
      if (host == "localhost") {
        numeric("127.0.0.1");
        numeric("::1");
      } else {
#if TIDEPOOL_FASTCLIENT_RESOLVE_NAMES
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo* res = nullptr;
        if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return Outcome::kUnreachable;
        for (addrinfo* ai = res; ai; ai = ai->ai_next) {
          sockaddr_storage ss{};
          std::memcpy(&ss, ai->ai_addr, std::min<size_t>(ai->ai_addrlen, sizeof(ss)));
          addrs.push_back(ss);
        }
        ::freeaddrinfo(res);
#else
        // A static binary would need glibc's NSS modules at run time to resolve names: names
        // are the full client's (gRPC resolves them).
        return Outcome::kNameNotResolved;
#endif
      }
    }
    for (const sockaddr_storage& ss : addrs) {
      socklen_t len = ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
      int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) continue;
      int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len);
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int err = 0;
        socklen_t elen = sizeof(err);
        if (::poll(&p, 1, kConnectTimeoutMs) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0) {
          rc = 0;
        }
      }
      if (rc != 0) {
        ::close(fd);
        continue;
      }
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
      int idle = 20, intvl = 10, cnt = 3;  // a vanished server is noticed, as with gRPC keepalive
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
      std::lock_guard lock(write_mu_);
      fd_ = fd;
      write_closed_ = false;
      pos_ = len_ = 0;
      return Outcome::kConnected;
    }
    return Outcome::kUnreachable;
  }

  // Any thread. false once the connection broke (later frames are dropped, as the full
  // client's writes are once its stream is closed).
  bool Write(uint8_t type, std::string_view payload) {
    std::string buf;
    fast::AppendFrame(buf, type, payload);
    return Send(buf);
  }

  // Bytes as they are (frames already made), in one go with respect to other writers.
  bool Send(std::string_view buf) {
    std::lock_guard lock(write_mu_);
    if (write_closed_) return false;
    const char* p = buf.data();
    size_t left = buf.size();
    while (left > 0) {
      ssize_t n = ::send(fd_, p, left, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        write_closed_ = true;
        return false;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return true;
  }

  // The main thread. False if nothing (not even the peer's close) arrives within timeout_ms.
  bool WaitReadable(int timeout_ms) { return pos_ < len_ || PollIn(timeout_ms) != 0; }

  // The main thread. Reads exactly n bytes; false on EOF, error or (with a deadline) timeout.
  bool ReadExact(char* out, size_t n, int timeout_ms = -1) {
    while (n > 0) {
      if (pos_ == len_) {
        if (timeout_ms >= 0 && PollIn(timeout_ms) <= 0) return false;
        ssize_t got = ::recv(fd_, buf_, sizeof(buf_), 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;
        pos_ = 0;
        len_ = static_cast<size_t>(got);
      }
      size_t take = std::min(n, len_ - pos_);
      std::memcpy(out, buf_ + pos_, take);
      pos_ += take;
      out += take;
      n -= take;
    }
    return true;
  }

  // One frame; false on EOF/error, or a frame over the limit (then *oversize).
  bool ReadFrame(uint8_t* type, std::string* payload, int timeout_ms = -1, bool* oversize = nullptr) {
    char h[fast::kHeaderSize];
    if (!ReadExact(h, sizeof(h), timeout_ms)) return false;
    uint32_t len = fast::FrameLength(h);
    if (len > fast::kMaxEventFrame) {
      if (oversize) *oversize = true;
      return false;
    }
    *type = fast::FrameTypeOf(h);
    payload->resize(len);
    return ReadExact(payload->data(), len, timeout_ms);
  }

 private:
  // poll() for input, through EINTR: > 0 ready (or closed), 0 timed out, < 0 failed.
  int PollIn(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    int r;
    do {
      r = ::poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r;
  }

  int fd_ = -1;
  std::mutex write_mu_;
  bool write_closed_ = false;
  char buf_[64 * 1024];
  size_t pos_ = 0, len_ = 0;
};

json ParseJson(const std::string& payload);  // an object, or {} for anything else
std::string Str(const json& j, const char* key);
int64_t Int(const json& j, const char* key);
bool Bool(const json& j, const char* key);

// How a request ended when no event said so: FINISH's status, or the connection's loss.
struct Finish {
  int code = kUnavailable;
  std::string message = "the connection to the server was lost";
};

// Waits up to kWelcomeTimeoutMs for the server's next bytes; if none came, tells the user (once)
// that the server has not answered yet. The client then keeps waiting while the connection is
// open: a server that does not answer is frozen or busy, not gone, and will read the request when
// it runs again (giving up would make the user submit twice). Returns whether it told.
bool AwaitAnswer(Connection& conn, const std::string& address);

// The request was sent and the connection ended without its answer.
[[noreturn]] void LostUnanswered(const std::string& address);

}  // namespace tidepool::fastclient
