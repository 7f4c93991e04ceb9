#include "common/worker_name.h"

#include <gtest/gtest.h>

namespace tidepool {
namespace {

TEST(WorkerName, DnsLikeNamesAreValid) {
  for (std::string_view ok : {"a", "box", "pool-1.example_com", "A0._-", "i-0123456789abcdef0"}) {
    EXPECT_TRUE(IsValidWorkerName(ok)) << ok << ": " << WorkerNameProblem(ok);
  }
  EXPECT_TRUE(IsValidWorkerName(std::string(253, 'x')));
}

TEST(WorkerName, EverythingElseIsRefusedWithTheReason) {
  EXPECT_EQ(WorkerNameProblem(""), "is empty");
  EXPECT_EQ(WorkerNameProblem(std::string(254, 'x')), "is 254 bytes (a worker name is at most 253)");
  EXPECT_EQ(WorkerNameProblem("my machine"), "has a space at byte 3 (a worker name is only A-Z a-z 0-9 . _ -)");
  EXPECT_NE(WorkerNameProblem("a/b").find("'/' at byte 2"), std::string::npos);
  EXPECT_NE(WorkerNameProblem("a\nb").find("a newline at byte 2"), std::string::npos);
  EXPECT_NE(WorkerNameProblem("caf\xc3\xa9").find("byte 0xc3 at byte 4"), std::string::npos);
  EXPECT_NE(WorkerNameProblem("x;rm -rf").find("';'"), std::string::npos);
}

TEST(WorkerName, QuoteForLogIsBoundedAndOneLine) {
  EXPECT_EQ(QuoteForLog("box"), "\"box\"");
  EXPECT_EQ(QuoteForLog("a\nb\"c\x01"), "\"a\\nb\\\"c\\x01\"");
  std::string huge(10 << 20, 'A');
  std::string q = QuoteForLog(huge);
  EXPECT_LT(q.size(), 100u);
  EXPECT_NE(q.find("(10485760 bytes)"), std::string::npos);
  EXPECT_EQ(q.find('\n'), std::string::npos);
  EXPECT_EQ(QuoteForLog("abcdef", 3), "\"abc\"… (6 bytes)");
}

}  // namespace
}  // namespace tidepool
