// The fast protocol's port against hostile or confused input: garbage, oversized and out-of-order
// frames, agent connections that lie, refused tokens. Each is refused with a clear FINISH and
// forgotten, and the other clients keep working. Shares fast_wire.h with fastpath_test.cc.
#include <gtest/gtest.h>

#include <filesystem>

#include "fast_wire.h"
#include "harness.h"
#include "tidepool/v1/agent.pb.h"

namespace tidepool::testing {
namespace {

TEST_F(FastPath, GarbageIsRefusedAndTheOtherClientsKeepWorking) {
  // A silent connection holds nothing up while it is being sniffed.
  Raw silent(server.address());
  {
    // Not our preface, not HTTP/2: gRPC gets it and closes it.
    Raw r(server.address());
    r.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    bool closed = false;
    r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
  }
  {
    // Starts like ours but is not.
    Raw r(server.address());
    r.Send("TPX9 hello");
    bool closed = false;
    r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
  }
  {
    // A frame over the limit: refused with a reason, then closed.
    Raw r(server.address());
    r.Send(std::string("TPF1") + std::string("\xff\xff\xff\xff\x01", 5) + "xx");
    bool closed = false;
    std::string reply = r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
    EXPECT_NE(FinishMessage(reply).find("over the limit"), std::string::npos) << reply;
  }
  {
    // The first frame must be the hello.
    Raw r(server.address());
    r.Send(std::string("TPF1") + Frame(2, "{}"));
    bool closed = false;
    std::string reply = r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
    EXPECT_NE(FinishMessage(reply).find("first frame must be the hello"), std::string::npos) << reply;
  }
  {
    // A malformed hello, and an unknown protocol version.
    Raw r(server.address());
    r.Send(std::string("TPF1") + Frame(1, "{not json"));
    bool closed = false;
    EXPECT_NE(FinishMessage(r.ReadToEnd(&closed)).find("malformed hello"), std::string::npos);
    Raw v(server.address());
    v.Send(std::string("TPF1") + Frame(1, "{\"v\":99}"));
    EXPECT_NE(FinishMessage(v.ReadToEnd(&closed)).find("version 99 is not supported"), std::string::npos);
  }
  {
    // A task spec that is not one.
    Raw r(server.address());
    r.Send(kHello + Frame(2, "\x0a\xff\xff\xff\xff\x0f garbage"));
    bool closed = false;
    std::string reply = r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
    EXPECT_NE(FinishMessage(reply).find("not a valid TaskSpec"), std::string::npos) << reply;
  }
  {
    // Garbage while running: refused; the task goes with its client.
    Raw r(server.address());
    // TaskSpec{argv: ["/bin/sleep", "60"], cwd: "/"} in protobuf's encoding.
    r.Send(kHello + Frame(2, std::string("\x0a\x0a/bin/sleep\x0a\x02" "60\x12\x01/")));
    ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"busy"}) == 1; }));
    r.Send(Frame(6, "{\"signal\":\"TERM\"}"));
    bool closed = false;
    std::string reply = r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
    EXPECT_NE(FinishMessage(reply).find("malformed signal"), std::string::npos) << reply;
  }
  {
    // A truncated frame, then the client goes: nothing but a closed connection.
    Raw r(server.address());
    r.Send(kHello + std::string("\x00\x00\x10\x00\x02{\"argv\"", 13));
    r.CloseWrite();
    bool closed = false;
    r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
  }
  // The port still serves both protocols.
  ProcResult list = server.Tidepool({"pool", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  ProcResult r = Client(server, "vrun", {"echo", "still-here"}, Traced({}));
  EXPECT_EQ(r.out, "still-here\n") << r.err;
  EXPECT_NE(r.err.find(kFast), std::string::npos) << r.err;
  // Only the one well-formed run ever became a task (the sleep, cancelled with its client).
  nlohmann::json tasks = server.Json({"task", "list", "--all"});
  int sleeps = 0;
  for (auto& t : tasks) {
    if (t["command"][0] == "/bin/sleep") {
      ++sleeps;
      EXPECT_NE(server.WaitTask(t["id"])["state"], "SUCCESS");
    }
  }
  EXPECT_EQ(sleeps, 1);
}

// The fast protocol's agent side (what tidepool-agent speaks): hostile or confused peers get a
// FINISH naming what was wrong, and a broken agent connection is a gone worker.
TEST(FastPathAgents, ConfusedOrHostileAgentConnectionsAreRefusedAndForgotten) {
  Server server("agent_pools:\n  - name: hand\n    default: true\n");
  ProcResult t = server.Tidepool({"pool", "join-token", "hand", "--data-dir", server.data_dir()});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const std::string agent_hello = std::string("TPF1") + Frame(1, "{\"v\":1,\"agent\":true}");
  v1::AgentMessage hello;
  hello.mutable_hello()->set_pool("hand");
  hello.mutable_hello()->set_name("raw-1");
  hello.mutable_hello()->set_token(t.out.substr(0, t.out.find('\n')));
  hello.mutable_hello()->set_slots(1);
  hello.mutable_hello()->set_instance_id("raw-instance");
  auto refused_with = [&](const std::string& bytes) {
    Raw r(server.address());
    r.Send(bytes);
    bool closed = false;
    std::string reply = r.ReadToEnd(&closed);
    EXPECT_TRUE(closed);
    return FinishMessage(reply);
  };
  EXPECT_NE(refused_with(std::string("TPF1") + Frame(1, "{\"v\":1,\"agent\":\"yes\"}")).find("malformed hello"),
            std::string::npos);
  // An agent's message on a client's connection, and a client's request on an agent's.
  EXPECT_NE(refused_with(kHello + Frame(9, hello.SerializeAsString())).find("expected a run or submit request, got agent"),
            std::string::npos);
  EXPECT_NE(refused_with(agent_hello + Frame(2, "")).find("expected the agent's hello, got run"), std::string::npos);
  // The first message must be the hello.
  v1::AgentMessage beat;
  beat.mutable_heartbeat();
  EXPECT_NE(refused_with(agent_hello + Frame(9, beat.SerializeAsString())).find("first message must be a hello"),
            std::string::npos);
  EXPECT_NE(refused_with(agent_hello + Frame(9, "\xff\xff\xff garbage")).find("first message must be a hello"),
            std::string::npos);
  // A wrong token: refused as over gRPC.
  v1::AgentMessage wrong = hello;
  wrong.mutable_hello()->set_token("nope");
  EXPECT_NE(refused_with(agent_hello + Frame(9, wrong.SerializeAsString())).find("raw-1"), std::string::npos);
  EXPECT_EQ(server.Workers("hand"), 0);

  // A good hello is welcomed (one SERVER frame with the welcome) and the worker is idle ...
  Raw r(server.address());
  r.Send(agent_hello + Frame(9, hello.SerializeAsString()));
  // "TPF1", then WELCOME {"v":1}, then SERVER <ServerMessage>.
  std::string got = r.ReadUntil([](const std::string& b) { return b.size() > 4 && Frames(b.substr(4)).size() >= 2; });
  ASSERT_GT(got.size(), 4u);
  auto frames = Frames(got.substr(4));
  ASSERT_EQ(frames.size(), 2u) << got;
  EXPECT_EQ(frames[0].first, 64) << "WELCOME";
  EXPECT_EQ(frames[1].first, 74) << "SERVER";
  v1::ServerMessage welcome;
  ASSERT_TRUE(welcome.ParseFromString(frames[1].second));
  EXPECT_EQ(welcome.welcome().worker_name(), "raw-1");
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; }));
  // ... until it sends garbage: refused, and the worker is no longer connected.
  r.Send(Frame(9, "\xff\xff\xff garbage"));
  bool closed = false;
  std::string reply = r.ReadToEnd(&closed);
  EXPECT_TRUE(closed);
  EXPECT_NE(FinishMessage(reply).find("malformed agent frame"), std::string::npos) << reply;
  EXPECT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 0; }));
}

class FastPathAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    users_ = "/tmp/tidepool-fast-users-" + std::to_string(getpid()) + ".yaml";
    WriteAll(users_, "users:\n"
                     "  - { name: alice, token: alice-token-0123456789, roles: { \"*\": submit } }\n"
                     "  - { name: bob, token: bob-token-0123456789, roles: { \"*\": view } }\n");
    server_ = std::make_unique<Server>("server:\n  auth: { users_file: " + users_ + " }\n" + DefaultConfig());
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(users_);
  }
  std::string users_;
  std::unique_ptr<Server> server_;
};

TEST_F(FastPathAuth, RefusalsAreTheFullClientsAndTokensWork) {
  for (const std::string& token : {std::string(""), std::string("not-a-user-token"), std::string("bob-token-0123456789")}) {
    std::map<std::string, std::string> env;
    if (!token.empty()) env["TIDEPOOL_TOKEN"] = token;
    for (const char* mode : {"run", "batch"}) {
      std::string fast_bin = std::string(mode) == "run" ? "vrun" : "vbatch";
      ProcResult fast = Client(*server_, fast_bin, {"true"}, env);
      ProcResult full = Client(*server_, std::string("tidepool ") + mode, {"true"}, env);
      EXPECT_EQ(fast.exit_code, 255) << fast.err;
      EXPECT_EQ(fast.exit_code, full.exit_code);
      EXPECT_EQ(fast.err, full.err) << "token '" << token << "'";
      EXPECT_EQ(fast.out, "");
    }
  }
  ProcResult none = Client(*server_, "vrun", {"true"});
  EXPECT_NE(none.err.find("needs a token"), std::string::npos) << none.err;
  ProcResult bad = Client(*server_, "vrun", {"--token", "not-a-user-token", "true"});
  EXPECT_NE(bad.err.find("the token was not accepted"), std::string::npos) << bad.err;
  ProcResult bob = Client(*server_, "vrun", {"true"}, {{"TIDEPOOL_TOKEN", "bob-token-0123456789"}});
  EXPECT_NE(bob.err.find("user bob lacks the submit role on pool local"), std::string::npos) << bob.err;
  // alice runs, over the fast path, and so do the tasks she starts (with their task token).
  ProcResult alice = Client(*server_, "vrun", {"sh", "-c", "vbatch --name child true"},
                         Traced({{"TIDEPOOL_TOKEN", "alice-token-0123456789"}}));
  EXPECT_EQ(alice.exit_code, 0) << alice.err;
  EXPECT_NE(alice.err.find(kFast), std::string::npos) << alice.err;
  EXPECT_NE(alice.out.find("/child"), std::string::npos) << alice.out;
}

}  // namespace
}  // namespace tidepool::testing
