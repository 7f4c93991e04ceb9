#include "common/bloom_filter.h"

#include <gtest/gtest.h>

#include <string>

#include "common/random.h"

namespace tidepool {
namespace {

TEST(BloomFilter, NeverForgetsWhatWasAddedEvenPastItsCapacity) {
  BloomFilter f(1000);
  std::vector<std::string> added;
  for (int i = 0; i < 5000; ++i) {
    added.push_back(RandomId(6));
    f.Add(added.back());
    if (i == 998) {
      EXPECT_FALSE(f.full());
    }
    if (i == 999) {
      EXPECT_TRUE(f.full());
    }
  }
  for (const std::string& s : added) EXPECT_TRUE(f.MayContain(s)) << s;
  EXPECT_EQ(f.size(), 5000u);
}

TEST(BloomFilter, SaysAbsentForAlmostEverythingElseUpToItsCapacity) {
  BloomFilter f(20000);
  for (int i = 0; i < 20000; ++i) f.Add("task-" + std::to_string(i));
  int false_positives = 0;
  for (int i = 0; i < 100000; ++i) false_positives += f.MayContain("other-" + std::to_string(i));
  // 10 bits and 7 probes per string: about 0.8%; 2% would mean the probes are not independent.
  EXPECT_LT(false_positives, 2000);
  EXPECT_GT(false_positives, 0);  // a filter that says "absent" for everything is broken too
}

TEST(BloomFilter, AnEmptyFilterHoldsNothing) {
  BloomFilter f;
  EXPECT_FALSE(f.MayContain(""));
  EXPECT_FALSE(f.MayContain("abc"));
  f.Add("");
  EXPECT_TRUE(f.MayContain(""));
}

}  // namespace
}  // namespace tidepool
