// One mutex per worker name, for the contract's "a delete of a worker whose create is still
// running waits for it": Create holds its name's lock while it makes the worker, Delete takes
// the same lock first. Thread-safe; locks are kept for the backend's life (names are few).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace tidepool::backends {

class NameLocks {
 public:
  std::shared_ptr<std::mutex> For(const std::string& name) {
    std::lock_guard lock(mu_);
    auto& l = locks_[name];
    if (!l) l = std::make_shared<std::mutex>();
    return l;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;  // guarded by mu_
};

}  // namespace tidepool::backends
