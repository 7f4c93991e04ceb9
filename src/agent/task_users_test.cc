#include "agent/task_users.h"

#include <pwd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tidepool::agent {
namespace {

class TaskUsersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("task-users-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    map_ = (dir_ / "sub" / "uids").string();  // its folder is made on first use
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Read() {
    std::ifstream f(map_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  TaskUsers Make(const std::string& range = "5000000-5000002") {
    auto u = TaskUsers::Make(::geteuid() == 0 ? "owner" : "agent", range, map_);
    EXPECT_TRUE(u.ok()) << u.status().message();
    return std::move(u).value();
  }
  std::filesystem::path dir_;
  std::string map_;
};

TEST_F(TaskUsersTest, ModesAndRangesAreChecked) {
  EXPECT_FALSE(TaskUsers::Make("sometimes", "", map_).ok());
  for (const char* bad : {"10-20", "5000-4000", "abc", "5000", "5000-99999999999"}) {
    auto u = TaskUsers::Make("agent", bad, map_);
    ASSERT_FALSE(u.ok()) << bad;
    EXPECT_NE(u.status().message().find(std::string("--task-uids ") + bad), std::string::npos) << u.status().message();
  }
  auto agent = TaskUsers::Make("agent", "", map_);
  ASSERT_TRUE(agent.ok());
  EXPECT_EQ(agent->For("alice")->uid, -1);  // the agent's own user: nothing switched, nothing recorded
  EXPECT_FALSE(std::filesystem::exists(map_));
  if (::geteuid() != 0) {
    auto owner = TaskUsers::Make("owner", "", map_);
    ASSERT_FALSE(owner.ok());
    EXPECT_NE(owner.status().message().find("needs an agent running as root"), std::string::npos);
  }
}

TEST_F(TaskUsersTest, EachOwnerKeepsAUidOfTheirOwnAcrossAgents) {
  if (::geteuid() != 0) GTEST_SKIP() << "owner mode needs root";
  TaskUsers a = Make(), b = Make();  // two agents of one host
  EXPECT_EQ(a.For("")->uid, -1);     // no owner (auth off): the agent's user
  int64_t alice = a.For("alice")->uid;
  int64_t bob = b.For("bob")->uid;  // b sees alice's record and takes the next
  EXPECT_EQ(alice, 5000000);
  EXPECT_EQ(bob, 5000001);
  EXPECT_EQ(b.For("alice")->uid, alice);
  EXPECT_EQ(a.For("alice")->gid, alice);
  // A name with spaces and newlines is recorded safely (hex).
  EXPECT_EQ(a.For("c d\ne")->uid, 5000002);
  // The range is used up: an error naming it, and nothing recorded.
  auto full = a.For("dave");
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("no task uid left for dave in 5000000-5000002"), std::string::npos);
  EXPECT_EQ(Read(), "5000000 616c696365\n5000001 626f62\n5000002 6320640a65\n");
  // A fresh agent (a restart) reads the record.
  EXPECT_EQ(Make().For("bob")->uid, bob);
}

TEST_F(TaskUsersTest, ARealAccountsUidIsSkippedAndACutLineIsDropped) {
  if (::geteuid() != 0) GTEST_SKIP() << "owner mode needs root";
  struct passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  std::string range = std::to_string(nobody->pw_uid) + "-" + std::to_string(nobody->pw_uid + 1);
  std::filesystem::create_directories(std::filesystem::path(map_).parent_path());
  { std::ofstream(map_) << "5000 6f6c64\n7"; }  // a record, then an append cut by a crash
  TaskUsers u = Make(range);
  EXPECT_EQ(u.For("old")->uid, 5000);
  EXPECT_EQ(u.For("new")->uid, static_cast<int64_t>(nobody->pw_uid) + 1);
  EXPECT_EQ(Read(), "5000 6f6c64\n" + std::to_string(nobody->pw_uid + 1) + " 6e6577\n");
  { std::ofstream(map_) << "not a record\n"; }
  auto bad = Make(range).For("x");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(map_ + ":1: not \"UID HEX-OWNER\""), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace tidepool::agent
