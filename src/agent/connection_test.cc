// Connection's sending contract: one write at a time, in Send() order, small messages written on
// the sender's thread when nothing is ahead of them. Run against a stream of our own interface
// that records who wrote what (the real transports are covered end to end by the integration
// tests, with real agents and servers).
#include "agent/connection.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tidepool::agent {
namespace {

using namespace std::chrono_literals;

// Shared between the test and the stream the connection opens.
struct Wire {
  std::mutex mu;
  std::condition_variable cv;
  struct Written {
    std::string what;  // the task id of a "started" message, or "output"
    bool direct;       // through TryWriteNow
    std::thread::id thread;
  };
  std::vector<Written> written;
  bool hold_writes = false;        // Write() waits while set (a slow peer)
  bool in_write = false;           // a Write() is waiting
  bool would_block = false;        // TryWriteNow answers kWouldBlock
  bool hold_direct = false;        // TryWriteNow waits while set
  bool in_direct = false;          // a TryWriteNow is waiting
  bool cancelled = false;
  bool welcomed = false;

  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, pred);
  }
};

std::string What(const v1::AgentMessage& m) { return m.has_started() ? m.started().task_id() : "output"; }

class RecordingStream final : public AgentStream {
 public:
  explicit RecordingStream(Wire* w) : w_(w) {}
  bool Write(const v1::AgentMessage& m) override {
    std::unique_lock lock(w_->mu);
    if (m.has_hello()) return true;
    w_->in_write = true;
    w_->cv.notify_all();
    w_->cv.wait(lock, [&] { return !w_->hold_writes || w_->cancelled; });
    w_->in_write = false;
    w_->written.push_back({What(m), false, std::this_thread::get_id()});
    w_->cv.notify_all();
    return !w_->cancelled;
  }
  TryWrite TryWriteNow(const v1::AgentMessage& m) override {
    std::unique_lock lock(w_->mu);
    w_->in_direct = true;
    w_->cv.notify_all();
    w_->cv.wait(lock, [&] { return !w_->hold_direct; });
    w_->in_direct = false;
    if (w_->would_block) return TryWrite::kWouldBlock;
    w_->written.push_back({What(m), true, std::this_thread::get_id()});
    w_->cv.notify_all();
    return TryWrite::kWritten;
  }
  bool Read(v1::ServerMessage* m) override {
    std::unique_lock lock(w_->mu);
    if (!w_->welcomed) {
      w_->welcomed = true;
      m->mutable_welcome()->set_worker_name("w");
      return true;
    }
    w_->cv.wait(lock, [&] { return w_->cancelled; });
    return false;
  }
  void Cancel() override {
    std::lock_guard lock(w_->mu);
    w_->cancelled = true;
    w_->cv.notify_all();
  }
  Status Finish() override { return Status(StatusCode::kCancelled, "cancelled"); }

 private:
  Wire* w_;
};

class RecordingTransport final : public Transport {
 public:
  explicit RecordingTransport(Wire* w) : w_(w) {}
  std::unique_ptr<AgentStream> Open() override { return std::make_unique<RecordingStream>(w_); }

 private:
  Wire* w_;
};

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Connection::Callbacks cb;
    cb.make_hello = [] { return v1::AgentHello(); };
    cb.connected = [this](uint64_t gen, const v1::Welcome&) {
      std::lock_guard lock(wire_.mu);
      gen_ = gen;
      wire_.cv.notify_all();
    };
    cb.message = [](uint64_t, v1::ServerMessage) {};
    cb.disconnected = [](uint64_t) {};
    cb.refused = [](const std::string&) {};
    conn_ = std::make_unique<Connection>("test", std::make_unique<RecordingTransport>(&wire_), cb);
    conn_->Start();
    ASSERT_TRUE(wire_.WaitFor([&] { return gen_ != 0; }));
  }
  void TearDown() override { conn_->Stop(); }

  static v1::AgentMessage Started(const std::string& id) {
    v1::AgentMessage m;
    m.mutable_started()->set_task_id(id);
    return m;
  }
  // Bigger than Connection::kMaxDirectWrite: always the writer thread's.
  static v1::AgentMessage BigOutput() {
    v1::AgentMessage m;
    m.mutable_output()->set_task_id("t");
    m.mutable_output()->set_data(std::string(Connection::kMaxDirectWrite + 1, 'x'));
    return m;
  }

  // Sends a "started" for `id` and waits until it is the one message written: how it went.
  Wire::Written SendOne(const std::string& id) {
    EXPECT_TRUE(conn_->Send(gen_, Started(id)));
    EXPECT_TRUE(wire_.WaitFor([&] { return wire_.written.size() == 1; }));
    std::lock_guard lock(wire_.mu);
    return wire_.written.empty() ? Wire::Written{} : wire_.written[0];
  }

  Wire wire_;
  uint64_t gen_ = 0;
  std::unique_ptr<Connection> conn_;
};

TEST_F(ConnectionTest, ASmallMessageWithNothingAheadIsWrittenOnTheSendersThread) {
  Wire::Written w = SendOne("a");
  EXPECT_EQ(w.what, "a");
  EXPECT_TRUE(w.direct);
  EXPECT_EQ(w.thread, std::this_thread::get_id());
}

TEST_F(ConnectionTest, NothingOvertakesAWriteInFlight) {
  {
    std::lock_guard lock(wire_.mu);
    wire_.hold_writes = true;
  }
  ASSERT_TRUE(conn_->Send(gen_, BigOutput()));
  ASSERT_TRUE(wire_.WaitFor([&] { return wire_.in_write; }));  // the writer thread is in it
  ASSERT_TRUE(conn_->Send(gen_, Started("b")));  // must wait behind it
  ASSERT_TRUE(conn_->Send(gen_, Started("c")));
  {
    std::lock_guard lock(wire_.mu);
    EXPECT_TRUE(wire_.written.empty());
    wire_.hold_writes = false;
    wire_.cv.notify_all();
  }
  ASSERT_TRUE(wire_.WaitFor([&] { return wire_.written.size() == 3; }));
  EXPECT_EQ(wire_.written[0].what, "output");
  EXPECT_EQ(wire_.written[1].what, "b");
  EXPECT_EQ(wire_.written[2].what, "c");
  EXPECT_FALSE(wire_.written[1].direct);
}

TEST_F(ConnectionTest, AMessageTheSocketCannotTakeNowGoesThroughTheWriter) {
  {
    std::lock_guard lock(wire_.mu);
    wire_.would_block = true;
  }
  Wire::Written w = SendOne("d");
  EXPECT_EQ(w.what, "d");
  EXPECT_FALSE(w.direct);
  EXPECT_NE(w.thread, std::this_thread::get_id());
}

TEST_F(ConnectionTest, NothingIsSentOnAnEndedStream) {
  conn_->Stop();
  EXPECT_FALSE(conn_->Send(gen_, Started("e")));
  std::lock_guard lock(wire_.mu);
  EXPECT_TRUE(wire_.written.empty());
}

// The stream ends (Stop) while a direct write is in it: the stream is not destroyed under it.
TEST_F(ConnectionTest, AStreamOutlivesTheDirectWriteInIt) {
  {
    std::lock_guard lock(wire_.mu);
    wire_.hold_direct = true;
  }
  std::thread sender([&] { conn_->Send(gen_, Started("f")); });
  ASSERT_TRUE(wire_.WaitFor([&] { return wire_.in_direct; }));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    conn_->Stop();
    stopped = true;
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(stopped) << "the connection ended its stream during a write";
  {
    std::lock_guard lock(wire_.mu);
    wire_.hold_direct = false;
    wire_.cv.notify_all();
  }
  sender.join();
  stopper.join();
  EXPECT_TRUE(stopped);
  std::lock_guard lock(wire_.mu);
  ASSERT_EQ(wire_.written.size(), 1u);
  EXPECT_EQ(wire_.written[0].what, "f");
}

}  // namespace
}  // namespace tidepool::agent
