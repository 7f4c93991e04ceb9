#include "workspace/hash.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace tidepool::workspace {

bool IsHash(std::string_view s) {
  if (s.size() != 64) return false;
  bool ok = true;  // no early exit: a loop the compiler can vectorize (StatCache::Load checks 10,000s)
  for (char c : s) ok &= (c >= '0' && c <= '9') | (c >= 'a' && c <= 'f');
  return ok;
}

struct Sha256::State {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : s_(std::make_unique<State>()) {
  s_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(s_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(s_->ctx); }

void Sha256::Update(std::string_view data) { EVP_DigestUpdate(s_->ctx, data.data(), data.size()); }

std::string Sha256::FinalHex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(s_->ctx, md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(len * 2, '0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 0xf];
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.FinalHex();
}

Result<FileHash> HashFd(int fd) {
  constexpr size_t kChunk = 1 << 20;
  thread_local std::vector<char> buf(kChunk);  // one per thread, not one per file
  Sha256 h;
  FileHash out;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(out.size));
    if (n < 0) {
      if (errno == EINTR) continue;
      return InvalidArgument(fmt::format("read: {}", std::strerror(errno)));
    }
    if (n == 0) break;
    h.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
    out.size += static_cast<uint64_t>(n);
  }
  out.hash = h.FinalHex();
  return out;
}

}  // namespace tidepool::workspace
