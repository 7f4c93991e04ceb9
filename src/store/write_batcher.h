// Group commit: many callers' mutations share one transaction (one fsync).
//
// Submit() queues a mutation; `on_commit` (optional) runs on the writer thread once the batch
// holding it is durable, or failed. Mutations commit in submission order. The writer commits
// whatever is queued as soon as the previous commit ends, so batches grow under load and stay
// single mutations when idle: latency is one commit, throughput is many mutations per fsync.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "store/store.h"

namespace tidepool::store {

class WriteBatcher {
 public:
  using Callback = std::function<void(const Status&)>;

  explicit WriteBatcher(Store* store);
  ~WriteBatcher();  // commits what is queued, then stops
  WriteBatcher(const WriteBatcher&) = delete;
  WriteBatcher& operator=(const WriteBatcher&) = delete;

  void Submit(Mutation m, Callback on_commit = nullptr);
  // Blocks until everything submitted so far is committed.
  void Flush();
  void Stop();

  uint64_t commits() const;  // number of transactions so far (for tests and benchmarks)

 private:
  void Loop();

  Store* store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable flushed_cv_;
  std::vector<Mutation> pending_;
  std::vector<Callback> callbacks_;
  uint64_t submitted_ = 0;
  uint64_t committed_ = 0;
  uint64_t commits_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tidepool::store
