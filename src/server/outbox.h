// Outbox: the write side of a gRPC callback stream, safe to use from any thread.
//
// gRPC allows one outstanding write per stream; Outbox queues the rest and starts the next
// write from the previous one's completion. Finish() runs after the queued messages are out.
// After Finish() (or once the stream broke) Send() returns false and never touches the reactor,
// so the core may hold an Outbox past the reactor's lifetime (the reactor calls Detach() in
// OnDone). A per-message `written` callback reports when the message has left, which is how
// output is acknowledged only once the client has taken it (end-to-end flow control).
#pragma once

#include <deque>
#include <functional>
#include <mutex>

#include <grpcpp/grpcpp.h>

namespace tidepool::server {

template <class Msg>
class Outbox {
 public:
  using StartWrite = std::function<void(const Msg*)>;
  using FinishFn = std::function<void(const grpc::Status&)>;

  Outbox(StartWrite start_write, FinishFn finish) : start_write_(std::move(start_write)), finish_(std::move(finish)) {}

  bool Send(Msg m, std::function<void()> written = nullptr) {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    queue_.push_back(Item{std::move(m), std::move(written)});
    queued_bytes_ += queue_.back().msg.ByteSizeLong();
    if (!writing_) {
      writing_ = true;
      start_write_(&queue_.front().msg);
    }
    return true;
  }

  // Called by the reactor's OnWriteDone.
  void OnWriteDone(bool ok) {
    std::function<void()> written;
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) return;
      queued_bytes_ -= queue_.front().msg.ByteSizeLong();
      written = std::move(queue_.front().written);
      queue_.pop_front();
      if (!ok) {
        closed_ = true;
        queue_.clear();
        queued_bytes_ = 0;
        writing_ = false;
        if (!finish_called_) {
          finish_called_ = true;
          finish_(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken"));
        }
        return;
      }
      if (!queue_.empty()) {
        start_write_(&queue_.front().msg);
      } else {
        writing_ = false;
        if (finish_pending_ && !finish_called_) {
          finish_called_ = true;
          finish_(pending_status_);
        }
      }
    }
    if (written) written();
  }

  // Finishes the stream once queued messages are written. Idempotent.
  void Finish(const grpc::Status& status) {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    if (writing_) {
      finish_pending_ = true;
      pending_status_ = status;
    } else {
      finish_called_ = true;
      finish_(status);
    }
  }

  // The reactor is gone (OnDone): never touch it again.
  void Detach() {
    std::lock_guard lock(mu_);
    closed_ = true;
    finish_called_ = true;
    queue_.clear();
    queued_bytes_ = 0;
  }

  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  size_t queued_bytes() const {
    std::lock_guard lock(mu_);
    return queued_bytes_;
  }

 private:
  struct Item {
    Msg msg;
    std::function<void()> written;
  };

  // Recursive: gRPC may complete a write inline, calling OnWriteDone from inside StartWrite.
  mutable std::recursive_mutex mu_;
  std::deque<Item> queue_;  // deque: push_back keeps the address of the message being written
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool closed_ = false;
  bool finish_pending_ = false;
  bool finish_called_ = false;
  grpc::Status pending_status_;
  StartWrite start_write_;
  FinishFn finish_;
};

}  // namespace tidepool::server
