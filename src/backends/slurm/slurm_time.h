// Slurm's --time formats, for the slurm block's `time_limit` (checked at load).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tidepool::backends {

// M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED / infinite (any case).
Status CheckSlurmTimeLimit(std::string_view text);
// What sbatch --time gets: Slurm's own format as it is, or a duration ("8h", "90m") in whole
// minutes, rounded up; an error names both accepted forms.
Result<std::string> SlurmTimeArg(std::string_view text);
// The limit in seconds (as sbatch will get it); nullopt for UNLIMITED or an invalid text.
std::optional<int64_t> SlurmTimeSeconds(std::string_view text);

}  // namespace tidepool::backends
