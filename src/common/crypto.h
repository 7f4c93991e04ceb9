// Secrets and tokens (OpenSSL underneath).
#pragma once

#include <string>
#include <string_view>

namespace tidepool {

// n cryptographically random bytes.
std::string RandomBytes(size_t n);
// Lowercase alphanumeric id of the given length (for names and task ids).
std::string RandomId(size_t len);
std::string HexEncode(std::string_view bytes);
// HMAC-SHA256(key, message) as lowercase hex.
std::string HmacSha256Hex(std::string_view key, std::string_view message);
// Compares without leaking where the first difference is.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace tidepool
