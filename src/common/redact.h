// Takes known secrets out of text that came from outside the server before it is stored, shown
// or logged: a backend's error (a command backend script's stderr) may hold an API key.
//
// Scrubbed, each occurrence replaced by kMarker:
//   - the values given with AddValue (the secret fields of the configuration);
//   - the values of environment variables whose names look secret: TOKEN, KEY, SECRET or
//     PASSWORD anywhere in the name, in any case (AddEnvironment);
//   - the server's own tokens, by their shape: tpw_, tpj_ or tpt_ followed by 16 or more hex
//     digits and underscores (worker, join and task tokens).
// Values shorter than kMinLength are not scrubbed: "1" or "true" would cut ordinary words, and
// a secret that short is not one. Matching is byte for byte; the longest value at a position wins.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tidepool {

class Redactor {
 public:
  static constexpr std::string_view kMarker = "[redacted]";
  static constexpr size_t kMinLength = 6;

  // Whether an environment variable of this name holds a secret.
  static bool SecretName(std::string_view name);

  void AddValue(std::string_view value);
  // "NAME=VALUE" entries (as CurrentEnvironment() gives them); those with secret names count.
  void AddEnvironment(const std::vector<std::string>& env);

  std::string Scrub(std::string_view text) const;

 private:
  std::vector<std::string> values_;  // longest first
};

}  // namespace tidepool
