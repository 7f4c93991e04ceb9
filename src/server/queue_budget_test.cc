#include "server/queue_budget.h"

#include "common/strings.h"

#include <gtest/gtest.h>

namespace tidepool::server {
namespace {

TEST(QueueBudget, PerUserCapRefusesOnlyThatUserAndNamesTheFigures) {
  QueueBudget b({.max_tasks = 100, .max_tasks_per_user = 3, .max_bytes = 0, .max_bytes_per_user = 0});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(b.Admit("alice", 1, 10).ok());
    b.Charge("alice", 10);
  }
  Status s = b.Admit("alice", 1, 10);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("user alice has 3 unfinished tasks"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("per-user cap of 3"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--max-queued-tasks-per-user"), std::string::npos) << s.message();
  EXPECT_TRUE(b.Admit("bob", 3, 30).ok());
  // A finished task makes room again.
  b.Release("alice", 10);
  EXPECT_TRUE(b.Admit("alice", 1, 10).ok());
  EXPECT_EQ(b.tasks_of("alice"), 2);
  EXPECT_EQ(b.tasks(), 2);
}

TEST(QueueBudget, ServerWideCapsCountEveryUser) {
  QueueBudget b({.max_tasks = 4, .max_tasks_per_user = 0, .max_bytes = 1000, .max_bytes_per_user = 0});
  for (int i = 0; i < 2; ++i) b.Charge("alice", 100);
  b.Charge("bob", 100);
  Status s = b.Admit("carol", 2, 10);  // 3 + 2 > 4
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("server holds 3 unfinished tasks"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("user carol"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--max-queued-tasks)"), std::string::npos) << s.message();
  EXPECT_TRUE(b.Admit("carol", 1, 10).ok());
  Status bytes = b.Admit("carol", 1, 800);  // 300 + 800 > 1000
  EXPECT_EQ(bytes.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(bytes.message().find("--max-queued-bytes)"), std::string::npos) << bytes.message();
  EXPECT_NE(bytes.message().find("300 B"), std::string::npos) << bytes.message();
}

TEST(QueueBudget, PerUserBytesCap) {
  QueueBudget b({.max_tasks = 0, .max_tasks_per_user = 0, .max_bytes = 0, .max_bytes_per_user = 2048});
  b.Charge("alice", 2000);
  Status s = b.Admit("alice", 1, 100);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("--max-queued-bytes-per-user"), std::string::npos) << s.message();
  EXPECT_TRUE(b.Admit("bob", 1, 2048).ok());
}

TEST(QueueBudget, OneTasksCommandAndEnvironmentAreBounded) {
  QueueBudget b({.max_spec_bytes = 1024});
  v1::TaskSpec spec;
  spec.add_argv("echo");
  spec.add_argv(std::string(500, 'a'));
  EXPECT_TRUE(b.CheckSpec(spec).ok());
  (*spec.mutable_env())["BIG"] = std::string(600, 'b');
  Status s = b.CheckSpec(spec);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--max-spec-bytes"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("in 1 variable)"), std::string::npos) << s.message();
}

TEST(QueueBudget, SizesParseWithBinaryUnits) {
  EXPECT_EQ(*ParseBytes("1048576"), 1048576);
  EXPECT_EQ(*ParseBytes("64KiB"), 65536);
  EXPECT_EQ(*ParseBytes("1MiB"), 1 << 20);
  EXPECT_EQ(*ParseBytes("2G"), int64_t{2} << 30);
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("1.5MiB").ok());
  EXPECT_FALSE(ParseBytes("12 parsecs").ok());
}

}  // namespace
}  // namespace tidepool::server
