// Slurm's --time formats, for the slurm block's `time_limit` (checked at load).
#pragma once

#include <string_view>

#include "common/status.h"

namespace tidepool::backends {

// M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED / infinite (any case).
Status CheckSlurmTimeLimit(std::string_view text);

}  // namespace tidepool::backends
