// The configuration schema as data: one table per message, walked by the decoder (decode.h).
//
// Field names are snake_case; the decoder also accepts their lowerCamelCase form (protobuf JSON
// names), so `batch_start` = `batchStart`. Backend messages follow Velda's protos field by field.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tidepool::config::schema {

enum class Type {
  kString,
  kBool,
  kInt32,
  kInt64,
  kDouble,
  kDuration,    // stored as integer milliseconds
  kEnum,        // stored as the canonical name
  kRate,        // "2/s", "30/m", "100/h" or a number (per second); stored as per-second double
  kStringList,
  kInt32List,
  kStringMap,   // map<string, string>; keys kept as written
  kMessage,
  kMessageList,
  kMessageOrList,  // one mapping or a list of them; stored as a list
  kAny,         // free-form YAML (a Kubernetes manifest), converted to JSON as is
  kUnsupported, // a known name that Tidepool rejects with `unsupported`
};

enum Flag : unsigned {
  kNonNegative = 1u << 0,  // counts and sizes
  kSecret = 1u << 1,       // never echoed in errors; listed in BackendConfig::secret_paths
  kVerbatim = 1u << 2,     // no ${VAR} expansion: the command backend's scripts (bash expands)
};

struct EnumValue {
  std::string_view name;
  int number;                    // protobuf number; also accepted as input
  std::string_view alias_of;     // non-empty: an alternative spelling of that canonical name
};

struct Message;

struct Field {
  std::string_view name;  // snake_case
  Type type = Type::kString;
  unsigned flags = 0;
  const Message* (*message)() = nullptr;  // kMessage, kMessageList, kMessageOrList
  std::vector<EnumValue> enum_values;     // kEnum
  std::string_view oneof;                 // fields sharing a group name are mutually exclusive
  std::optional<nlohmann::json> default_value;  // stored when the field is absent
  std::string_view fallback_env;  // kSecret: the provider's variable; an unset ${it} means ""
  std::string_view unsupported;   // kUnsupported: the error message

  bool has(Flag f) const { return (flags & f) != 0; }
};

struct Message {
  std::string_view name;  // as shown in errors, e.g. "auto_scaler"
  std::vector<Field> fields;
  // A protobuf oneof used as a block, like `backend: { command: {...} }`: exactly one field.
  bool exactly_one = false;

  const Field* Find(std::string_view snake_name) const;
};

// snake_case -> lowerCamelCase ("batch_start" -> "batchStart").
std::string CamelCase(std::string_view snake);

// The whole file: `server` and `agent_pools`.
const Message* Root();
// `backend: {...}` (and `fixed.backend`).
const Message* Backend();

}  // namespace tidepool::config::schema
