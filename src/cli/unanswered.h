// A server that has not answered is not a server that is gone.
//
// A frozen server (SIGSTOP, a stalled disk, a paused VM) keeps its connections open and reads
// the request when it runs again. A client that gave up on it after a while would leave the user
// not knowing whether the request was taken, and tempted to send it again. So the clients wait
// as long as the connection is open, and tell the user once, after 10 s, that the server has not
// answered yet. Only a connection that ends without the answer makes them give up, and then they
// say that the request may have been taken. (The small C and C++ clients in src/fastclient do the
// same: lite_await, AwaitAnswer.)
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace tidepool::cli {

class UnansweredNote {
 public:
  explicit UnansweredNote(std::string address, std::chrono::milliseconds after = std::chrono::seconds(10));
  ~UnansweredNote();
  UnansweredNote(const UnansweredNote&) = delete;
  UnansweredNote& operator=(const UnansweredNote&) = delete;

  // The answer came: no note from now on. Idempotent.
  void Answered();
  // Whether the note was printed (the wait was long: a connection that then ends was open).
  bool told();

 private:
  std::string address_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool answered_ = false;
  bool told_ = false;
  std::thread thread_;
};

// The request was sent and the connection ended without its answer: says it may have been taken.
void ReportLostUnanswered(const std::string& address);

}  // namespace tidepool::cli
