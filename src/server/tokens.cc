#include "server/tokens.h"

#include <fmt/format.h>

#include "common/crypto.h"
#include "common/fs.h"

namespace tidepool::server {

namespace {
std::string SecretPath(const std::string& data_dir) { return data_dir + "/secret.key"; }
}  // namespace

Result<TokenAuthority> TokenAuthority::Read(const std::string& data_dir) {
  auto secret = ReadFile(SecretPath(data_dir));
  if (!secret.ok()) {
    return NotFound(fmt::format("no server secret in {} (has a server run with this data dir?)", data_dir));
  }
  if (secret->size() < 32) return Internal(fmt::format("{} is too short to be a secret", SecretPath(data_dir)));
  return TokenAuthority(std::move(secret).value());
}

Result<TokenAuthority> TokenAuthority::Open(const std::string& data_dir) {
  if (PathExists(SecretPath(data_dir))) return Read(data_dir);
  if (Status s = WriteFileAtomic(SecretPath(data_dir), HexEncode(RandomBytes(32)), 0600); !s.ok()) return s;
  return Read(data_dir);
}

std::string TokenAuthority::WorkerToken(const std::string& name) const {
  return "tpw_" + HmacSha256Hex(secret_, "worker:" + name);
}

std::string TokenAuthority::JoinToken(const std::string& pool) const {
  return "tpj_" + HmacSha256Hex(secret_, "pool:" + pool);
}

std::string TokenAuthority::TaskToken(const std::string& task_id) const {
  return "tpt_" + HexEncode(task_id) + "_" + HmacSha256Hex(secret_, "task:" + task_id);
}

std::string TokenAuthority::TaskOfToken(const std::string& token) const {
  if (token.rfind("tpt_", 0) != 0) return "";
  size_t sep = token.rfind('_');
  if (sep <= 4) return "";
  std::string hex = token.substr(4, sep - 4);
  if (hex.size() % 2) return "";
  std::string id;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t k = i; k < i + 2; ++k) {
      char c = hex[k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return "";
      v = v * 16 + d;
    }
    id += static_cast<char>(v);
  }
  return ConstantTimeEquals(TaskToken(id), token) ? id : "";
}

bool TokenAuthority::VerifyWorker(const std::string& name, const std::string& token) const {
  return ConstantTimeEquals(WorkerToken(name), token);
}

bool TokenAuthority::VerifyJoin(const std::string& pool, const std::string& token) const {
  return ConstantTimeEquals(JoinToken(pool), token);
}

}  // namespace tidepool::server
