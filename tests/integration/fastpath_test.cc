// The fast client (src/fastclient): `vrun` and `vbatch` speak the fast protocol to the server's
// usual port, behave exactly as the full client (`tidepool run` / `tidepool batch`, which is
// also what they fall back to), and fall back for whatever they do not handle. The server's
// port serves both protocols (hostile input: fastpath_hostile_test.cc). TIDEPOOL_CLIENT_TRACE=1
// makes the client say which path ran.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <regex>
#include <thread>

#include "fast_wire.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

// Task ids differ between two runs of the same command: compare messages without them.
std::string WithoutTaskIds(const std::string& text) {
  return std::regex_replace(text, std::regex("task [A-Za-z0-9_/-]+"), "task ID");
}

// A stand-in for a server, to see what a client sends before it has any answer. Each connection
// is read until two frames have come after the "TPF1" preface (or the client closes, or 20 s
// pass: longer than the clients' 10 s wait for a welcome); then, if `refuse`, answered with a
// refusal and closed, else left without a word until the client goes.
class FakeServer {
 public:
  explicit FakeServer(bool refuse) : refuse_(refuse) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_fd_, 8), 0);
    socklen_t len = sizeof(a);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    address_ = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }
  const std::string& address() const { return address_; }
  // Closes the connection it holds open (a silent server whose connection then breaks).
  void HangUp() { hang_up_ = true; }
  // Per connection, in order: the types of the frames it sent before it had any answer.
  std::vector<std::vector<int>> Connections() {
    std::lock_guard lock(mu_);
    return connections_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string got;
      std::vector<int> types;
      auto end = std::chrono::steady_clock::now() + 20s;
      bool open = true;
      while (open && !stop_ && types.size() < 2 && std::chrono::steady_clock::now() < end) {
        pollfd c{fd, POLLIN, 0};
        if (poll(&c, 1, 50) <= 0) continue;
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) open = false;
        else got.append(buf, static_cast<size_t>(n));
        types.clear();
        if (got.size() >= 4) {
          for (auto& [type, payload] : Frames(got.substr(4))) types.push_back(type);
        }
      }
      {
        std::lock_guard lock(mu_);
        connections_.push_back(types);
      }
      if (refuse_) {
        std::string no = std::string("TPF1") + Frame(73, "{\"code\":16,\"message\":\"fake refusal\"}");
        send(fd, no.data(), no.size(), MSG_NOSIGNAL);
      }
      // Until the client closes or we hang up (a silent server says nothing at all).
      char buf[4096];
      while (open && !stop_ && !hang_up_) {
        pollfd c{fd, POLLIN, 0};
        if (poll(&c, 1, 50) > 0 && recv(fd, buf, sizeof(buf), 0) <= 0) open = false;
      }
      close(fd);
    }
  }

  const bool refuse_;
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> hang_up_{false};
  std::mutex mu_;
  std::vector<std::vector<int>> connections_;
  std::thread thread_;
};

// The fast clients there are in this build: the C ones and the C++ ones they hand over to (with
// musl-tools), else the C++ ones as vrun and vbatch. Each with its request's frame type.
std::vector<std::pair<std::string, int>> FastClients() {
  std::vector<std::pair<std::string, int>> out;
  for (auto& [bin, request] : std::vector<std::pair<std::string, int>>{
           {"vrun", 2}, {"vbatch", 3}, {"tidepool-vrun", 2}, {"tidepool-vbatch", 3}}) {
    if (std::filesystem::exists(BinDir() + "/" + bin)) out.emplace_back(bin, request);
  }
  return out;
}

std::map<std::string, std::string> FakeClientEnv(const FakeServer& fake) {
  return {{"TIDEPOOL_SERVER", fake.address()}, {"PATH", BinDir() + ":/usr/bin:/bin"}, {"HOME", "/nonexistent"}};
}

// The request travels in the hello's write: the server has it before it has said anything, so
// no round trip goes on the hello alone. Refused at the hello, a C client hands over and its C++
// client asks again, the same way; all report the refusal.
TEST(FastPathHello, TheRequestGoesWithTheHello) {
  auto clients = FastClients();
  ASSERT_GE(clients.size(), 2u);
  for (auto& [bin, request] : clients) {
    FakeServer fake(/*refuse=*/true);
    ProcResult r = RunProcess({BinDir() + "/" + bin, "true"}, FakeClientEnv(fake), "/tmp");
    EXPECT_EQ(r.exit_code, 255) << bin << ": " << r.err;
    EXPECT_NE(r.err.find("fake refusal"), std::string::npos) << bin << ": " << r.err;
    auto connections = fake.Connections();
    ASSERT_FALSE(connections.empty()) << bin;
    for (auto& types : connections) EXPECT_EQ(types, (std::vector<int>{1, request})) << bin;
  }
}

// A server that takes the connection and then says nothing may yet act on the request it was
// sent (it may be frozen: SIGSTOP, a stalled disk). The client neither hands the request over nor
// sends it again, nor gives up while the connection is open: after 10 s it tells the user, once,
// that the server has not answered yet, and waits on. Only when the connection then ends does it
// give up (255), saying the request may have been taken. One connection, one request, always.
TEST(FastPathHello, ASilentServerIsNotAskedTwice) {
  auto clients = FastClients();
  std::vector<std::unique_ptr<FakeServer>> fakes;
  std::vector<Background> running;
  // Our own directory for the clients' output: /tmp/procN.err is every test process's (a stale one
  // would hold another run's words).
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("tidepool-silent-server-" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (auto& [bin, request] : clients) {
    fakes.push_back(std::make_unique<FakeServer>(/*refuse=*/false));
    running.emplace_back(std::vector<std::string>{BinDir() + "/" + bin, "true"}, FakeClientEnv(*fakes.back()), dir);
  }
  const std::string kNote = "has not answered for 10 s; still waiting while the connection is open";
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string& bin = clients[i].first;
    ASSERT_TRUE(WaitFor([&] { return running[i].Stderr().find(kNote) != std::string::npos; }, 60s))
        << bin << ": " << running[i].Stderr();
    EXPECT_TRUE(running[i].Running()) << bin << ": gave up on an open connection";
    fakes[i]->HangUp();
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string& bin = clients[i].first;
    ProcResult r = running[i].Wait(60s);
    EXPECT_EQ(r.exit_code, 255) << bin << ": " << r.err;
    EXPECT_NE(r.err.find("ended before it answered; the request may have been taken"), std::string::npos)
        << bin << ": " << r.err;
    size_t first = r.err.find(kNote);
    EXPECT_NE(first, std::string::npos) << bin << ": " << r.err;
    EXPECT_EQ(r.err.find(kNote, first + 1), std::string::npos) << bin << ": told more than once: " << r.err;
    auto connections = fakes[i]->Connections();
    ASSERT_EQ(connections.size(), 1u) << bin;
    EXPECT_EQ(connections[0], (std::vector<int>{1, clients[i].second})) << bin;
  }
  std::filesystem::remove_all(dir);
}

// What makes sending the request early safe: the server acts on no frame behind a hello it
// refuses. The same submission is taken behind a good hello (so the refused one was not lost to
// a malformed spec).
TEST(FastPathHello, NothingBehindARefusedHelloIsTaken) {
  Server server;
  auto submit = [](const std::string& word) {
    // TaskSpec{argv: ["/bin/echo", word], cwd: "/"} in protobuf's encoding.
    return Frame(3, std::string("\x0a\x09/bin/echo\x0a") + static_cast<char>(word.size()) + word + "\x12\x01/");
  };
  bool closed = false;
  {
    Raw r(server.address());
    r.Send(std::string("TPF1") + Frame(1, "{\"v\":99}") + submit("behind-a-refusal"));
    EXPECT_NE(FinishMessage(r.ReadToEnd(&closed)).find("version 99 is not supported"), std::string::npos);
  }
  {
    Raw r(server.address());
    r.Send(std::string("TPF1") + Frame(1, "{not json") + submit("behind-a-refusal"));
    EXPECT_NE(FinishMessage(r.ReadToEnd(&closed)).find("malformed hello"), std::string::npos);
  }
  {
    Raw r(server.address());
    r.Send(kHello + submit("behind-a-welcome"));
    auto frames = Frames(r.ReadToEnd(&closed).substr(4));
    ASSERT_EQ(frames.size(), 3u);  // WELCOME, SUBMITTED, FINISH
    EXPECT_EQ(frames[1].first, 72);
  }
  std::map<std::string, int> seen;
  for (auto& t : server.Json({"task", "list", "--all"})) seen[t["command"][1].get<std::string>()]++;
  EXPECT_EQ(seen["behind-a-welcome"], 1);
  EXPECT_EQ(seen["behind-a-refusal"], 0);
}

TEST_F(FastPath, VrunAndVbatchTakeTheFastPath) {
  ProcResult r = Client(server, "vrun", {"echo", "hi"}, Traced({}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_NE(r.err.find(kFast), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(kFallback), std::string::npos) << r.err;
  ProcResult b = Client(server, "vbatch", {"--name", "fast", "-l", "k=v", "sh", "-c", "echo batch-out"}, Traced({}));
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find(kFast), std::string::npos) << b.err;
  ASSERT_EQ(Lines(b.out).size(), 1u);
  std::string id = Lines(b.out)[0];
  EXPECT_EQ(id, "fast");
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "SUCCESS");
  EXPECT_EQ(server.Tidepool({"task", "logs", id}).out, "batch-out\n");
  // Without the trace the client says nothing of the kind.
  ProcResult quiet = server.Vrun({"true"});
  EXPECT_EQ(quiet.err, "");
}

// What the C clients' tests run in: a directory with a space in its name (under the server's),
// and the client environment plus a value with spaces and quotes and a local-only variable
// (which must not travel), with the client's trace on.
std::pair<std::string, std::map<std::string, std::string>> LiteClientSetup(Server& server, const std::string& name) {
  std::string dir = server.dir() + "/" + name;
  std::filesystem::create_directories(dir);
  auto env = server.ClientEnv();
  env["TIDEPOOL_CLIENT_TRACE"] = "1";
  env["LITE_VAR"] = "value with spaces \"and quotes\"";
  env["SSH_AUTH_SOCK"] = "/local/only";
  return {dir, env};
}

// With musl-tools, `vbatch` is the C client (src/fastclient/vbatch_lite.c) for the common case:
// it must send what the C++ client sends (environment, directory, pool, name, shards), and hand
// anything else over to it (`tidepool-vbatch`), having sent nothing with an effect.
TEST_F(FastPath, VbatchInCSubmitsTheCommonCaseItselfAndHandsOverTheRest) {
  if (!std::filesystem::exists(BinDir() + "/tidepool-vbatch")) GTEST_SKIP() << "built without musl-gcc";
  auto [dir, env] = LiteClientSetup(server, "sub dir");
  ProcResult b = RunProcess({BinDir() + "/vbatch", "-P", "local", "--name=lite", "-N2", "--", "sh", "-c",
                             "echo \"$LITE_VAR|${SSH_AUTH_SOCK-unset}|$PWD|$(pwd)|$TIDEPOOL_POOL\""},
                            env, dir);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("tidepool-client: fast path (lite"), std::string::npos) << b.err;
  EXPECT_EQ(b.out, "lite\n");
  nlohmann::json group = server.WaitTask("lite");
  EXPECT_EQ(group["state"], "SUCCESS") << group.dump(2);
  for (const char* shard : {"lite/0", "lite/1"}) {
    EXPECT_EQ(server.Tidepool({"task", "logs", shard}).out,
              "value with spaces \"and quotes\"|unset|" + dir + "|" + dir + "|local\n")
        << shard;
  }
  // Options it does not handle go to the C++ client, which takes the fast path in turn.
  ProcResult labelled = RunProcess({BinDir() + "/vbatch", "-l", "k=v", "true"}, env, dir);
  EXPECT_EQ(labelled.exit_code, 0) << labelled.err;
  EXPECT_NE(labelled.err.find("lite vbatch hands over"), std::string::npos) << labelled.err;
  EXPECT_NE(labelled.err.find("tidepool-client: fast path ("), std::string::npos) << labelled.err;
  // A refusal from the server is reported as the other clients report it.
  ProcResult unknown_pool = RunProcess({BinDir() + "/vbatch", "-P", "no-such-pool", "true"}, env, dir);
  ProcResult full = RunProcess({BinDir() + "/tidepool", "batch", "-P", "no-such-pool", "true"}, server.ClientEnv(), dir);
  EXPECT_EQ(unknown_pool.exit_code, full.exit_code);
  EXPECT_NE(unknown_pool.err.find(full.err), std::string::npos) << unknown_pool.err << " vs " << full.err;
  EXPECT_NE(full.err, "");
}

// The same for `vrun` (src/fastclient/vrun_lite.c): the common case runs in C — environment,
// directory, stdin, output, exit status — and the rest goes to `tidepool-vrun`.
TEST_F(FastPath, VrunInCRunsTheCommonCaseItselfAndHandsOverTheRest) {
  if (!std::filesystem::exists(BinDir() + "/tidepool-vrun")) GTEST_SKIP() << "built without musl-gcc";
  auto [dir, env] = LiteClientSetup(server, "run dir");
  ProcResult r = RunProcess({BinDir() + "/vrun", "-P", "local", "--name=lite-run", "-q", "--", "sh", "-c",
                             "echo \"$LITE_VAR|${SSH_AUTH_SOCK-unset}|$PWD|$(pwd)|$TIDEPOOL_POOL\"; "
                             "tr a-z A-Z; echo to-stderr >&2; exit 3"},
                            env, dir, "from stdin\n");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("tidepool-client: fast path (lite"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("to-stderr\n"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "value with spaces \"and quotes\"|unset|" + dir + "|" + dir + "|local\nFROM STDIN\n");
  EXPECT_EQ(server.Json({"task", "get", "lite-run"})["state"], "FAILURE");
  // -I: the task's stdin is empty even when ours is not.
  ProcResult noinput = RunProcess({BinDir() + "/vrun", "-I", "sh", "-c", "wc -c | tr -d ' '"}, env, dir, "ignored\n");
  EXPECT_EQ(noinput.exit_code, 0) << noinput.err;
  EXPECT_EQ(noinput.out, "0\n");
  EXPECT_NE(noinput.err.find("fast path (lite"), std::string::npos) << noinput.err;
  // Options it does not handle go to the C++ client, which takes the fast path in turn.
  ProcResult with_env = RunProcess({BinDir() + "/vrun", "-e", "GREETING=hi", "sh", "-c", "echo $GREETING"}, env, dir);
  EXPECT_EQ(with_env.exit_code, 0) << with_env.err;
  EXPECT_EQ(with_env.out, "hi\n");
  EXPECT_NE(with_env.err.find("lite vrun hands over"), std::string::npos) << with_env.err;
  EXPECT_NE(with_env.err.find("tidepool-client: fast path ("), std::string::npos) << with_env.err;
  // A refusal from the server is reported as the full client reports it.
  ProcResult unknown_pool = RunProcess({BinDir() + "/vrun", "-P", "no-such-pool", "true"}, env, dir);
  ProcResult full = RunProcess({BinDir() + "/tidepool", "run", "-P", "no-such-pool", "true"}, server.ClientEnv(), dir);
  EXPECT_NE(unknown_pool.err.find("fast path (lite"), std::string::npos) << unknown_pool.err;
  EXPECT_EQ(unknown_pool.exit_code, full.exit_code);
  EXPECT_NE(unknown_pool.err.find(full.err), std::string::npos) << unknown_pool.err << " vs " << full.err;
  EXPECT_NE(full.err, "");
}

TEST_F(FastPath, SameOutputAndExitStatusAsTheFullClient) {
  // A warm worker first: the first case would otherwise wait for one, and whether its "waiting
  // for a worker" line shows depends on how long the agent takes to start (long under TSan).
  ASSERT_EQ(Client(server, "vrun", {"true"}).exit_code, 0);
  const std::vector<std::vector<std::string>> cases = {
      {"echo", "a b", "$HOME", ""},
      {"sh", "-c", "echo out; echo err >&2; exit 7"},
      {"sh", "-c", "kill -TERM $$"},
      {"sh", "-c", "kill -KILL $$"},
      {"no-such-command-anywhere"},
      {"-I", "sh", "-c", "cat; echo done"},
      {"-C", "/usr", "-e", "GREETING=hello", "-e", "PATH", "sh", "-c", "pwd; echo $GREETING $PWD"},
      {"-q", "--name", "named", "--priority", "3", "sh", "-c", "echo $TIDEPOOL_TASK_ID"},
      {"--tty", "no", "sh", "-c", "test -t 1 || echo notty"},
      {"--tty", "yes", "sh", "-c", "test -t 0 && test -t 1 && echo tty"},
      {"-P", "nope", "true"},
      {"--server", "127.0.0.1:1", "true"},
      {"--timeout", "1s", "sleep", "60"},
      {"--", "echo", "--bogus"},
      {"echo", "-n", "x"},
  };
  for (const auto& args : cases) {
    // (No stdin with a PTY: whether its echo shows depends on when the command exits.)
    std::string input = args[0] == "--tty" ? "" : "some stdin\n";
    ProcResult fast = Client(server, "vrun", args, {}, input);
    ProcResult full = Client(server, "tidepool run", args, {}, input);
    std::string what = args[0] + " " + (args.size() > 1 ? args[1] : "");
    EXPECT_EQ(fast.exit_code, full.exit_code) << what << "\nfast: " << fast.err << "\nfull: " << full.err;
    if (args[0] == "-q") {
      // The task ids differ (named, named_2) but have the same form.
      EXPECT_EQ(fast.out.substr(0, 5), full.out.substr(0, 5)) << what;
    } else {
      EXPECT_EQ(fast.out, full.out) << what;
    }
    EXPECT_EQ(WithoutTaskIds(fast.err), WithoutTaskIds(full.err)) << what;
  }
  // Stdin arrives whole and in order, in many chunks (flow control).
  std::string big;
  for (int i = 0; i < 100000; ++i) big += std::to_string(i) + "\n";
  ProcResult fast = Client(server, "vrun", {"sh", "-c", "cat | md5sum; echo err >&2"}, Traced({}), big);
  ProcResult full = Client(server, "tidepool run", {"sh", "-c", "cat | md5sum; echo err >&2"}, {}, big);
  EXPECT_NE(fast.err.find(kFast), std::string::npos) << fast.err;
  EXPECT_EQ(fast.out, full.out);
  EXPECT_EQ(fast.out, RunProcess({"/bin/sh", "-c", "md5sum"}, {}, server.dir(), big).out);
  // vbatch: one id line, exit 0; the same refusal as the full client for an unknown pool.
  ProcResult bf = Client(server, "vbatch", {"-P", "nope", "true"});
  ProcResult bg = Client(server, "tidepool batch", {"-P", "nope", "true"});
  EXPECT_EQ(bf.exit_code, 255);
  EXPECT_EQ(bf.exit_code, bg.exit_code);
  EXPECT_EQ(bf.err, bg.err);
}

TEST_F(FastPath, SignalsAreForwardedAndQueuedRunsAreWithdrawn) {
  auto env = server.ClientEnv();
  env["TIDEPOOL_CLIENT_TRACE"] = "1";
  Background b({BinDir() + "/vrun", "sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"},
               env, server.dir());
  ASSERT_TRUE(WaitFor([&] { return b.Stdout().find("ready") != std::string::npos; }));
  b.Signal(SIGTERM);
  ProcResult r = b.Wait();
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.out.find("got-term"), std::string::npos);
  EXPECT_NE(r.err.find(kFast), std::string::npos) << r.err;
}

TEST(FastPathQueue, CtrlCWhileQueuedCancelsAndExits130) {
  // A pool that can never start a worker: the run waits, and Ctrl-C withdraws it.
  Server server(OnePool("none", 0));
  auto env = server.ClientEnv();
  env["TIDEPOOL_CLIENT_TRACE"] = "1";
  Background b({BinDir() + "/vrun", "true"}, env, server.dir());
  ASSERT_TRUE(WaitFor([&] { return server.Pool("none")["queued"] == 1; }));
  b.Signal(SIGINT);
  ProcResult r = b.Wait();
  EXPECT_EQ(r.exit_code, 130);
  EXPECT_NE(r.err.find(kFast), std::string::npos) << r.err;
  ASSERT_TRUE(WaitFor([&] { return server.Pool("none")["queued"] == 0; }));
  nlohmann::json tasks = server.Json({"task", "list"});
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0]["state"], "CANCELLED");
}

TEST_F(FastPath, FallsBackForWhatItDoesNotHandle) {
  // An unknown flag: the full client's usage error.
  ProcResult unknown = Client(server, "vrun", {"--bogus", "true"}, Traced({}));
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find(kFallback), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("vrun: unknown option --bogus"), std::string::npos) << unknown.err;
  // --help is the full client's.
  ProcResult help = Client(server, "vrun", {"--help"}, Traced({}));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.err.find(kFallback), std::string::npos);
  EXPECT_NE(help.out.find("--noinput"), std::string::npos) << help.out;
  // Unusual values, an invalid tty mode, no command: the full client says what is wrong.
  ProcResult tty = Client(server, "vrun", {"--tty", "maybe", "true"}, Traced({}));
  EXPECT_EQ(tty.exit_code, 2);
  EXPECT_NE(tty.err.find("invalid tty mode: maybe"), std::string::npos) << tty.err;
  EXPECT_EQ(Client(server, "vrun", {}).exit_code, 2);
  EXPECT_EQ(Client(server, "vbatch", {}).exit_code, 2);
  // A flag the fast client does not implement (vbatch -f) works through the full client.
  ProcResult follow = Client(server, "vbatch", {"-f", "sh", "-c", "echo followed; exit 4"}, Traced({}));
  EXPECT_NE(follow.err.find(kFallback), std::string::npos) << follow.err;
  EXPECT_EQ(follow.exit_code, 4) << follow.err;
  EXPECT_NE(follow.out.find("followed"), std::string::npos) << follow.out;
  // A gRPC target that is not HOST:PORT.
  ProcResult target = Client(server, "vrun", {"--server", "dns:///" + server.address(), "echo", "via-dns"}, Traced({}));
  EXPECT_NE(target.err.find(kFallback), std::string::npos) << target.err;
  EXPECT_EQ(target.out, "via-dns\n") << target.err;
  // localhost is resolved by the fast client itself.
  std::string port = server.address().substr(server.address().rfind(':') + 1);
  ProcResult local = Client(server, "vrun", {"--server", "localhost:" + port, "echo", "via-localhost"}, Traced({}));
  EXPECT_NE(local.err.find(kFast), std::string::npos) << local.err;
  EXPECT_EQ(local.out, "via-localhost\n") << local.err;
  // Nothing ran twice.
  int echoes = 0;
  for (auto& t : server.Json({"task", "list", "--all"})) echoes += t["command"][0] == "echo";
  EXPECT_EQ(echoes, 2);
}

TEST(FastPathTls, ATlsServerIsServedByTheFullClient) {
  std::string dir = "/tmp/tidepool-fast-tls-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  ProcResult certs = RunProcess({"/bin/sh", "-c",
                                 "set -e; openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 "
                                 "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"},
                                {}, dir);
  ASSERT_EQ(certs.exit_code, 0) << certs.err;
  Server server("server:\n  tls:\n    cert: " + dir + "/cert.pem\n    key: " + dir + "/key.pem\n" + DefaultConfig(), {},
                "", {{"TIDEPOOL_TLS_CA", dir + "/cert.pem"}});
  // Configured for TLS: straight to the full client.
  ProcResult ok = Client(server, "vrun", {"--tls-ca", dir + "/cert.pem", "echo", "over-tls"}, Traced({}));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "over-tls\n");
  EXPECT_NE(ok.err.find(kFallback), std::string::npos) << ok.err;
  ProcResult batch = Client(server, "vbatch", {"true"}, Traced({{"TIDEPOOL_TLS_CA", dir + "/cert.pem"}}));
  EXPECT_EQ(batch.exit_code, 0) << batch.err;
  EXPECT_NE(batch.err.find(kFallback), std::string::npos) << batch.err;
  // Not configured for TLS: the server's TLS port refuses the fast hello, the client falls back
  // and fails as the full client does.
  ProcResult plain = Client(server, "vrun", {"true"}, Traced({}));
  EXPECT_EQ(plain.exit_code, 255);
  EXPECT_NE(plain.err.find(kFallback), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("cannot reach the server at " + server.address()), std::string::npos) << plain.err;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tidepool::testing
