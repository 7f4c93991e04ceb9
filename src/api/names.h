// Names and JSON forms of the API's types, shared by the server and the CLI so both print the
// same words (tasks.md's Velda state names, pools.md's worker states).
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tidepool/v1/common.pb.h"
#include "tidepool/v1/pool.pb.h"

namespace tidepool::api {

std::string StateName(v1::TaskState s);          // SUCCESS, QUEUEING ...
std::optional<v1::TaskState> ParseState(const std::string& name);  // case-insensitive
bool IsFinal(v1::TaskState s);
std::string WorkerStateName(v1::WorkerState s);  // idle, busy ...
std::string KindName(v1::TaskKind k);            // interactive | batch

// The exit status `vrun`, `vbatch -f` and `task wait` give for a final task:
// the exit code; 128+N for a signal; 1 for FAILED_UPSTREAM/CANCELLED and other failures
// without a code.
int ExitStatusOf(const v1::Task& t);

// cli.md's JSON shapes (stable snake_case names, RFC 3339 times).
nlohmann::json TaskJson(const v1::Task& t);
nlohmann::json WorkerJson(const v1::Worker& w);
nlohmann::json PoolJson(const v1::Pool& p);

}  // namespace tidepool::api
