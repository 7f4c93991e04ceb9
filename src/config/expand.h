// `${VAR}` and `${VAR:-default}` expansion in configuration strings.
//
// `$` not followed by `{` is literal. `${VAR:-default}` takes the default when VAR is unset or
// empty (as in a shell); `${VAR}` with VAR unset is an error naming VAR. The default is taken
// literally up to the first `}` (no nesting).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "config/config.h"

namespace tidepool::config {

// `unset_ok` names one variable whose absence expands to "" instead of being an error: a secret
// field whose provider falls back to that same variable at run time (config.md).
Result<std::string> ExpandEnv(std::string_view text, const EnvLookup& env,
                              std::string_view unset_ok = {});

// A valid variable name: [A-Za-z_][A-Za-z0-9_]*.
bool IsEnvName(std::string_view name);

}  // namespace tidepool::config
