// ResumeGate: the hand-off between a stream that holds an agent's hello and the core that later
// accepts it. Three parties race: the stream's reader (which holds, then waits), the core (which
// accepts from its own thread, possibly before the reader got round to waiting) and the stream's
// end (cancellation or teardown, after which nothing may be started on the stream).
//
//   Hold(resume)  the reader waits for acceptance. If Accept() came first, resume runs now.
//                 Returns false if the stream has already ended: the caller finishes it itself.
//   Accept()      the core accepts. Runs the waiting resume, or remembers the acceptance for Hold.
//   End()         the stream is ending: no resume runs after this returns (one in progress is
//                 waited out). Returns true if a resume was waiting and is now dropped, i.e. the
//                 stream has nothing outstanding that would notice the end by itself.
//
// resume runs under the gate's lock, so it must not call back into the gate.
#ifndef TIDEPOOL_SERVER_RESUME_GATE_H_
#define TIDEPOOL_SERVER_RESUME_GATE_H_

#include <functional>
#include <mutex>
#include <utility>

namespace tidepool::server {

class ResumeGate {
 public:
  bool Hold(std::function<void()> resume) {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    if (accepted_) {
      resume();
      return true;
    }
    resume_ = std::move(resume);
    return true;
  }

  void Accept() {
    std::lock_guard lock(mu_);
    if (ended_) return;
    if (resume_) {
      auto resume = std::move(resume_);
      resume_ = nullptr;
      resume();
      return;
    }
    accepted_ = true;
  }

  bool End() {
    std::lock_guard lock(mu_);
    ended_ = true;
    bool was_waiting = static_cast<bool>(resume_);
    resume_ = nullptr;
    return was_waiting;
  }

 private:
  std::mutex mu_;
  std::function<void()> resume_;
  bool accepted_ = false;
  bool ended_ = false;
};

}  // namespace tidepool::server

#endif  // TIDEPOOL_SERVER_RESUME_GATE_H_
