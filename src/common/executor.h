// A fixed-size thread pool for blocking work (backend calls, store reads) that must never run
// on gRPC or core threads.
#pragma once

#include <chrono>
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
  ~Executor();  // runs what is queued, then joins (after StopWithin: nothing is queued)
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void Submit(std::function<void()> fn);
  // Stops accepting work; queued work still runs. Idempotent.
  void Shutdown();
  // Stops accepting work, drops what is queued (it never starts) and waits at most `bound` for
  // the work running now. Returns how many jobs are still running (0: none). A caller that gets
  // more than 0 must not destroy the executor (its destructor would wait for them): the server
  // exits the process instead.
  size_t StopWithin(std::chrono::milliseconds bound);

 private:
  void Loop();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  size_t running_ = 0;
  std::condition_variable idle_cv_;
  std::vector<std::thread> threads_;
};

}  // namespace tidepool
