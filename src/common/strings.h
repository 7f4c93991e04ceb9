// Small string helpers the standard library lacks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tidepool {

std::vector<std::string> Split(std::string_view s, char sep);
std::vector<std::string> SplitWhitespace(std::string_view s);
std::string_view Trim(std::string_view s);
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
// A size: 1048576, 64KiB (or K), 1MiB (M), 2GiB (G), 1TiB (T); an error naming the text otherwise.
Result<int64_t> ParseBytes(const std::string& text);
// 1536 -> "1.5 KiB", 2 << 30 -> "2 GiB" (B, KiB ... PiB; one decimal, none when it is .0).
std::string HumanBytes(uint64_t n);

// Standard base64 (RFC 4648 section 4, with padding), as Kubernetes' Secret data and kubeconfig
// *-data fields carry bytes. Decoding ignores whitespace and refuses anything else.
std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

// Quotes an argv for display the way a shell user would type it.
std::string ShellQuote(const std::vector<std::string>& argv);

}  // namespace tidepool
