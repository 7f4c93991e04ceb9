// One name, one worker; names checked at the door (issue 17, items 2 and 3): backends whose
// scripts answer a name the pool already has or names that are not worker names, agents with a
// 10 MB or spaced name, and two agents with one name (cloned hosts). Real server, real agents,
// real command-backend scripts that keep a ledger of every call.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "common/fast_protocol.h"
#include "harness.h"
#include "tidepool/v1/agent.pb.h"

namespace tidepool::testing {
namespace {

// A directory for the test's scripts and ledger (named after the test: pids come round again).
std::string ScratchDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = "/tmp/tidepool-names-" + std::to_string(getpid()) + "-" + info->name();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A pool `cloud` on a command backend whose scripts are the given bash texts (each also logs its
// call to DIR/calls: "start", "stop NAME", "list").
std::string CommandPool(const std::string& dir, const std::string& start, const std::string& list,
                        const std::vector<std::string>& extra) {
  WriteAll(dir + "/start.sh", "echo start >> " + dir + "/calls\n" + start);
  WriteAll(dir + "/list.sh", "echo list >> " + dir + "/calls\n" + list);
  WriteAll(dir + "/stop.sh", "echo \"stop $1\" >> " + dir + "/calls\n");
  std::string yaml = "agent_pools:\n  - name: cloud\n    default: true\n    auto_scaler:\n"
                     "      backend:\n        command:\n"
                     "          start: \"bash " + dir + "/start.sh\"\n"
                     "          stop: \"bash " + dir + "/stop.sh ${WORKER_NAME}\"\n"
                     "          list: \"bash " + dir + "/list.sh\"\n"
                     "          timeout: \"20s\"\n";
  for (const auto& line : extra) yaml += "      " + line + "\n";
  return yaml;
}

int Calls(const std::string& dir, const std::string& prefix) {
  int n = 0;
  for (const auto& l : Lines(ReadAll(dir + "/calls"))) n += l.rfind(prefix, 0) == 0;
  return n;
}

std::vector<std::string> Events(Server& server, const std::string& pool, const std::string& kind) {
  std::vector<std::string> out;
  nlohmann::json p = server.Pool(pool);  // bound first: a range-for over a temporary's member dangles
  for (auto& e : p["events"]) {
    if (e["kind"] == kind) out.push_back(e["message"]);
  }
  return out;
}

size_t LongestLine(const std::string& text) {
  size_t longest = 0;
  for (const auto& l : Lines(text)) longest = std::max(longest, l.size());
  return longest;
}

// Lines of `text` that contain `needle`.
int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (const auto& l : Lines(text)) n += l.find(needle) != std::string::npos;
  return n;
}

std::string JoinToken(Server& server, const std::string& pool) {
  ProcResult t = server.Tidepool({"pool", "join-token", pool, "--data-dir", server.data_dir()});
  EXPECT_EQ(t.exit_code, 0) << t.err;
  return t.out.empty() ? "" : Lines(t.out)[0];
}

std::vector<std::string> AgentArgv(Server& server, const std::string& name, const std::string& token) {
  return {BinDir() + "/tidepool-agent", "--server", server.address(), "--pool", "hand", "--name", name,
          "--token", token, "--slots", "1"};
}

const char* kHandPool = "agent_pools:\n  - name: hand\n    default: true\n";

// A create that answers the name of a worker the pool already has: an error of that backend,
// counted against max_agents, backed off (before: 50 creates in 20 s with max_agents 2).
TEST(Names, CreateAnsweringANameThePoolHasIsABoundedBackendError) {
  std::string dir = ScratchDir();
  Server server(CommandPool(dir, "echo dup-1\n", "echo 'dup-1 running'\n",
                            {"max_agents: 2", "min_agents: 2", "sync_loop_interval: \"1s\"",
                             "scale_up_error_retry_delay: \"1s\""}));
  ASSERT_TRUE(WaitFor([&] { return server.Pool("cloud")["last_error"].dump().find("dup-1") != std::string::npos; }))
      << server.Pool("cloud").dump(2);
  std::string error = server.Pool("cloud")["last_error"];
  EXPECT_NE(error.find("\"dup-1\""), std::string::npos) << error;
  EXPECT_NE(error.find("already has"), std::string::npos) << error;
  // Several cooldowns and sync intervals later the backend has still been asked only max_agents times.
  std::this_thread::sleep_for(5s);
  EXPECT_LE(Calls(dir, "start"), 2) << ReadAll(dir + "/calls");
  EXPECT_EQ(Calls(dir, "stop"), 0) << "the worker holding the name was deleted: " << ReadAll(dir + "/calls");
  EXPECT_EQ(server.Workers("cloud"), 1) << server.Pool("cloud").dump(2);
  std::filesystem::remove_all(dir);
}

// A create that answers a name with a space and a list with a 10 MB name and that spaced name's
// line: refused with the reason in one line, reported once, and nothing is deleted by a guess at
// a name (before: the pool deleted a machine called "my").
TEST(Names, BadNamesFromABackendAreRefusedInOneLineAndNothingIsDeleted) {
  std::string dir = ScratchDir();
  std::string list = "head -c 10485760 /dev/zero | tr '\\0' A; echo ' running'\necho 'my machine running'\n";
  Server server(CommandPool(dir, "echo 'my machine'\n", list,
                            {"max_agents: 2", "min_agents: 1", "sync_loop_interval: \"1s\"",
                             "kill_unknown_after: \"1s\"", "scale_up_error_retry_delay: \"1s\""}));
  ASSERT_TRUE(WaitFor([&] { return !Events(server, "cloud", "list_refused").empty() && Calls(dir, "start") > 0; }))
      << server.Pool("cloud").dump(2);
  // Several syncs, each past kill_unknown_after.
  ASSERT_TRUE(WaitFor([&] { return Calls(dir, "list") >= 5; })) << ReadAll(dir + "/calls");
  EXPECT_EQ(Calls(dir, "stop"), 0) << ReadAll(dir + "/calls").substr(0, 2000);
  EXPECT_EQ(server.Workers("cloud"), 0) << server.Pool("cloud").dump(2).substr(0, 4000);
  std::vector<std::string> created = Events(server, "cloud", "allocation_error");
  ASSERT_FALSE(created.empty());
  EXPECT_NE(created[0].find("\"my machine\""), std::string::npos) << created[0];
  EXPECT_NE(created[0].find("not a worker name"), std::string::npos) << created[0];
  // Each refused entry reported once, not at every sync, in a bounded line.
  std::string listed;
  for (const auto& e : Events(server, "cloud", "list_refused")) {
    EXPECT_LT(e.size(), 1500u);
    listed += e + "\n";
  }
  EXPECT_EQ(CountOf(listed, "10485760 bytes"), 1) << listed.substr(0, 2000);
  EXPECT_LE(CountOf(listed, "\"my machine running\""), 1) << listed.substr(0, 2000);
  std::string log = server.ServerLog();
  EXPECT_LT(LongestLine(log), 2000u);
  EXPECT_EQ(CountOf(log, "10485760 bytes"), 1) << "logged once";
  std::filesystem::remove_all(dir);
}

// Speaks the agents' fast protocol by hand (no agent could pass a 10 MB name: argv and the
// environment stop at 128 KiB a string) and returns the server's answer to the hello.
struct HelloAnswer {
  bool welcomed = false;
  int code = -1;
  std::string message;
};

bool ReadExactly(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool ReadFrame(int fd, uint8_t* type, std::string* payload) {
  char header[fast::kHeaderSize];
  if (!ReadExactly(fd, header, sizeof header)) return false;
  payload->resize(fast::FrameLength(header));
  *type = fast::FrameTypeOf(header);
  return ReadExactly(fd, payload->data(), payload->size());
}

HelloAnswer RawAgentHello(const std::string& address, const v1::AgentHello& hello) {
  HelloAnswer out;
  size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return out;
  }
  auto send_all = [fd](const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      ssize_t w = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  };
  // As the agent does: the preface and hello frame, the welcome, then the AgentHello.
  std::string preface(fast::kMagic, sizeof fast::kMagic);
  fast::AppendFrame(preface, fast::kHello, R"({"v":1,"agent":true})");
  char magic[sizeof fast::kMagic];
  uint8_t type = 0;
  std::string payload;
  if (send_all(preface) && ReadExactly(fd, magic, sizeof magic) && ReadFrame(fd, &type, &payload) &&
      type == fast::kWelcome) {
    v1::AgentMessage m;
    *m.mutable_hello() = hello;
    std::string frame;
    fast::AppendFrame(frame, fast::kAgent, m.SerializeAsString());
    send_all(frame);
    if (ReadFrame(fd, &type, &payload)) {
      if (type == fast::kServer) {
        out.welcomed = true;
      } else if (type == fast::kFinish) {
        nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
        out.code = j.value("code", -1);
        out.message = j.value("message", "");
      }
    }
  }
  ::close(fd);
  return out;
}

// Agents with names that are not worker names: refused (PERMISSION_DENIED, so they stop) with the
// reason in one line, nothing of them kept (before: a 10 MB name was accepted and logged whole).
TEST(Names, AgentsWithBadNamesAreRefusedInOneLine) {
  Server server(kHandPool);
  std::string join = JoinToken(server, "hand");
  v1::AgentHello hello;
  hello.set_name(std::string(10 << 20, 'A'));
  hello.set_pool("hand");
  hello.set_token(join);
  hello.set_slots(1);
  hello.set_instance_id("raw-1");
  HelloAnswer huge = RawAgentHello(server.address(), hello);
  EXPECT_FALSE(huge.welcomed);
  EXPECT_EQ(huge.code, 7) << huge.message.substr(0, 500);  // PERMISSION_DENIED: the agent stops
  EXPECT_NE(huge.message.find("10485760 bytes"), std::string::npos) << huge.message.substr(0, 500);
  EXPECT_LT(huge.message.size(), 300u);
  EXPECT_EQ(huge.message.find('\n'), std::string::npos);
  // A real agent with a spaced name: refused, says why, and exits.
  ProcResult spaced = RunProcess(AgentArgv(server, "my box", join), {}, server.dir(), "", 60s);
  EXPECT_EQ(spaced.exit_code, 3) << spaced.err;
  EXPECT_NE(spaced.err.find("\"my box\""), std::string::npos) << spaced.err;
  EXPECT_NE(spaced.err.find("a space"), std::string::npos) << spaced.err;
  EXPECT_EQ(server.Workers("hand"), 0);
  EXPECT_LT(LongestLine(server.ServerLog()), 2000u);
}

// Two agents with one name (a cloned host): the first keeps the name and its work; the second is
// refused with a message naming the conflict and asks again rarely (before: they replaced each
// other about 2,000 times a second).
TEST(Names, SecondAgentWithALiveWorkersNameIsRefusedAndBacksOff) {
  Server server(kHandPool);
  std::string join = JoinToken(server, "hand");
  Background first(AgentArgv(server, "box", join), {}, server.dir());
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; }));
  Background second(AgentArgv(server, "box", join), {}, server.dir());
  ASSERT_TRUE(WaitFor([&] { return second.Stderr().find("already connected") != std::string::npos; }))
      << second.Stderr();
  std::this_thread::sleep_for(6s);
  // The first holds the name: a task on box runs under the first agent.
  ProcResult r = server.Vrun({"sh", "-c", "echo $PPID"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(first.pid()) + "\n");
  EXPECT_TRUE(first.Running());
  EXPECT_EQ(first.Stderr().find("connection to"), std::string::npos) << "the first lost its connection:\n"
                                                                    << first.Stderr();
  EXPECT_TRUE(second.Running()) << "a refused clone backs off and asks again; it does not stop";
  std::string refused = second.Stderr();
  EXPECT_NE(refused.find("worker box is already connected"), std::string::npos) << refused;
  // Its attempts over those seconds: a handful, not thousands.
  int attempts = CountOf(refused, "refused this agent for now");
  EXPECT_GE(attempts, 1);
  EXPECT_LE(attempts, 6) << refused;
  EXPECT_LE(CountOf(server.ServerLog(), "refused agent connection: worker box is already connected"), 6);
  EXPECT_EQ(server.Workers("hand"), 1);
}

// A one-slot worker never runs two tasks at once, even with two agents using its name.
TEST(Names, OneSlotWorkerNeverRunsTwoTasksAtOnceWithTwoAgentsOnItsName) {
  Server server(kHandPool);
  std::string join = JoinToken(server, "hand");
  std::string dir = server.dir();
  Background first(AgentArgv(server, "box", join), {}, dir);
  ASSERT_TRUE(WaitFor([&] { return server.Workers("hand", {"idle"}) == 1; }));
  // Each task holds a lock directory while it runs; one that finds it taken records an overlap.
  std::string task = "if mkdir " + dir + "/running 2>/dev/null; then sleep 1.5; rmdir " + dir +
                     "/running; else echo overlap >> " + dir + "/overlaps; fi";
  std::vector<std::string> ids;
  auto submit = [&] {
    ProcResult b = server.Vbatch({"sh", "-c", task});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    ids.push_back(Lines(b.out)[0]);
  };
  submit();
  // The first agent is running a task when a second one comes with its name (a cloned host).
  ASSERT_TRUE(WaitFor([&] { return server.Task(ids[0])["state"] == "RUNNING"; }));
  Background second(AgentArgv(server, "box", join), {}, dir);
  for (int i = 0; i < 3; ++i) submit();
  for (const auto& id : ids) {
    nlohmann::json t = server.WaitTask(id, 90s);
    EXPECT_EQ(t["state"], "SUCCESS") << t.dump(2);
    EXPECT_EQ(t["attempts"], 1) << t.dump(2);
  }
  EXPECT_EQ(ReadAll(dir + "/overlaps"), "") << "two tasks ran at once on the one-slot worker";
}

}  // namespace
}  // namespace tidepool::testing
