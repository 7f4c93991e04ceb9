#include "common/executor.h"

#include <pthread.h>

namespace tidepool {

Executor::Executor(std::string name, size_t threads) : name_(std::move(name)) {
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
      Loop();
    });
  }
}

Executor::~Executor() {
  Shutdown();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void Executor::Submit(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void Executor::Shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

size_t Executor::StopWithin(std::chrono::milliseconds bound) {
  std::deque<std::function<void()>> dropped;
  std::unique_lock lock(mu_);
  stopping_ = true;
  dropped.swap(queue_);
  cv_.notify_all();
  idle_cv_.wait_for(lock, bound, [this] { return running_ == 0; });
  size_t left = running_;
  lock.unlock();
  dropped.clear();  // outside the lock: a job's captures may take other locks as they go
  return left;
}

void Executor::Loop() {
  while (true) {
    std::function<void()> fn;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      fn = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    fn();
    fn = nullptr;
    {
      std::lock_guard lock(mu_);
      --running_;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace tidepool
