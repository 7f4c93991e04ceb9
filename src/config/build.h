// Building: a decoded Document (decode.h) -> the typed structs of config.h.
//
// Applies the rules that relate fields (min <= max, thresholds, exclusive blocks, names, days,
// hours, time zones, addresses) and notes every field of a feature that is not active yet
// (features.h). Rules that span files (duplicate names, one default, one server) are the
// loader's, which is why positions of names and defaults are handed back.
#pragma once

#include <optional>
#include <vector>

#include "config/config.h"
#include "config/decode.h"

namespace tidepool::config {

struct FileConfig {
  std::optional<ServerConfig> server;
  SourcePos server_pos;              // the `server` key
  std::vector<PoolConfig> pools;
  std::vector<SourcePos> name_pos;     // per pool: its name's value
  std::vector<SourcePos> default_pos;  // per pool: its `default` value (line 0 when absent)
  std::vector<InactiveField> inactive;
};

FileConfig BuildFile(const Document& doc, std::vector<ConfigError>* errors);

}  // namespace tidepool::config
