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
  kAnyShape = 1u << 3,  // a kAny field that may also be a list or a scalar (not only a mapping)
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
// `backend: {...}` (and `fixed.backend`): one field per backend registered
// (config/backend_schemas.h), in their `order`.
const Message* Backend();

// Short constructors that keep a schema table one line per field (here and in every backend's
// folder): `using namespace schema::make;`.
namespace make {

inline Field Str(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kString, .flags = flags};
}
inline Field Bool(std::string_view n) { return {.name = n, .type = Type::kBool}; }
inline Field Int32(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kInt32, .flags = flags};
}
inline Field Int64(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kInt64, .flags = flags};
}
inline Field Double(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kDouble, .flags = flags};
}
inline Field Duration(std::string_view n) { return {.name = n, .type = Type::kDuration}; }
inline Field StrList(std::string_view n) { return {.name = n, .type = Type::kStringList}; }
inline Field StrMap(std::string_view n) { return {.name = n, .type = Type::kStringMap}; }
inline Field Msg(std::string_view n, const Message* (*m)()) {
  return {.name = n, .type = Type::kMessage, .message = m};
}
inline Field MsgList(std::string_view n, const Message* (*m)()) {
  return {.name = n, .type = Type::kMessageList, .message = m};
}
inline Field Enum(std::string_view n, std::vector<EnumValue> values) {
  return {.name = n, .type = Type::kEnum, .enum_values = std::move(values)};
}
inline Field WithDefault(Field f, nlohmann::json value) {
  f.default_value = std::move(value);
  return f;
}
inline Field InOneof(Field f, std::string_view group) {
  f.oneof = group;
  return f;
}
inline Field Secret(std::string_view n, std::string_view fallback_env = {}) {
  return {.name = n, .type = Type::kString, .flags = kSecret, .fallback_env = fallback_env};
}

}  // namespace make

}  // namespace tidepool::config::schema
