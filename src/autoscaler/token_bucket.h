// A token bucket with the time passed in (so it is pure and testable): `rate` tokens per second
// up to `burst`; starts full.
#pragma once

#include <algorithm>
#include <chrono>

namespace tidepool::autoscaler {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  TokenBucket(double rate_per_second, double burst) : rate_(rate_per_second), burst_(burst), tokens_(burst) {}

  // Takes one token if there is one at `now`.
  bool TryTake(Clock::time_point now) {
    Refill(now);
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }
  // How long from `now` until a token is there (zero if there is one).
  std::chrono::milliseconds WaitFor(Clock::time_point now) {
    Refill(now);
    if (tokens_ >= 1) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(static_cast<int64_t>((1 - tokens_) / rate_ * 1000) + 1);
  }

 private:
  void Refill(Clock::time_point now) {
    if (started_) tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    started_ = true;
    last_ = now;
  }

  double rate_;
  double burst_;
  double tokens_;
  bool started_ = false;
  Clock::time_point last_{};
};

}  // namespace tidepool::autoscaler
