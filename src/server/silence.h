// Time the server did not run is not the agents' silence.
//
// The core closes an agent's link after three of its heartbeat intervals without a word from it
// (a frozen machine or a black-holed network keeps TCP open). Measured naively — now minus the
// last time a message was read — that silence includes every moment the server itself was not
// listening: a server stopped for 40 s (SIGSTOP, a VM paused, a reader thread stuck in a write to
// a stalled disk) finds, when it resumes, every agent "silent" while their heartbeats sit unread
// in its own socket buffers. It then cut every healthy link, marked every worker lost, and the
// pool replaced them.
//
// So silence is counted only over time the server was demonstrably listening:
//   * the end of the window is the link's read horizon, not now: the time up to which its reader
//     has read everything that had arrived. The front door publishes it after each epoll pass
//     that took every ready socket; a reader stuck (or stopped) does not advance it, so nobody
//     it reads for can fall silent meanwhile, and after it resumes it reads what is waiting
//     before its horizon moves past the stall. (gRPC links, read by gRPC's own threads, use now.)
//   * the start of the window is never before the server last resumed: the sweep itself runs
//     every period, and a sweep that runs late by more than half a period means the process (or
//     its core) did not run; every agent then gets a fresh, full window from that moment.
// Either alone would be racy or partial: the horizon cannot see a stall of gRPC's readers, and
// the sweep's lateness cannot see a stuck reader while the core runs on time.
//
// Pure: the caller passes the steady clock (milliseconds); tests drive it by hand.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace tidepool::server {

class SilenceJudge {
 public:
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::min() / 4;

  // `period_ms`: how often Sweep is called (the core's heartbeat sweep interval).
  explicit SilenceJudge(int64_t period_ms) : period_ms_(std::max<int64_t>(1, period_ms)) {}

  void Start(int64_t now_ms) { last_sweep_ms_ = now_ms; }

  // Called at the top of every sweep. When this sweep ran late by more than half a period (the
  // server was not running), every window starts again now and the gap since the previous sweep
  // is returned; otherwise 0.
  int64_t Sweep(int64_t now_ms) {
    int64_t gap = last_sweep_ms_ == kNever ? 0 : now_ms - last_sweep_ms_;
    last_sweep_ms_ = now_ms;
    if (gap <= period_ms_ + period_ms_ / 2) return 0;
    listening_since_ms_ = now_ms;
    return gap;
  }

  // How much silence counts against an agent last heard at `last_heard_ms`, whose reader has read
  // everything that arrived before `read_horizon_ms`.
  int64_t SilentFor(int64_t now_ms, int64_t last_heard_ms, int64_t read_horizon_ms) const {
    int64_t end = std::min(now_ms, read_horizon_ms);
    int64_t start = std::max(last_heard_ms, listening_since_ms_);
    return std::max<int64_t>(0, end - start);
  }

  // Whether that agent has been silent for longer than `limit_ms`.
  bool Silent(int64_t now_ms, int64_t last_heard_ms, int64_t read_horizon_ms, int64_t limit_ms) const {
    return SilentFor(now_ms, last_heard_ms, read_horizon_ms) > limit_ms;
  }

  int64_t listening_since_ms() const { return listening_since_ms_; }

 private:
  int64_t period_ms_;
  int64_t last_sweep_ms_ = kNever;
  int64_t listening_since_ms_ = kNever;
};

}  // namespace tidepool::server
