#include "backends/slurm/slurm_time.h"

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

TEST(SlurmTimeLimit, ADurationBecomesWholeMinutesForSbatch) {
  EXPECT_EQ(*SlurmTimeArg("8h"), "480");
  EXPECT_EQ(*SlurmTimeArg("90s"), "2");  // rounded up: the job must not end before it was asked to
  EXPECT_EQ(*SlurmTimeArg("1:00:00"), "1:00:00");
  EXPECT_EQ(*SlurmTimeArg("30"), "30");
  EXPECT_FALSE(SlurmTimeArg("soon").ok());
  EXPECT_FALSE(SlurmTimeArg("0s").ok());
  EXPECT_NE(SlurmTimeArg("soon").status().message().find("a duration such as 8h"), std::string::npos);
}

TEST(SlurmTimeLimit, InSecondsAsSlurmReadsIt) {
  EXPECT_EQ(*SlurmTimeSeconds("30"), 1800);            // minutes
  EXPECT_EQ(*SlurmTimeSeconds("30:15"), 1815);         // minutes:seconds
  EXPECT_EQ(*SlurmTimeSeconds("1:00:00"), 3600);       // hours:minutes:seconds
  EXPECT_EQ(*SlurmTimeSeconds("2-0"), 2 * 86400);      // days-hours
  EXPECT_EQ(*SlurmTimeSeconds("1-2:03"), 86400 + 2 * 3600 + 180);
  EXPECT_EQ(*SlurmTimeSeconds("1-2:03:04"), 86400 + 2 * 3600 + 184);
  EXPECT_EQ(*SlurmTimeSeconds("8h"), 8 * 3600);
  EXPECT_FALSE(SlurmTimeSeconds("UNLIMITED").has_value());
  EXPECT_FALSE(SlurmTimeSeconds("soon").has_value());
}

}  // namespace
}  // namespace tidepool::backends
