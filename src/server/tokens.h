// Worker identity (pools.md): a token bound to a worker's name, an HMAC with the server's secret.
//
// The secret is 32 random bytes in DATA_DIR/secret.key (mode 0600), made on first start. Tokens
// are never logged or listed; `tidepool worker-token NAME` prints one on the server host.
#pragma once

#include <string>

#include "common/status.h"

namespace tidepool::server {

class TokenAuthority {
 public:
  // Loads DATA_DIR/secret.key, creating it if absent.
  static Result<TokenAuthority> Open(const std::string& data_dir);
  // Reads an existing secret only (for `tidepool worker-token`).
  static Result<TokenAuthority> Read(const std::string& data_dir);

  std::string WorkerToken(const std::string& worker_name) const;
  std::string JoinToken(const std::string& pool) const;
  bool VerifyWorker(const std::string& worker_name, const std::string& token) const;
  bool VerifyJoin(const std::string& pool, const std::string& token) const;
  // A task token acts as the task's owner while the task is unfinished (see auth.h).
  std::string TaskToken(const std::string& task_id) const;
  // The task id a valid task token names, or "" if it is not one.
  std::string TaskOfToken(const std::string& token) const;

 private:
  explicit TokenAuthority(std::string secret) : secret_(std::move(secret)) {}
  std::string secret_;
};

}  // namespace tidepool::server
