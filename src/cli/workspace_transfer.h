// What the workspace client's transfers share (workspace_client.cc sends, workspace_bring_back.cc
// fetches): gRPC errors as Status, and retrying a cut-off transfer. Internal to src/cli.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace tidepool::cli::workspace_transfer {

// A transfer cut off (the server restarting, a dropped link) is taken up again, from what the
// server already has, for this long after the first failure.
constexpr auto kRetryWindow = std::chrono::seconds(60);

inline Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return Status(static_cast<StatusCode>(s.error_code()), fmt::format("{}: {}", what, s.error_message()));
}

inline bool Retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::CANCELLED ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Waits between attempts (100 ms doubling to 2 s) while a failure is one to retry and the window
// since the first failure has not passed.
class Retry {
 public:
  bool Again(const grpc::Status& st) {
    if (!Retryable(st)) return false;
    auto now = std::chrono::steady_clock::now();
    if (!failing_) {
      failing_ = true;
      until_ = now + kRetryWindow;
    }
    if (now >= until_) return false;
    std::this_thread::sleep_for(backoff_);
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
    return true;
  }
  // After a failure, calls wait for the server to be back (within the window), not fail at once.
  void Prepare(grpc::ClientContext* ctx) const {
    if (!failing_) return;
    ctx->set_wait_for_ready(true);
    auto left = until_ - std::chrono::steady_clock::now();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
  }

 private:
  bool failing_ = false;
  std::chrono::steady_clock::time_point until_;
  std::chrono::milliseconds backoff_{100};
};

}  // namespace tidepool::cli::workspace_transfer
