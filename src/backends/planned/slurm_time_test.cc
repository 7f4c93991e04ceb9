#include "backends/planned/slurm_time.h"

#include <gtest/gtest.h>

namespace tidepool::backends {
namespace {

TEST(SlurmTimeLimit, SlurmsFormatsAreAcceptedAndOthersRefused) {
  for (const char* ok : {"30", "30:00", "1:00:00", "2-0", "2-12:00", "2-12:00:00", "UNLIMITED", " infinite "}) {
    EXPECT_TRUE(CheckSlurmTimeLimit(ok).ok()) << ok;
  }
  for (const char* bad : {"", "1h", "1:2:3:4", "x-1", "1-", "1:x"}) {
    EXPECT_FALSE(CheckSlurmTimeLimit(bad).ok()) << bad;
  }
  EXPECT_EQ(CheckSlurmTimeLimit("1:2:3:4").message(),
            "invalid Slurm time limit \"1:2:3:4\": use MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED");
}

}  // namespace
}  // namespace tidepool::backends
