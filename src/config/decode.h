// Decoding: YAML text -> canonical JSON, checked against the schema (schema.h).
//
// The decoder checks everything a field's type can tell (syntax, unknown or doubled fields,
// types, enum names, negative counts, durations, ${VAR}, oneofs); rules that relate several
// fields are the builder's (build.h). It never stops at the first error.
//
// The canonical JSON has snake_case keys, `${VAR}` expanded (except kVerbatim fields), durations
// as integer milliseconds, enums as their canonical names, rates as per-second numbers, and the
// schema's defaults filled in. Fields written as null are left out (a null message is `{}`).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "config/schema.h"

namespace tidepool::config {

// Where a field was written: its key, and its value (the key again when the value is null).
struct NodePos {
  SourcePos key;
  SourcePos value;
};

// Field paths as in error messages: "agent_pools[0].auto_scaler.max_agents".
using PosIndex = std::map<std::string, NodePos>;

struct Document {
  std::string file;
  nlohmann::json root = nlohmann::json::object();
  PosIndex index;
};

// Parses `text` (one YAML document; empty is fine) and decodes it against schema::Root().
Document DecodeYaml(const std::string& text, const std::string& file, const EnvLookup& env,
                    std::vector<ConfigError>* errors);

// Dotted paths of the secret fields present in `value`, a decoded `message`.
std::vector<std::string> SecretPaths(const schema::Message& message, const nlohmann::json& value);

// "FILE:LINE:COL", or "FILE" when the line is unknown.
std::string FormatPos(const SourcePos& pos);

// "a.b", "a[2]": the path helpers used by the index.
std::string ChildPath(const std::string& parent, std::string_view field);
std::string ItemPath(const std::string& list, size_t i);

}  // namespace tidepool::config
