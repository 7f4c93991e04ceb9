// The `hosts` of an ssh pool: each entry a string (`host`, `host:port`, `user@host:port`,
// `[v6addr]:port`) or a mapping (`host`, `port`, `user`, `identity_file`, `labels`, `slots`),
// with the block's `user`, `port` and `identity_file` as defaults.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tidepool::backends::ssh {

struct Host {
  std::string host;
  int port = 22;
  std::string user;           // "" = ssh's default (the server's user, or ~/.ssh/config)
  std::string identity_file;  // "" = ssh's default
  std::map<std::string, std::string> labels;
  int slots = 0;              // 0 = the pool's default_slots_per_agent
  // "user@host:port" as the operator would write it: for messages.
  std::string Display() const;
  // What worker names on this host start with: "<pool>-<host>[-p<port>]", [A-Za-z0-9.-] only.
  std::string NameStem(const std::string& pool) const;
};

// Every entry of `hosts`, or the first problem, naming the entry ("hosts[2]: port must be
// 1-65535"). `fields` is the whole ssh block (for its defaults).
Result<std::vector<Host>> ParseHosts(const nlohmann::json& fields);

// One string entry ("ops@gpu3:2222"); the defaults are filled in by ParseHosts.
Result<Host> ParseHostString(const std::string& entry);

}  // namespace tidepool::backends::ssh
