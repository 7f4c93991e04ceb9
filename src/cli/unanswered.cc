#include "cli/unanswered.h"

#include <cstdio>

#include <fmt/format.h>

namespace tidepool::cli {

UnansweredNote::UnansweredNote(std::string address, std::chrono::milliseconds after) : address_(std::move(address)) {
  thread_ = std::thread([this, after] {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, after, [this] { return answered_; })) return;
    told_ = true;
    fmt::print(stderr, "tidepool: the server at {} has not answered for {} s; still waiting while the connection is open\n",
               address_, std::chrono::duration_cast<std::chrono::seconds>(after).count());
    std::fflush(stderr);
  });
}

UnansweredNote::~UnansweredNote() {
  Answered();
  if (thread_.joinable()) thread_.join();
}

void UnansweredNote::Answered() {
  {
    std::lock_guard lock(mu_);
    answered_ = true;
  }
  cv_.notify_all();
}

bool UnansweredNote::told() {
  std::lock_guard lock(mu_);
  return told_;
}

void ReportLostUnanswered(const std::string& address) {
  fmt::print(stderr, "tidepool: the connection to the server at {} ended before it answered; the request may have been taken\n",
             address);
}

}  // namespace tidepool::cli
