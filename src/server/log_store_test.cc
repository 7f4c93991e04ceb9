#include "server/log_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tidepool::server {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class LogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tidepool-logs-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(LogStoreTest, EachByteIsStoredOnceWhateverIsResent) {
  LogStore store(dir_.string());
  auto sink = store.Sink("t1");
  ASSERT_TRUE(sink.ok());
  auto& s = **sink;
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDOUT, 0, "hello "), 6u);
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDOUT, 6, "world"), 11u);
  // A resend of what is stored (after a reconnect) changes nothing.
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDOUT, 0, "hello "), 11u);
  // A resend overlapping the end stores only the new part.
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDOUT, 6, "world!\n"), 13u);
  // A gap is refused: the answer is what we have, so the agent resends from there.
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDOUT, 20, "lost?"), 13u);
  EXPECT_EQ(s.Write(v1::OUTPUT_STREAM_STDERR, 0, "err"), 3u);
  EXPECT_EQ(Slurp(store.StdoutPath("t1")), "hello world!\n");
  EXPECT_EQ(Slurp(store.StderrPath("t1")), "err");
}

TEST_F(LogStoreTest, ReopenedSinkContinuesAtTheFileSize) {
  {
    LogStore store(dir_.string());
    (*store.Sink("a/0"))->Write(v1::OUTPUT_STREAM_STDOUT, 0, "before restart\n");
  }
  LogStore store(dir_.string());  // as after a server restart
  auto sink = *store.Sink("a/0");
  EXPECT_EQ(sink->size(v1::OUTPUT_STREAM_STDOUT), 15u);
  EXPECT_EQ(sink->Write(v1::OUTPUT_STREAM_STDOUT, 0, "before restart\nafter\n"), 21u);
  EXPECT_EQ(Slurp(store.StdoutPath("a/0")), "before restart\nafter\n");
  // Ids with '/' map to one flat file pair.
  EXPECT_EQ(std::filesystem::path(store.StdoutPath("a/0")).parent_path(), dir_);
}

TEST_F(LogStoreTest, AStreamHasAFileOnlyFromItsFirstByte) {
  LogStore store(dir_.string());
  auto sink = *store.Sink("quiet");
  EXPECT_EQ(sink->size(v1::OUTPUT_STREAM_STDOUT), 0u);
  EXPECT_EQ(sink->Write(v1::OUTPUT_STREAM_STDOUT, 0, ""), 0u);
  EXPECT_FALSE(std::filesystem::exists(store.StdoutPath("quiet")));
  EXPECT_FALSE(std::filesystem::exists(store.StderrPath("quiet")));
  EXPECT_EQ(sink->Write(v1::OUTPUT_STREAM_STDERR, 0, "late"), 4u);
  EXPECT_EQ(Slurp(store.StderrPath("quiet")), "late");
  EXPECT_FALSE(std::filesystem::exists(store.StdoutPath("quiet")));
}

TEST_F(LogStoreTest, ListenersHearWritesAndCompletion) {
  LogStore store(dir_.string());
  auto sink = *store.Sink("t");
  std::atomic<int> calls{0};
  uint64_t id = sink->AddListener([&] { calls++; });
  sink->Write(v1::OUTPUT_STREAM_STDOUT, 0, "x");
  sink->Write(v1::OUTPUT_STREAM_STDOUT, 0, "x");  // duplicate: no news
  EXPECT_EQ(calls.load(), 1);
  sink->Complete();
  EXPECT_TRUE(sink->complete());
  EXPECT_EQ(calls.load(), 2);
  sink->RemoveListener(id);
  sink->Write(v1::OUTPUT_STREAM_STDOUT, 1, "y");
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace tidepool::server
