#include "store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "store/write_batcher.h"

namespace tidepool::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tidepool-store-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "tidepool.db").string();
    Open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    store_.reset();
    auto s = OpenSqliteStore(path_);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(s).value();
  }
  static TaskRecord Task(const std::string& id, uint64_t seq, v1::TaskState state = v1::TASK_STATE_QUEUEING) {
    TaskRecord r;
    r.seq = seq;
    r.spec.add_argv("echo");
    r.spec.add_argv(id);
    (*r.spec.mutable_env())["SECRET"] = "s3cr3t";
    r.status.set_id(id);
    r.status.set_state(state);
    r.status.set_pool("local");
    return r;
  }

  std::filesystem::path dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, TaskRoundTripSurvivesReopen) {
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task("a", 1)), Mutation::PutTask(Task("b", 2))}).ok());
  Open();
  auto a = store_->GetTask("a");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->seq, 1u);
  EXPECT_EQ((*a)->spec.argv(1), "a");
  EXPECT_EQ((*a)->spec.env().at("SECRET"), "s3cr3t");
  EXPECT_EQ((*a)->status.state(), v1::TASK_STATE_QUEUEING);
  auto missing = store_->GetTask("zzz");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto max = store_->MaxSeq();
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(*max, 2u);
}

TEST_F(StoreTest, UpdateKeepsSpecAndSeq) {
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task("a", 7))}).ok());
  TaskRecord upd = Task("a", 7, v1::TASK_STATE_SUCCESS);
  upd.status.set_finished_at_ms(1234);
  upd.status.set_exit_code(0);
  upd.status.set_has_exit_code(true);
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(upd)}).ok());
  auto a = store_->GetTask("a");
  EXPECT_EQ((*a)->status.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*a)->status.finished_at_ms(), 1234);
  EXPECT_EQ((*a)->seq, 7u);
}

TEST_F(StoreTest, LastWriteInABatchWins) {
  TaskRecord first = Task("a", 1, v1::TASK_STATE_QUEUEING);
  TaskRecord second = Task("a", 1, v1::TASK_STATE_RUNNING);
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(first), Mutation::PutTask(second)}).ok());
  EXPECT_EQ((*store_->GetTask("a"))->status.state(), v1::TASK_STATE_RUNNING);
}

TEST_F(StoreTest, ListFiltersAndOrder) {
  TaskRecord done = Task("done", 1, v1::TASK_STATE_SUCCESS);
  done.status.set_finished_at_ms(100);
  TaskRecord old = Task("old", 2, v1::TASK_STATE_FAILURE);
  old.status.set_finished_at_ms(10);
  TaskRecord child = Task("p/0", 4, v1::TASK_STATE_RUNNING);
  child.status.set_parent("p");
  TaskRecord other = Task("x_2", 5);
  other.status.set_pool("gpu");
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task("q", 3)), Mutation::PutTask(done), Mutation::PutTask(old),
                             Mutation::PutTask(child), Mutation::PutTask(other)}).ok());
  auto unfinished = store_->ListTasks({.unfinished_only = true});
  ASSERT_EQ(unfinished->size(), 3u);
  EXPECT_EQ((*unfinished)[0].status.id(), "q");
  EXPECT_EQ((*unfinished)[1].status.id(), "p/0");
  EXPECT_EQ((*unfinished)[2].status.id(), "x_2");
  auto recent = store_->ListTasks({.finished_after_ms = 50});
  EXPECT_EQ(recent->size(), 4u);  // 3 unfinished + "done"
  auto all = store_->ListTasks({});
  EXPECT_EQ(all->size(), 5u);
  EXPECT_EQ(store_->ListTasks({.parent = "p"})->size(), 1u);
  EXPECT_EQ(store_->ListTasks({.pool = "gpu"})->size(), 1u);
  EXPECT_EQ(store_->ListTasks({.state = v1::TASK_STATE_FAILURE})->size(), 1u);
  EXPECT_EQ(store_->ListTasks({.id_prefix = "x_"})->size(), 1u);
  EXPECT_EQ(store_->ListTasks({.limit = 2})->size(), 2u);
}

TEST_F(StoreTest, PagesWalkNewestFirstFromACursor) {
  std::vector<Mutation> batch;
  for (uint64_t i = 1; i <= 25; ++i) {
    batch.push_back(Mutation::PutTask(Task("t" + std::to_string(i), i,
                                           i % 2 ? v1::TASK_STATE_QUEUEING : v1::TASK_STATE_SUCCESS)));
  }
  ASSERT_TRUE(store_->Apply(batch).ok());
  // Pages of 10, each after the last seq of the previous one: every task once, newest first.
  std::vector<uint64_t> seen;
  uint64_t before = 0;
  while (true) {
    auto page = store_->ListTasks({.newest_first = true, .before_seq = before, .limit = 10});
    ASSERT_TRUE(page.ok());
    for (const auto& r : *page) seen.push_back(r.seq);
    if (page->size() < 10) break;
    before = page->back().seq;
  }
  ASSERT_EQ(seen.size(), 25u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 25 - i);
  // A final state, or any unfinished one (whose fresher state the caller checks).
  auto successes = store_->ListTasks({.state = v1::TASK_STATE_SUCCESS});
  EXPECT_EQ(successes->size(), 12u);
  auto either = store_->ListTasks({.state = v1::TASK_STATE_SUCCESS, .state_or_unfinished = true});
  EXPECT_EQ(either->size(), 25u);
}

TEST_F(StoreTest, WorkersPutAndDelete) {
  v1::Worker w;
  w.set_name("local-abc");
  w.set_pool("local");
  w.set_state(v1::WORKER_STATE_STARTING);
  ASSERT_TRUE(store_->Apply({Mutation::PutWorker(w)}).ok());
  Open();
  auto ws = store_->ListWorkers();
  ASSERT_EQ(ws->size(), 1u);
  EXPECT_EQ((*ws)[0].worker.state(), v1::WORKER_STATE_STARTING);
  ASSERT_TRUE(store_->Apply({Mutation::DeleteWorker("local-abc")}).ok());
  EXPECT_TRUE(store_->ListWorkers()->empty());
}

TEST_F(StoreTest, BatcherGroupsConcurrentWritesAndCallsBackAfterCommit) {
  WriteBatcher batcher(store_.get());
  std::atomic<int> committed{0};
  std::atomic<int> visible{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        batcher.Submit(Mutation::PutTask(Task(id, static_cast<uint64_t>(t * 1000 + i + 1))),
                       [&, id](const Status& s) {
                         if (!s.ok()) return;
                         committed++;
                         // Durable means a fresh reader sees it already.
                         if ((*store_->GetTask(id)).has_value()) visible++;
                       });
      }
    });
  }
  for (auto& th : threads) th.join();
  batcher.Flush();
  EXPECT_EQ(committed.load(), 400);
  EXPECT_EQ(visible.load(), 400);
  EXPECT_LT(batcher.commits(), 400u);  // grouped
  EXPECT_EQ(store_->ListTasks({})->size(), 400u);
}

TEST_F(StoreTest, WhatIsSubmittedUnderAHoldIsOneCommitMadeAfterIt) {
  WriteBatcher batcher(store_.get());
  std::atomic<int> committed{0};
  uint64_t before = batcher.commits();
  {
    WriteBatcher::Hold hold(&batcher);
    batcher.Submit(Mutation::PutTask(Task("first", 1)), [&](const Status& s) { committed += s.ok(); });
    // Time for an idle writer to pick the first one up on its own (it must not).
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(committed.load(), 0);
    EXPECT_FALSE((*store_->GetTask("first")).has_value());
    batcher.Submit(Mutation::PutTask(Task("second", 2)), [&](const Status& s) { committed += s.ok(); });
  }
  batcher.Flush();
  EXPECT_EQ(committed.load(), 2);
  EXPECT_EQ(batcher.commits() - before, 1u);
}

TEST_F(StoreTest, CommitFailureIsReportedToTheCaller) {
  WriteBatcher batcher(store_.get());
  // Two different tasks with the same seq violate the UNIQUE constraint.
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task("a", 1))}).ok());
  Status result;
  batcher.Submit(Mutation::PutTask(Task("b", 1)), [&](const Status& s) { result = s; });
  batcher.Flush();
  EXPECT_FALSE(result.ok());
  EXPECT_FALSE((*store_->GetTask("b")).has_value());
  // The statements the failed commit used (kept prepared) serve the next one.
  ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task("b", 2))}).ok());
  EXPECT_TRUE((*store_->GetTask("b")).has_value());
}

TEST_F(StoreTest, ReadsThroughKeptStatementsSeeEveryCommit) {
  // GetTask, ListTasks and ForEachTaskId keep their statements prepared between calls: each call
  // must still start a fresh read, with this call's values bound (ListTasks' limit included).
  std::set<std::string> ids;
  for (int i = 1; i <= 80; ++i) {
    std::string id = "t" + std::to_string(i);
    ASSERT_TRUE(store_->Apply({Mutation::PutTask(Task(id, static_cast<uint64_t>(i)))}).ok());
    ids.insert(id);
    ASSERT_TRUE((*store_->GetTask(id)).has_value()) << id;
    ASSERT_EQ(store_->ListTasks({.limit = i + 1})->size(), static_cast<size_t>(i));
    ASSERT_EQ(store_->ListTasks({.limit = 1})->size(), 1u);
  }
  std::set<std::string> listed;
  ASSERT_TRUE(store_->ForEachTaskId([&](std::string_view id) { listed.emplace(id); }).ok());
  EXPECT_EQ(listed, ids);
  Open();
  listed.clear();
  ASSERT_TRUE(store_->ForEachTaskId([&](std::string_view id) { listed.emplace(id); }).ok());
  EXPECT_EQ(listed, ids);
}

}  // namespace
}  // namespace tidepool::store
