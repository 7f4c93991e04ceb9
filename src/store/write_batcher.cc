#include "store/write_batcher.h"

#include <pthread.h>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace tidepool::store {

WriteBatcher::WriteBatcher(Store* store) : store_(store), thread_([this] {
  pthread_setname_np(pthread_self(), "store-writer");
  Loop();
}) {}

WriteBatcher::~WriteBatcher() { Stop(); }

void WriteBatcher::Submit(Mutation m, Callback on_commit) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    pending_.push_back(std::move(m));
    callbacks_.push_back(std::move(on_commit));
    ++submitted_;
    wake = holds_ == 0;
  }
  // Under a hold the writer could not commit anyway; Release() wakes it once, not per mutation.
  if (wake) cv_.notify_one();
}

void WriteBatcher::Acquire() {
  std::lock_guard lock(mu_);
  ++holds_;
}

void WriteBatcher::Release() {
  bool wake;
  {
    std::lock_guard lock(mu_);
    wake = --holds_ == 0 && !pending_.empty();
  }
  if (wake) cv_.notify_one();
}

void WriteBatcher::Flush() {
  std::unique_lock lock(mu_);
  uint64_t target = submitted_;
  flushed_cv_.wait(lock, [&] { return committed_ >= target; });
}

void WriteBatcher::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t WriteBatcher::commits() const {
  std::lock_guard lock(mu_);
  return commits_;
}

Status WriteBatcher::RetryWhileFull(const std::vector<Mutation>& batch) {
  Status s = store_->Apply(batch);
  if (s.code() != StatusCode::kResourceExhausted) return s;
  // Its file system is full: nothing of this batch was acknowledged yet, so it waits (its callers
  // with it) and goes again until the space is back. New work is refused meanwhile (stalled()).
  spdlog::error("store commit of {} changes waits: {}", batch.size(), s.message());
  {
    std::lock_guard lock(mu_);
    stalled_ = s;
  }
  auto backoff = std::chrono::milliseconds(100);
  int attempts = 1;
  while (s.code() == StatusCode::kResourceExhausted) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, backoff, [this] { return stopping_; })) break;  // stopping: it fails as it is
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    s = store_->Apply(batch);
    attempts++;
  }
  {
    std::lock_guard lock(mu_);
    stalled_ = Status::Ok();
  }
  if (s.ok()) spdlog::warn("store commits again after {} attempts: space was freed", attempts);
  return s;
}

Status WriteBatcher::stalled() const {
  std::lock_guard lock(mu_);
  return stalled_;
}

void WriteBatcher::Loop() {
  std::vector<Mutation> batch;
  std::vector<Callback> callbacks;
  while (true) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || (!pending_.empty() && holds_ == 0); });
      if (pending_.empty()) return;  // stopping and drained
      batch.swap(pending_);
      callbacks.swap(callbacks_);
    }
    Status s = RetryWhileFull(batch);
    if (!s.ok()) spdlog::error("store commit of {} changes failed: {}", batch.size(), s.message());
    for (auto& cb : callbacks) {
      if (cb) cb(s);
    }
    {
      std::lock_guard lock(mu_);
      committed_ += batch.size();
      ++commits_;
    }
    flushed_cv_.notify_all();
    batch.clear();
    callbacks.clear();
  }
}

}  // namespace tidepool::store
