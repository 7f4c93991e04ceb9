// Content hashes for the workspace: SHA-256, lowercase hex (OpenSSL underneath).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tidepool::workspace {

// True for 64 lowercase hex digits: the only strings accepted as blob names (so a name is never
// a path).
bool IsHash(std::string_view s);

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  std::string FinalHex();  // once

 private:
  struct State;
  std::unique_ptr<State> s_;
};

std::string Sha256Hex(std::string_view data);

struct FileHash {
  std::string hash;
  uint64_t size = 0;
};
// Hashes an open file from its start to EOF. The caller compares size and mtime before and after
// (a file changing while it is read).
Result<FileHash> HashFd(int fd);

}  // namespace tidepool::workspace
