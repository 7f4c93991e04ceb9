// A store that cannot be trusted is refused: damaged write-ahead logs and pages, a second
// opener of the same file however it is named, a commit that fails, a clean stop's checkpoint.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "store/store.h"
#include "store/wal_check.h"

namespace tidepool::store {
namespace {

namespace fs = std::filesystem;

class StoreDamageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tidepool-damage-test-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "copy");
    path_ = (dir_ / "tidepool.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static TaskRecord Task(int i) {
    TaskRecord r;
    r.seq = static_cast<uint64_t>(i);
    r.spec.add_argv("echo");
    r.spec.add_argv(std::string(600, 'x'));  // a few tasks per page
    r.status.set_id("t" + std::to_string(i));
    r.status.set_state(v1::TASK_STATE_QUEUEING);
    r.status.set_pool("local");
    return r;
  }
  // Tasks t1..tN, one commit each.
  static void Fill(Store& s, int from, int to) {
    for (int i = from; i <= to; ++i) ASSERT_TRUE(s.Apply({Mutation::PutTask(Task(i))}).ok()) << i;
  }
  // The database and its WAL as they are now, copied to copy/ (the store stays open).
  std::string Snapshot() {
    std::string to = (dir_ / "copy" / "tidepool.db").string();
    fs::copy_file(path_, to, fs::copy_options::overwrite_existing);
    fs::copy_file(path_ + "-wal", to + "-wal", fs::copy_options::overwrite_existing);
    return to;
  }
  static size_t CountTasks(Store& s) { return s.ListTasks({})->size(); }
  // What plain SQLite makes of a database (no checks of ours): the number of tasks.
  static int SqliteCount(const std::string& path) {
    sqlite3* db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* st = nullptr;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM tasks", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  }
  static void Poke(const std::string& path, uint64_t offset, const std::string& bytes) {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(StoreDamageTest, AnUndamagedWalPassesAndKeepsEveryCommit) {
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 12);
  std::string copy = Snapshot();
  auto wal = CheckWal(copy + "-wal");
  ASSERT_TRUE(wal.ok()) << wal.status().message();
  EXPECT_GT(wal->valid_frames, 12u);
  EXPECT_EQ(wal->committed_end, fs::file_size(copy + "-wal"));
  s->reset();
  auto c = OpenSqliteStore(copy);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(CountTasks(**c), 12u);
}

TEST_F(StoreDamageTest, AFrameDamagedBeforeLaterCommitsIsRefusedNamingTheWalAndOffset) {
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 12);
  std::string copy = Snapshot();
  auto before = CheckWal(copy + "-wal");
  ASSERT_TRUE(before.ok());
  const uint64_t frame = 24 + before->page_size;
  const uint64_t bad = 32 + (before->valid_frames / 2) * frame;  // a frame in the middle
  Poke(copy + "-wal", bad + 24 + 100, "\xde\xad\xbe\xef");
  // What SQLite alone does: it opens, and transactions after the bad frame are gone.
  int seen = SqliteCount(copy);
  EXPECT_LT(seen, 12) << "the damage should hide committed tasks from plain SQLite";

  auto wal = CheckWal(copy + "-wal");
  ASSERT_FALSE(wal.ok());
  EXPECT_NE(wal.status().message().find(copy + "-wal"), std::string::npos) << wal.status().message();
  EXPECT_NE(wal.status().message().find("offset " + std::to_string(bad)), std::string::npos)
      << wal.status().message();
  EXPECT_NE(wal.status().message().find("restore"), std::string::npos) << wal.status().message();
  auto opened = OpenSqliteStore(copy);
  ASSERT_FALSE(opened.ok()) << "a store whose WAL would lose committed transactions must be refused";
  EXPECT_NE(opened.status().message().find(copy + "-wal"), std::string::npos);
}

TEST_F(StoreDamageTest, ATornLastFrameIsNotDamage) {
  // A crash while the last transaction was being written: that one was never acknowledged.
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 5);
  std::string copy = Snapshot();
  fs::resize_file(copy + "-wal", fs::file_size(copy + "-wal") - 100);
  auto wal = CheckWal(copy + "-wal");
  ASSERT_TRUE(wal.ok()) << wal.status().message();
  s->reset();
  auto c = OpenSqliteStore(copy);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(CountTasks(**c), 4u);
}

TEST_F(StoreDamageTest, ADamagedLastTransactionIsTakenForATornCommitNotRefused) {
  // A power loss before the last commit's fsync can persist its commit frame and not the frames
  // before it; that transaction was never acknowledged. Damage to the transaction before it is
  // refused (the previous test damages one in the middle).
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 5);
  std::string copy = Snapshot();
  const uint64_t frame = 24 + CheckWal(copy + "-wal")->page_size;
  const uint64_t last = fs::file_size(copy + "-wal") - frame;  // the last commit frame
  Poke(copy + "-wal", last + 24 + 100, "\xde\xad");
  auto wal = CheckWal(copy + "-wal");
  ASSERT_TRUE(wal.ok()) << wal.status().message();
  EXPECT_EQ(wal->torn_from, last);
  s->reset();
  {
    auto c = OpenSqliteStore(copy);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_EQ(CountTasks(**c), 4u);
  }
  // The same damage one transaction earlier loses an acknowledged one: refused.
  s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok());
  Fill(**s, 6, 7);
  copy = Snapshot();
  auto good = CheckWal(copy + "-wal");
  ASSERT_TRUE(good.ok());
  // Walk back from the end to the commit frame before the last one.
  std::string bytes;
  {
    std::ifstream in(copy + "-wal", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t commits_seen = 0, target = 0;
  for (int64_t off = static_cast<int64_t>(bytes.size() - frame); off >= 32; off -= static_cast<int64_t>(frame)) {
    const auto* f = reinterpret_cast<const uint8_t*>(bytes.data() + off);
    if ((f[4] | f[5] | f[6] | f[7]) != 0 && ++commits_seen == 2) {
      target = static_cast<uint64_t>(off);
      break;
    }
  }
  ASSERT_GT(target, 0u);
  Poke(copy + "-wal", target + 24 + 100, "\xde\xad");
  auto refused = CheckWal(copy + "-wal");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("offset " + std::to_string(target)), std::string::npos)
      << refused.status().message();
}

TEST_F(StoreDamageTest, ADamagedWalHeaderWithFramesIsRefused) {
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 3);
  std::string copy = Snapshot();
  Poke(copy + "-wal", 20, "\x01");  // a salt: the header's checksum no longer matches
  auto wal = CheckWal(copy + "-wal");
  ASSERT_FALSE(wal.ok());
  EXPECT_NE(wal.status().message().find("header (offset 0)"), std::string::npos) << wal.status().message();
}

TEST_F(StoreDamageTest, ADamagedPageIsRefusedAtOpenAndByTheFullCheck) {
  {
    auto s = OpenSqliteStore(path_);
    ASSERT_TRUE(s.ok()) << s.status().message();
    Fill(**s, 1, 60);
    ASSERT_TRUE((*s)->Checkpoint().ok());
  }
  ASSERT_EQ(SqliteCount(path_), 60);
  const uint64_t size = fs::file_size(path_);
  ASSERT_GT(size, 8u * 4096);
  Poke(path_, size - 3 * 4096 + 8, std::string(64, '\xa5'));  // the cells of a leaf page
  auto opened = OpenSqliteStore(path_);
  ASSERT_FALSE(opened.ok()) << "quick_check must refuse a damaged page";
  const std::string m = opened.status().message();
  EXPECT_NE(m.find(path_), std::string::npos) << m;
  EXPECT_NE(m.find("damaged"), std::string::npos) << m;
  EXPECT_NE(m.find(".recover"), std::string::npos) << m;
  auto unchecked = OpenSqliteStore(path_, {.quick_check = false});
  ASSERT_TRUE(unchecked.ok()) << unchecked.status().message();
  Status full = (*unchecked)->CheckIntegrity(true);
  EXPECT_FALSE(full.ok());
  EXPECT_NE(full.message().find("integrity_check"), std::string::npos) << full.message();
  EXPECT_FALSE((*unchecked)->Health().ok()) << "a damaged store accepts no writes";
}

TEST_F(StoreDamageTest, ASecondOpenerIsRefusedHoweverItNamesTheFile) {
  auto first = OpenSqliteStore(path_);
  ASSERT_TRUE(first.ok()) << first.status().message();
  fs::create_symlink(path_, dir_ / "symlink.db");
  fs::create_hard_link(path_, dir_ / "hardlink.db");
  fs::path cwd = fs::current_path();
  fs::current_path(dir_ / "copy");
  for (std::string name : {(dir_ / "symlink.db").string(), (dir_ / "hardlink.db").string(),
                           std::string("../tidepool.db"), path_}) {
    auto second = OpenSqliteStore(name);
    ASSERT_FALSE(second.ok()) << name;
    const std::string m = second.status().message();
    EXPECT_NE(m.find(name), std::string::npos) << m;
    EXPECT_NE(m.find("pid " + std::to_string(getpid())), std::string::npos) << m;
    EXPECT_NE(m.find("in use by another server"), std::string::npos) << m;
  }
  fs::current_path(cwd);
  first->reset();
  EXPECT_TRUE(OpenSqliteStore(dir_ / "symlink.db").ok()) << "the lock goes with its holder";
}

TEST_F(StoreDamageTest, AFailedCommitLeavesTheStoreAsAcknowledgedAndRefusesLaterWrites) {
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 5);
  // The next frame cannot be written: the process may not grow a file past its current size.
  signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit low = old;
  low.rlim_cur = fs::file_size(path_ + "-wal");
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &low), 0);
  Status failed = (*s)->Apply({Mutation::PutTask(Task(6))});
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_DFL);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find(path_), std::string::npos) << failed.message();
  Status health = (*s)->Health();
  ASSERT_FALSE(health.ok());
  EXPECT_NE(health.message().find(path_), std::string::npos) << health.message();
  EXPECT_NE(health.message().find("no new work"), std::string::npos) << health.message();
  // The cause is gone, but the store stays failed: what is on file is what was acknowledged.
  EXPECT_FALSE((*s)->Apply({Mutation::PutTask(Task(7))}).ok());
  s->reset();
  auto again = OpenSqliteStore(path_);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(CountTasks(**again), 5u);
  EXPECT_TRUE((*again)->Health().ok());
}

TEST_F(StoreDamageTest, CheckpointLeavesTheDatabaseFileComplete) {
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Fill(**s, 1, 20);
  ASSERT_TRUE((*s)->Checkpoint().ok());
  EXPECT_EQ(fs::file_size(path_ + "-wal"), 0u);
  std::string only_db = (dir_ / "copy" / "tidepool.db").string();
  fs::copy_file(path_, only_db);
  EXPECT_EQ(SqliteCount(only_db), 20);
}

}  // namespace
}  // namespace tidepool::store
