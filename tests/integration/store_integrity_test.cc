// A store that cannot be trusted is refused (docs/reliability.md, "A store that cannot be
// trusted"): real servers on real SQLite files that are damaged by hand, shared, or made
// unwritable, asserting on exit codes, error text and the tasks kept.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>
#include <httplib.h>

#include "harness.h"

namespace tidepool::testing {
namespace {

namespace fs = std::filesystem;

std::string Db(const Server& s) { return s.data_dir() + "/tidepool.db"; }

// `tidepool server ARGS` that is expected to refuse to start: it must exit on its own.
ProcResult ServerThatMustNotStart(const Server& s, std::vector<std::string> args) {
  std::vector<std::string> argv = {BinDir() + "/tidepool", "server", "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcResult r = RunProcess(argv, {{"PATH", BinDir() + ":/usr/bin:/bin"}}, s.dir(), "", 30s);
  EXPECT_FALSE(r.timed_out) << "the server started (it should have refused):\n" << r.err;
  return r;
}

void Poke(const std::string& path, uint64_t offset, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

int64_t SqliteInt(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

std::vector<std::string> SubmitSome(Server& server, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    ProcResult r = server.Vbatch({"true"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (!Lines(r.out).empty()) ids.push_back(Lines(r.out)[0]);
  }
  for (const auto& id : ids) EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  return ids;
}

TEST(StoreIntegrity, ASecondServerOnTheSameDatabaseIsRefusedHoweverItIsNamed) {
  Server server;
  std::vector<std::string> ids = SubmitSome(server, 1);
  const std::string pid = Lines(ReadAll(server.data_dir() + "/server.pid"))[0];
  fs::create_symlink(Db(server), server.dir() + "/symlink.db");
  fs::create_hard_link(Db(server), server.dir() + "/hardlink.db");
  // Each with its own data dir (so the data dir's own lock does not stop it).
  int n = 0;
  for (std::string db : {server.dir() + "/symlink.db", server.dir() + "/hardlink.db", std::string("data/tidepool.db")}) {
    ProcResult r = ServerThatMustNotStart(
        server, {"--data-dir", server.dir() + "/other" + std::to_string(n++), "--db", "sqlite:" + db});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(db), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("in use by another server (pid " + pid + ")"), std::string::npos) << r.err;
  }
  // The offline check is refused too while the server has the file.
  ProcResult check = server.Tidepool({"admin", "check", "--db", "sqlite:" + server.dir() + "/symlink.db"});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.err.find("in use by another server (pid " + pid + ")"), std::string::npos) << check.err;
  EXPECT_NE(check.err.find("stop that server first"), std::string::npos) << check.err;
  // The first server and its tasks are untouched.
  EXPECT_EQ(server.Task(ids[0])["state"], "SUCCESS");
  std::vector<std::string> more = SubmitSome(server, 1);
  EXPECT_EQ(more.size(), 1u);
}

TEST(StoreIntegrity, ACleanStopLeavesTheDatabaseFileAloneComplete) {
  Server server;
  std::vector<std::string> ids = SubmitSome(server, 4);
  server.Stop(SIGTERM);
  EXPECT_TRUE(!fs::exists(Db(server) + "-wal") || fs::file_size(Db(server) + "-wal") == 0);
  // A backup of tidepool.db alone.
  fs::create_directories(server.dir() + "/backup");
  fs::copy_file(Db(server), server.dir() + "/backup/tidepool.db");
  EXPECT_EQ(SqliteInt(server.dir() + "/backup/tidepool.db", "SELECT COUNT(*) FROM tasks WHERE state = 5"), 4)
      << "every finished task is in the database file";
  ProcResult check = server.Tidepool({"admin", "check", "--db", "sqlite:" + server.dir() + "/backup/tidepool.db"});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("ok"), std::string::npos) << check.out;
}

TEST(StoreIntegrity, DamageInTheWalIsRefusedAtStartNamingTheFileAndOffset) {
  Server server;
  std::vector<std::string> ids = SubmitSome(server, 6);
  server.Kill();  // the log is not checkpointed: the acknowledged tasks are in the WAL
  const std::string wal = Db(server) + "-wal";
  std::string head = ReadAll(wal).substr(0, 32);
  ASSERT_EQ(head.size(), 32u);
  const uint64_t page = (uint64_t{static_cast<uint8_t>(head[8])} << 24) | (uint64_t{static_cast<uint8_t>(head[9])} << 16) |
                        (uint64_t{static_cast<uint8_t>(head[10])} << 8) | static_cast<uint8_t>(head[11]);
  const uint64_t frames = (fs::file_size(wal) - 32) / (24 + page);
  ASSERT_GT(frames, 10u);
  const uint64_t bad = 32 + (frames / 2) * (24 + page);
  Poke(wal, bad + 24 + 16, "\x5a\x5a\x5a\x5a");
  ProcResult r = ServerThatMustNotStart(server, {"--data-dir", server.data_dir(), "--config", server.dir() + "/tidepool.yaml"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(wal), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("offset " + std::to_string(bad)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("backup"), std::string::npos) << r.err;
  ProcResult check = server.Tidepool({"admin", "check", "--data-dir", server.data_dir()});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.err.find("offset " + std::to_string(bad)), std::string::npos) << check.err;
  // Nothing was replayed, checkpointed or truncated: the WAL is as it was for whoever recovers it.
  EXPECT_EQ(ReadAll(wal).substr(bad + 24 + 16, 4), "\x5a\x5a\x5a\x5a");
}

TEST(StoreIntegrity, ADamagedPageIsRefusedAtStartAndByAdminCheck) {
  Server server;
  SubmitSome(server, 2);
  server.Stop(SIGTERM);
  // The index of finished tasks: nothing reads it at start, only `task list`.
  const int64_t root = SqliteInt(Db(server), "SELECT rootpage FROM sqlite_master WHERE name = 'tasks_finished'");
  const int64_t page = SqliteInt(Db(server), "PRAGMA page_size");
  ASSERT_GT(root, 1);
  Poke(Db(server), static_cast<uint64_t>((root - 1) * page), std::string(16, '\x7f'));
  ProcResult r = ServerThatMustNotStart(server, {"--data-dir", server.data_dir(), "--config", server.dir() + "/tidepool.yaml"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(Db(server)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("damaged"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(".recover"), std::string::npos) << r.err;
  ProcResult check = server.Tidepool({"admin", "check", "--data-dir", server.data_dir()});
  EXPECT_EQ(check.exit_code, 1) << check.out;
  EXPECT_NE(check.err.find("integrity_check"), std::string::npos) << check.err;
}

TEST(StoreIntegrity, AnUnusableDataDirOrStorePathNamesTheFileTheReasonAndWhatToDo) {
  Server server;
  WriteAll(server.dir() + "/a-file", "not a directory\n");
  ProcResult r = ServerThatMustNotStart(server, {"--data-dir", server.dir() + "/a-file/data"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(server.dir() + "/a-file/data"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Not a directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--data-dir"), std::string::npos) << r.err;
  const std::string db = server.dir() + "/missing/tidepool.db";
  r = ServerThatMustNotStart(server, {"--data-dir", server.dir() + "/other", "--db", "sqlite:" + db});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(db), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("directory exists"), std::string::npos) << r.err;
}

TEST(StoreIntegrity, AStoreThatCannotBeWrittenTakesNoNewWorkAndSaysWhy) {
  Server server("server:\n  metrics_listen: \"127.0.0.1:0\"\n" + DefaultConfig());
  std::vector<std::string> ids = SubmitSome(server, 2);
  const std::string pid = Lines(ReadAll(server.data_dir() + "/server.pid"))[0];
  const std::string wal = Db(server) + "-wal";
  httplib::Client http("http://" + Lines(ReadAll(server.data_dir() + "/metrics.addr"))[0]);
  ASSERT_EQ(http.Get("/healthz")->status, 200);
  // The server's files may not grow past the WAL's size now (the soft limit, which may be raised
  // again): the next commit fails (EFBIG).
  ProcResult lim = RunProcess({"prlimit", "--pid", pid, "--fsize=" + std::to_string(fs::file_size(wal)) + ":"}, {}, server.dir());
  ASSERT_EQ(lim.exit_code, 0) << lim.err;
  ProcResult refused = server.Vbatch({"true"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find(Db(server)), std::string::npos) << refused.err;
  // The cause goes away, but the store stays refused until a restart: it holds exactly what
  // was acknowledged, and says so.
  lim = RunProcess({"prlimit", "--pid", pid, "--fsize=unlimited:"}, {}, server.dir());
  ASSERT_EQ(lim.exit_code, 0) << lim.err;
  refused = server.Vbatch({"true"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find(Db(server)), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("no new work"), std::string::npos) << refused.err;
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_NE(health->body.find(Db(server)), std::string::npos) << health->body;
  EXPECT_EQ(server.Task(ids[0])["state"], "SUCCESS") << "reads still work";
  server.Stop(SIGTERM);
  server.Start();
  for (const auto& id : ids) EXPECT_EQ(server.Task(id)["state"], "SUCCESS");
  EXPECT_EQ(SubmitSome(server, 1).size(), 1u);
}

}  // namespace
}  // namespace tidepool::testing
