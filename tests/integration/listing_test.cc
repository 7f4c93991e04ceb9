// `tidepool task list` pages (newest first, --limit/--after), no reply grows with the number of
// tasks, and what unfinished tasks hold is capped per user and server-wide (queue_budget.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "harness.h"

namespace tidepool::testing {
namespace {

// A static pool nobody joins: every task stays QUEUEING, so nothing changes under the listing.
const char* kIdlePool = "agent_pools:\n  - name: hand\n    default: true\n";

struct Page {
  std::vector<std::string> ids;
  std::string err;
};

Page ListPage(const std::function<ProcResult(const std::vector<std::string>&)>& tidepool,
              std::vector<std::string> args) {
  args.insert(args.begin(), {"task", "list", "--json"});
  ProcResult r = tidepool(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Page p;
  p.err = r.err;
  if (r.exit_code != 0) return p;
  for (const auto& t : nlohmann::json::parse(r.out)) p.ids.push_back(t["id"]);
  return p;
}

// Every page of `tidepool task list ARGS --limit N`, each --after the last id of the one before.
std::vector<std::string> WalkPages(const std::function<ProcResult(const std::vector<std::string>&)>& tidepool,
                                   const std::vector<std::string>& args, int limit, int* pages) {
  std::vector<std::string> all;
  std::string after;
  *pages = 0;
  while (true) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--limit", std::to_string(limit)});
    if (!after.empty()) a.insert(a.end(), {"--after", after});
    Page p = ListPage(tidepool, a);
    EXPECT_LE(p.ids.size(), static_cast<size_t>(limit));
    if (p.ids.empty()) {
      EXPECT_EQ(p.err, "");
      break;
    }
    ++*pages;
    all.insert(all.end(), p.ids.begin(), p.ids.end());
    // A note on stderr says when more exist, and names the cursor: the last id of the page.
    bool more = p.err.find("more tasks than the") != std::string::npos;
    if (more) {
      EXPECT_NE(p.err.find("--after " + p.ids.back()), std::string::npos) << p.err;
    }
    if (!more) break;
    after = p.ids.back();
    if (*pages > 1000) {
      ADD_FAILURE() << "the pages do not end";
      break;
    }
  }
  return all;
}

TEST(Listing, PagesWalkEveryTaskOnceNewestFirst) {
  Server server(kIdlePool);
  auto tidepool = [&](const std::vector<std::string>& a) { return server.Tidepool(a); };
  // Three submissions, 1 + (1 + 250) + 1 tasks: submission order is id order within the group.
  std::string first = Lines(server.Vbatch({"true"}).out).at(0);
  std::string group = Lines(server.Vbatch({"-N", "250", "true"}).out).at(0);
  std::string last = Lines(server.Vbatch({"true"}).out).at(0);
  std::vector<std::string> expected = {last};
  for (int i = 249; i >= 0; --i) expected.push_back(group + "/" + std::to_string(i));
  expected.push_back(group);
  expected.push_back(first);

  int pages = 0;
  std::vector<std::string> walked = WalkPages(tidepool, {}, 40, &pages);
  EXPECT_EQ(walked, expected);
  EXPECT_EQ(pages, 7);  // 253 tasks by 40
  std::set<std::string> unique(walked.begin(), walked.end());
  EXPECT_EQ(unique.size(), walked.size());

  // The default page is 100, with the note naming the cursor.
  ProcResult table = server.Tidepool({"task", "list"});
  EXPECT_EQ(Lines(table.out).size(), 101u);  // header + 100
  EXPECT_NE(table.err.find("more tasks than the 100 shown"), std::string::npos) << table.err;
  EXPECT_NE(table.err.find("--after " + expected[99]), std::string::npos) << table.err;
  ProcResult next = server.Tidepool({"task", "list", "--after", expected[99], "--limit", "1"});
  EXPECT_NE(next.out.find(expected[100]), std::string::npos) << next.out;

  // A group's shards, paged the same way.
  std::vector<std::string> shards = WalkPages(tidepool, {"--parent", group}, 64, &pages);
  EXPECT_EQ(shards, std::vector<std::string>(expected.begin() + 1, expected.begin() + 251));

  // Bad input says what was wrong.
  ProcResult bad = server.Tidepool({"task", "list", "--after", "no-such-task"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("after no-such-task: no such task"), std::string::npos) << bad.err;
  EXPECT_NE(server.Tidepool({"task", "list", "--limit", "5000"}).exit_code, 0);
}

TEST(Listing, LargeTasksListInPagesThatStayBounded) {
  Server server(kIdlePool);
  auto tidepool = [&](const std::vector<std::string>& a) { return server.Tidepool(a); };
  // 80 tasks with ~900 KB of arguments each: 72 MB of listing, more than any client takes in
  // one reply (64 MB). One argument may be at most 128 KiB (MAX_ARG_STRLEN).
  std::vector<std::string> argv = {"true"};
  for (int i = 0; i < 8; ++i) argv.push_back(std::string(112 * 1024, static_cast<char>('a' + i)));
  std::vector<std::string> ids;
  for (int i = 0; i < 80; ++i) {
    ProcResult r = server.Vbatch(argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ids.insert(ids.begin(), Lines(r.out).at(0));  // newest first
  }
  int pages = 0;
  std::vector<std::string> walked = WalkPages(tidepool, {}, 1000, &pages);
  EXPECT_EQ(walked, ids);
  EXPECT_GT(pages, 1);  // a page stops at about 4 MiB, whatever its --limit
  ProcResult table = server.Tidepool({"task", "list"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.err.find("more tasks than the"), std::string::npos) << table.err;
}

class Caps : public ::testing::Test {
 protected:
  void SetUp() override {
    users_ = "/tmp/tidepool-caps-users-" + std::to_string(getpid()) + ".yaml";
    WriteAll(users_, "users:\n"
                     "  - { name: alice, token: alice-token-0123456789, roles: { \"*\": submit } }\n"
                     "  - { name: bob, token: bob-token-0123456789, roles: { \"*\": submit } }\n"
                     "  - { name: carol, token: carol-token-0123456789, roles: { \"*\": submit } }\n");
    server_ = std::make_unique<Server>("server:\n  auth: { users_file: " + users_ + " }\n" + kIdlePool,
                                       std::vector<std::string>{"--max-queued-tasks-per-user", "30",
                                                                "--max-queued-tasks", "50", "--max-spec-bytes",
                                                                "64KiB"});
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(users_);
  }
  ProcResult As(const std::string& user, const std::vector<std::string>& args, const std::string& bin = "tidepool",
                const std::map<std::string, std::string>& extra_env = {}) {
    std::vector<std::string> argv = {BinDir() + "/" + bin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = server_->ClientEnv();
    env["TIDEPOOL_TOKEN"] = user + "-token-0123456789";
    for (const auto& [k, v] : extra_env) env[k] = v;
    return RunProcess(argv, env, server_->dir());
  }
  size_t Listed(const std::string& user) {
    ProcResult r = As(user, {"task", "list", "--json", "--limit", "1000"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out).size() : 0;
  }
  std::string users_;
  std::unique_ptr<Server> server_;
};

TEST_F(Caps, PerUserAndServerWideCapsRefuseWithTheFiguresBeforeAnythingIsStored) {
  // alice: 21 tasks, then 10 more would be 31 > 30.
  ProcResult ok = As("alice", {"-N", "20", "true"}, "vbatch");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  std::string group = Lines(ok.out).at(0);
  ProcResult over = As("alice", {"-N", "9", "true"}, "vbatch");
  EXPECT_NE(over.exit_code, 0);
  EXPECT_EQ(over.out, "");  // no id: nothing was acknowledged
  EXPECT_NE(over.err.find("user alice has 21 unfinished tasks"), std::string::npos) << over.err;
  EXPECT_NE(over.err.find("adds 10, over the per-user cap of 30"), std::string::npos) << over.err;
  EXPECT_NE(over.err.find("--max-queued-tasks-per-user"), std::string::npos) << over.err;
  EXPECT_EQ(Listed("alice"), 21u);  // and nothing was stored
  // bob is under his own cap: 20 more (41 in all) is fine.
  ProcResult bob = As("bob", {"-N", "19", "true"}, "vbatch");
  EXPECT_EQ(bob.exit_code, 0) << bob.err;
  // carol is under hers too, but the server holds 41: 10 more would be 51 > 50.
  ProcResult carol = As("carol", {"-N", "9", "true"}, "vbatch");
  EXPECT_NE(carol.exit_code, 0);
  EXPECT_NE(carol.err.find("the server holds 41 unfinished tasks"), std::string::npos) << carol.err;
  EXPECT_NE(carol.err.find("user carol"), std::string::npos) << carol.err;
  EXPECT_NE(carol.err.find("server-wide cap of 50 (server flag --max-queued-tasks)"), std::string::npos) << carol.err;
  EXPECT_EQ(Listed("carol"), 0u);
  EXPECT_EQ(As("carol", {"-N", "8", "true"}, "vbatch").exit_code, 0);  // 50: exactly the cap
  // vrun is refused the same way (the server is full).
  ProcResult run = As("carol", {"true"}, "vrun");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find("--max-queued-tasks"), std::string::npos) << run.err;
  // Finished tasks make room again: once alice's group is cancelled, she may submit.
  ASSERT_EQ(As("alice", {"task", "cancel", group}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return As("alice", {"-N", "9", "true"}, "vbatch").exit_code == 0; }));
}

TEST_F(Caps, OneTasksCommandAndEnvironmentAreBounded) {
  ProcResult big_env = As("alice", {"true"}, "vbatch", {{"HUGE", std::string(100 * 1024, 'x')}});
  EXPECT_NE(big_env.exit_code, 0);
  EXPECT_NE(big_env.err.find("a task may have at most 64.0 KiB (server flag --max-spec-bytes)"), std::string::npos)
      << big_env.err;
  ProcResult big_argv = As("alice", {"echo", std::string(100 * 1024, 'y')}, "vbatch");
  EXPECT_NE(big_argv.exit_code, 0);
  EXPECT_NE(big_argv.err.find("--max-spec-bytes"), std::string::npos) << big_argv.err;
  EXPECT_EQ(Listed("alice"), 0u);
  EXPECT_EQ(As("alice", {"echo", "small"}, "vbatch").exit_code, 0);
}

}  // namespace
}  // namespace tidepool::testing
