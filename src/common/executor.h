// A fixed-size thread pool for blocking work (backend calls, store reads) that must never run
// on gRPC or core threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tidepool {

class Executor {
 public:
  Executor(std::string name, size_t threads);
  ~Executor();  // runs what is queued, then joins
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void Submit(std::function<void()> fn);
  // Stops accepting work; queued work still runs. Idempotent.
  void Shutdown();

 private:
  void Loop();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tidepool
