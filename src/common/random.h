// Random bytes and ids from the kernel's CSPRNG (getrandom(2)): no OpenSSL, so that programs
// that need only these (the lean agent) do not load it.
#pragma once

#include <string>
#include <string_view>

namespace tidepool {

// n cryptographically random bytes.
std::string RandomBytes(size_t n);
// Lowercase alphanumeric id of the given length (for names and task ids).
std::string RandomId(size_t len);
std::string HexEncode(std::string_view bytes);

}  // namespace tidepool
