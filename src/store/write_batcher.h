// Group commit: many callers' mutations share one transaction (one fsync).
//
// Submit() queues a mutation; `on_commit` (optional) runs on the writer thread once the batch
// holding it is durable, or failed. Mutations commit in submission order. The writer commits
// whatever is queued as soon as the previous commit ends, so batches grow under load and stay
// single mutations when idle: latency is one commit, throughput is many mutations per fsync.
// A Hold groups what one operation writes: while one lives, no new commit starts, so a worker's
// hello and the dispatch it leads to are one fsync, not two in a row.
#pragma once

#include <chrono>
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

  // A commit failed because the store's file system is full (Store::Apply returned
  // RESOURCE_EXHAUSTED): the writer keeps that batch, callbacks unanswered, and tries it again
  // (100 ms doubling to 2 s) until it goes through or Stop(). Meanwhile this is the error (callers
  // refuse new work with it); otherwise OK.
  Status stalled() const;

  // While a Hold lives, the writer starts no new commit (one already running finishes). Keep it
  // to one short operation, never Flush() under it (that would wait for itself), and take it
  // under the lock that serialises those operations: holds that overlap without end would keep
  // the writer from ever committing.
  class Hold {
   public:
    explicit Hold(WriteBatcher* b) : b_(b) { b_->Acquire(); }
    ~Hold() { b_->Release(); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    WriteBatcher* b_;
  };

 private:
  void Loop();
  Status RetryWhileFull(const std::vector<Mutation>& batch);
  void Acquire();
  void Release();

  Store* store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable flushed_cv_;
  std::vector<Mutation> pending_;
  std::vector<Callback> callbacks_;
  uint64_t submitted_ = 0;
  uint64_t committed_ = 0;
  uint64_t commits_ = 0;
  int holds_ = 0;
  bool stopping_ = false;
  Status stalled_;
  std::thread thread_;
};

}  // namespace tidepool::store
