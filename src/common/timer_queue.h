// One thread that runs callbacks at deadlines (decay timers, grace periods, sync loops).
// Callbacks run on the timer thread and must be short; they may schedule more timers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace tidepool {

class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using TimerId = uint64_t;

  TimerQueue();
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  TimerId At(Clock::time_point when, std::function<void()> fn);
  TimerId After(std::chrono::milliseconds delay, std::function<void()> fn) {
    return At(Clock::now() + delay, std::move(fn));
  }
  // Returns false if it already ran or was cancelled.
  bool Cancel(TimerId id);
  void Stop();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, TimerId> by_time_;
  std::map<TimerId, std::pair<Clock::time_point, std::function<void()>>> timers_;
  TimerId next_id_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tidepool
