// One accepted connection of the fast front door (fast_service.h), and the handling of the
// frames it carries (fast_frames.cc). Internal to src/server.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/names.h"
#include "common/fast_protocol.h"
#include "server/core_internal.h"
#include "server/fast_service.h"

namespace tidepool::server {
namespace fast_conn {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr auto kLingerTimeout = std::chrono::seconds(10);  // after FINISH, for the client to close

// Strings from tasks and backends may hold any bytes: never throw on invalid UTF-8.
inline std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace fast_conn

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
  bool SendJson(uint8_t type, const fast_conn::json& j) { return Send(type, fast_conn::Dump(j)); }

  // The FINISH frame (the request's status), then the write side is closed. Idempotent. With
  // `last_type`, the frame `last` goes just before it, in the same write: the client wakes once
  // for both (a submission's id and its FINISH, P2).
  // `linger`: how long the peer has to read the FINISH and close before the connection is cut.
  void Finish(const Status& s, uint8_t last_type = 0, std::string_view last = {},
              std::chrono::milliseconds linger = fast_conn::kLingerTimeout) {
    std::vector<std::function<void()>> done;
    {
      std::lock_guard lock(mu_);
      if (closed_ || finishing_ || broken_) return;
      if (last_type != 0) {
        fast::AppendFrame(out_, last_type, last);
        queued_ += fast::kHeaderSize + last.size();
      }
      std::string payload =
          fast_conn::Dump(fast_conn::json{{"code", static_cast<int>(s.code())}, {"message", s.message()}});
      fast::AppendFrame(out_, fast::kFinish, payload);
      queued_ += fast::kHeaderSize + payload.size();
      finishing_ = true;
      finish_deadline_ = fast_conn::Clock::now() + linger;
      FlushLocked(&done);
    }
    for (auto& f : done) f();
  }

  // RunEvent -> frame.
  bool SendEvent(const v1::RunEvent& e, std::function<void()> written) {
    switch (e.event_case()) {
      case v1::RunEvent::kAccepted:
        return SendJson(fast::kAccepted,
                        fast_conn::json{{"task_id", e.accepted().task_id()}, {"pool", e.accepted().pool()}});
      case v1::RunEvent::kWaiting: {
        const v1::Waiting& w = e.waiting();
        return SendJson(fast::kWaiting, fast_conn::json{{"pool", w.pool()},
                                                        {"starting", w.starting()},
                                                        {"idle", w.idle()},
                                                        {"position", w.position()},
                                                        {"allocation_error", w.allocation_error()},
                                                        {"starting_detail", w.starting_detail()}});
      }
      case v1::RunEvent::kStarted:
        return SendJson(fast::kStarted, fast_conn::json{{"worker", e.started().worker()}});
      case v1::RunEvent::kOutput:
        return Send(e.output().stream() == v1::OUTPUT_STREAM_STDERR ? fast::kStderr : fast::kStdout, e.output().data(),
                    std::move(written));
      case v1::RunEvent::kExited: {
        const v1::Exited& x = e.exited();
        return SendJson(fast::kExited, fast_conn::json{{"state", api::StateName(x.state())},
                                                       {"has_exit_code", x.has_exit_code()},
                                                       {"exit_code", x.exit_code()},
                                                       {"signal", x.signal()},
                                                       {"reason", x.reason()},
                                                       {"command_not_found", x.command_not_found()},
                                                       {"workspace_result", x.workspace_result()}});
      }
      case v1::RunEvent::kStdinWritten:
        return SendJson(fast::kStdinWritten, fast_conn::json{{"written", e.stdin_written()}});
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
  bool LingeredTooLong(fast_conn::Clock::time_point now) {
    std::lock_guard lock(mu_);
    return (finishing_ && now > finish_deadline_) || broken_;
  }

  // ---- the loop thread's side ----
  Phase phase = Phase::kSniff;
  fast_conn::Clock::time_point deadline;   // for kMagic, kHello
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
  fast_conn::Clock::time_point finish_deadline_{};
};

namespace fast_conn {

// Handles one frame of a fast connection (the loop thread, in the order they came); may finish
// it (the phase is then kDone).
void HandleFrame(FastFrontDoor::Conn& c, const std::shared_ptr<FastFrontDoor::Conn>& self, CoreRef* core_ref,
                 const Authenticator* auth, uint8_t type, std::string_view payload);

}  // namespace fast_conn
}  // namespace tidepool::server
