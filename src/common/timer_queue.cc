#include "common/timer_queue.h"

#include <pthread.h>

namespace tidepool {

TimerQueue::TimerQueue() : thread_([this] {
  pthread_setname_np(pthread_self(), "timers");
  Loop();
}) {}

TimerQueue::~TimerQueue() { Stop(); }

TimerQueue::TimerId TimerQueue::At(Clock::time_point when, std::function<void()> fn) {
  TimerId id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    timers_.emplace(id, std::make_pair(when, std::move(fn)));
    by_time_.emplace(when, id);
  }
  cv_.notify_one();
  return id;
}

bool TimerQueue::Cancel(TimerId id) {
  std::lock_guard lock(mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  auto range = by_time_.equal_range(it->second.first);
  for (auto j = range.first; j != range.second; ++j) {
    if (j->second == id) {
      by_time_.erase(j);
      break;
    }
  }
  timers_.erase(it);
  return true;
}

void TimerQueue::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TimerQueue::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (by_time_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = by_time_.begin();
    if (first->first > Clock::now()) {
      // Copy the deadline: wait_until reads it again after waking, and Cancel() may have
      // erased the node it lives in meanwhile.
      const Clock::time_point deadline = first->first;
      cv_.wait_until(lock, deadline);
      continue;
    }
    TimerId id = first->second;
    by_time_.erase(first);
    auto it = timers_.find(id);
    std::function<void()> fn = std::move(it->second.second);
    timers_.erase(it);
    lock.unlock();
    fn();
    lock.lock();
  }
}

}  // namespace tidepool
