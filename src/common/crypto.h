// Secrets and tokens (OpenSSL underneath; random ids and bytes are in random.h, without it).
#pragma once

#include <string>
#include <string_view>

#include "common/random.h"

namespace tidepool {

// HMAC-SHA256(key, message) as lowercase hex.
std::string HmacSha256Hex(std::string_view key, std::string_view message);
// Compares without leaking where the first difference is.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace tidepool
