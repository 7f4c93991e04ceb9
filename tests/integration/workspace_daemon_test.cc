// The workspace daemon (src/cli/workspace_daemon.h): after the full client has brought a tree, the
// small C vrun asks the daemon, which watches the tree instead of walking it. Whatever the caller
// does to the tree between runs, the worker must see exactly the caller's tree; the daemon gone,
// the full client takes over; and nothing of the caller's reaches another user's process.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "harness.h"
#include "netns.h"
#include "ssh_hosts.h"
#include "workspace_helpers.h"

namespace tidepool::testing {
namespace {

const std::map<std::string, std::string> kTrace = {{"TIDEPOOL_CLIENT_TRACE", "1"}};

// Every path of the tree (but .git and ignored/) with its kind, mode, size or link target, then
// every file's SHA-256: run in the caller's tree and in the task's, the two must be equal.
const char* kFingerprint =
    "find . -path ./.git -prune -o -path ./ignored -prune -o \\( -type f -printf '%p f %m %s\\n' -o "
    "-type l -printf '%p l %l\\n' -o -type d -printf '%p d\\n' \\) | LC_ALL=C sort; "
    "find . -path ./.git -prune -o -path ./ignored -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

// The pids of the workspace daemons serving the tree `dir` (their command line names it).
std::vector<pid_t> DaemonsOf(const std::string& dir) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = ReadAll(e.path().string() + "/cmdline");
    if (cmd.find(std::string("workspace-daemon") + '\0') != std::string::npos && cmd.find(dir + '\0') != std::string::npos) {
      out.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return out;
}

// cli/workspace_daemon.cc's WorkspaceDaemonName for a client whose HOME is `home`, as the contract
// in its header says (FNV-1a 64 of the cache home).
std::string DaemonName(const std::string& home) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : home + "/.cache/tidepool") h = (h ^ c) * 1099511628211ull;
  char name[96];
  std::snprintf(name, sizeof(name), "tidepool-workspace-%u-%016llx", static_cast<unsigned>(::getuid()),
                static_cast<unsigned long long>(h));
  return name;
}

// Whether the daemon's name is bound (its process alone may not have got that far).
bool DaemonListens(const std::string& home) {
  return ReadAll("/proc/net/unix").find("@" + DaemonName(home) + "\n") != std::string::npos;
}

// Kills them and waits until the daemon's socket is gone: the last of a killed process's threads
// closes it, after its leader already looks dead.
void KillDaemonsOf(const std::string& dir, const std::string& home) {
  for (pid_t p : DaemonsOf(dir)) ::kill(p, SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return DaemonsOf(dir).empty() && !DaemonListens(home); }));
}

// The daemon's abstract socket address: its name after a NUL byte.
socklen_t DaemonAddress(const std::string& home, sockaddr_un* a) {
  std::string name = DaemonName(home);
  *a = {};
  a->sun_family = AF_UNIX;
  std::memcpy(a->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// Runs `body` in a child process as uid/gid 65534 (nobody); returns what it wrote to its pipe.
std::string AsNobody(const std::function<std::string()>& body, std::function<void()> meanwhile = [] {}) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(1);
    std::string said = body();
    [[maybe_unused]] ssize_t w = ::write(p[1], said.data(), said.size());
    ::_exit(0);
  }
  ::close(p[1]);
  meanwhile();
  std::string out;
  char buf[256];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status;
  ::waitpid(pid, &status, 0);
  return out;
}

class WorkspaceDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    net_ = std::make_unique<TestNet>(1);
    if (!net_->error().empty()) GTEST_SKIP() << "no network namespaces: " << net_->error();
    hosts_ = std::make_unique<SshHosts>(*net_);
    if (!hosts_->error().empty()) GTEST_SKIP() << hosts_->error();
    server_ = std::make_unique<Server>(WithMetrics(SshPool(*net_, *hosts_, hosts_->known_hosts(), 1)),
                                       std::vector<std::string>{}, net_->server_ip() + ":0");
    proj_ = caller_.path() + "/proj";
    MakeProject(proj_);
    // The first vrun in the tree: the full client brings it, and starts the daemon.
    ProcResult r = ClientIn(*server_, proj_, "vrun", {"true"}, kTrace);
    ASSERT_EQ(r.exit_code, 0) << r.err << server_->ServerLog();
    ASSERT_NE(r.err.find("hands over to the full client"), std::string::npos) << r.err;
    ASSERT_TRUE(WaitFor([&] { return !DaemonsOf(proj_).empty() && DaemonListens(server_->dir()); }))
        << "no workspace daemon started";
  }

  // The task sees exactly the caller's tree, and it was the daemon that named it.
  void ExpectSameTree(const std::string& after) {
    ProcResult here = RunProcess({"sh", "-c", kFingerprint}, {{"PATH", "/usr/bin:/bin"}}, proj_);
    ASSERT_EQ(here.exit_code, 0) << here.err;
    ProcResult there = ClientIn(*server_, proj_, "vrun", {"sh", "-c", kFingerprint}, kTrace);
    ASSERT_EQ(there.exit_code, 0) << there.err;
    EXPECT_EQ(there.out, here.out) << "after " << after;
    EXPECT_NE(there.err.find("workspace from the daemon"), std::string::npos) << after << ": " << there.err;
    EXPECT_EQ(there.err.find("full client"), std::string::npos) << after << ": " << there.err;
  }

  std::unique_ptr<TestNet> net_;
  std::unique_ptr<SshHosts> hosts_;
  std::unique_ptr<Server> server_;
  CallerDir caller_;
  std::string proj_;
};

TEST_F(WorkspaceDaemon, WhatTheCallerDoesToTheTreeBetweenRunsIsWhatTheTaskSees) {
  ExpectSameTree("nothing");

  // A file rewritten to the same size, its mtime then put back: only its content tells (a watcher
  // that trusted size and mtime, as a stat cache does, would send the old content).
  struct stat st {};
  ASSERT_EQ(::stat((proj_ + "/train.py").c_str(), &st), 0);
  WriteAll(proj_ + "/train.py", "print('hello from train.pX')\n");
  timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, (proj_ + "/train.py").c_str(), times, 0), 0);
  ExpectSameTree("a same-size rewrite with its mtime put back");

  fs::create_directories(proj_ + "/new/deep");
  WriteAll(proj_ + "/new/deep/x.bin", RandomBytes(100000, 3));
  WriteAll(proj_ + "/new/y", "y\n");
  fs::remove(proj_ + "/src/a.txt");
  ::chmod((proj_ + "/train.py").c_str(), 0755);
  fs::remove(proj_ + "/empty");
  fs::create_symlink("train.py", proj_ + "/empty");
  ExpectSameTree("a new folder, a delete, a re-mode, a file become a link");

  fs::rename(proj_ + "/new", proj_ + "/renamed");  // the watch cannot follow: a whole scan
  ExpectSameTree("a renamed folder");

  // An ignored file does not go; once the ignore rule is gone, it does.
  WriteAll(proj_ + "/ignored/new.txt", "now sent\n");
  ProcResult ignored = ClientIn(*server_, proj_, "vrun", {"sh", "-c", "ls ignored 2>/dev/null | wc -l"});
  EXPECT_EQ(ignored.out, "0\n");
  WriteAll(proj_ + "/.tidepoolignore", "");
  ProcResult sent = ClientIn(*server_, proj_, "vrun", {"cat", "ignored/new.txt"}, kTrace);
  EXPECT_EQ(sent.out, "now sent\n") << sent.err;
  EXPECT_NE(sent.err.find("workspace from the daemon"), std::string::npos) << sent.err;
}

// One changed file in a 2,000-file tree: the daemon sends the server the one entry, and the server
// sends the agent the one entry (the delta from the manifest the agent has), not the whole
// manifest (~100 bytes an entry).
TEST_F(WorkspaceDaemon, OneChangedFileReachesTheAgentAsADeltaNotAsTheWholeManifest) {
  fs::create_directories(proj_ + "/many");
  for (int i = 0; i < 2000; ++i) WriteAll(proj_ + "/many/file-" + std::to_string(i) + ".txt", std::to_string(i));
  ExpectSameTree("2,000 new files");
  const size_t whole = 2000 * 64;  // at least: each file's entry holds its 64-digit hash

  const double up = WorkspaceBytes(*server_, "received", "client");
  const double down = WorkspaceBytes(*server_, "sent", "agent");
  WriteAll(proj_ + "/many/file-1234.txt", "changed");
  ExpectSameTree("one changed file among 2,000");
  const double to_server = WorkspaceBytes(*server_, "received", "client") - up;
  const double to_agent = WorkspaceBytes(*server_, "sent", "agent") - down;
  EXPECT_GT(to_agent, 0);
  EXPECT_LT(to_agent, 8192) << "the agent was sent more than the change (the whole manifest is over " << whole
                            << " bytes)\n" << server_->ServerLog();
  EXPECT_GT(to_server, 0);
  EXPECT_LT(to_server, 8192) << "the server was sent more than the change";
}

TEST_F(WorkspaceDaemon, TheTasksChangesComeBackAndACallersEditMeanwhileIsAConflict) {
  ProcResult r = ClientIn(*server_, proj_, "vrun", {"sh", "-c", "echo made > made.txt; rm train.py; echo more >> src/a.txt"}, kTrace);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("workspace from the daemon"), std::string::npos) << r.err;
  EXPECT_EQ(ReadAll(proj_ + "/made.txt"), "made\n");
  EXPECT_FALSE(fs::exists(proj_ + "/train.py"));
  EXPECT_EQ(ReadAll(proj_ + "/src/a.txt"), "a\nmore\n");
  ExpectSameTree("the task's changes came back");  // and the daemon saw them come

  // The task writes a file the caller edits while it runs: the caller's edit stays, and vrun says so.
  const std::string gate = "/tmp/gate-" + std::to_string(::getpid());
  Background run({BinDir() + "/vrun", "sh", "-c",
                  "echo waiting; while [ ! -e " + gate + " ]; do sleep 0.05; done; echo task > run.sh; echo other > other.txt"},
                 ClientEnvIn(*server_), proj_);
  ASSERT_TRUE(WaitFor([&] { return run.Stdout() == "waiting\n"; })) << run.Stderr();
  WriteAll(proj_ + "/run.sh", "#!/bin/sh\necho edited by the caller\n");
  WriteAll(hosts_->Disk(0) + gate, "");
  ProcResult ended = run.Wait();
  EXPECT_EQ(ended.exit_code, 0) << ended.err;
  EXPECT_NE(ended.err.find("not brought back"), std::string::npos) << ended.err;
  EXPECT_NE(ended.err.find("run.sh"), std::string::npos) << ended.err;
  EXPECT_EQ(ReadAll(proj_ + "/run.sh"), "#!/bin/sh\necho edited by the caller\n");
  EXPECT_FALSE(fs::exists(proj_ + "/other.txt")) << "a stopped sync changes nothing";
}

TEST_F(WorkspaceDaemon, WithoutItsDaemonVrunFallsBackToTheFullClientWhichStartsAnother) {
  KillDaemonsOf(proj_, server_->dir());
  WriteAll(proj_ + "/train.py", "print('edited with no daemon')\n");
  ProcResult r = ClientIn(*server_, proj_, "vrun", {"cat", "train.py"}, kTrace);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "print('edited with no daemon')\n");
  EXPECT_NE(r.err.find("hands over to the full client"), std::string::npos) << r.err;
  ASSERT_TRUE(WaitFor([&] { return !DaemonsOf(proj_).empty() && DaemonListens(server_->dir()); }))
      << "the full client started no daemon";
  ExpectSameTree("a new daemon");

  // TIDEPOOL_WORKSPACE_DAEMON=0: no daemon is asked, and none is started.
  KillDaemonsOf(proj_, server_->dir());
  const std::map<std::string, std::string> off = {{"TIDEPOOL_WORKSPACE_DAEMON", "0"}, {"TIDEPOOL_CLIENT_TRACE", "1"}};
  for (int i = 0; i < 2; ++i) {
    ProcResult again = ClientIn(*server_, proj_, "vrun", {"cat", "train.py"}, off);
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(again.err.find("hands over to the full client"), std::string::npos) << again.err;
  }
  EXPECT_TRUE(DaemonsOf(proj_).empty());
}

TEST_F(WorkspaceDaemon, AnotherUserCanNeitherAskTheDaemonNorPoseAsIt) {
  sockaddr_un a;
  socklen_t len = DaemonAddress(server_->dir(), &a);
  // Another user connects and asks: the daemon hangs up without a word.
  std::string answer = AsNobody([&] {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) return std::string("no connection: ") + std::strerror(errno);
    std::string req = "{\"v\":1,\"op\":\"prepare\",\"server\":\"127.0.0.1:1\",\"token\":\"\",\"pool\":\"\",\"cwd\":\"/tmp\"}\n";
    [[maybe_unused]] ssize_t w = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string got = "answered:";
    char buf[256];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) got.append(buf, static_cast<size_t>(n));
    return got;
  });
  EXPECT_EQ(answer, "answered:") << "the daemon answered another user";

  // Another user holds the daemon's name (before ours could): vrun sends it nothing and runs
  // through the full client, whose own daemon cannot start.
  KillDaemonsOf(proj_, server_->dir());
  const std::string marker = "/tmp/squatter-" + std::to_string(::getpid());
  std::string heard = AsNobody(
      [&] {
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 8) != 0) return std::string("no bind: ") + std::strerror(errno);
        WriteAll(marker, "");
        std::string got;
        timeval tv{2, 0};
        for (int c; (c = ::accept(fd, nullptr, nullptr)) >= 0;) {
          ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
          char buf[4096];
          for (ssize_t n; (n = ::recv(c, buf, sizeof(buf), 0)) > 0;) got.append(buf, static_cast<size_t>(n));
          ::close(c);
          if (fs::exists(marker + ".done")) break;
        }
        return "heard:" + got;
      },
      [&] {
        ASSERT_TRUE(WaitFor([&] { return fs::exists(marker); }));
        WriteAll(proj_ + "/train.py", "print('past the squatter')\n");
        ProcResult r = ClientIn(*server_, proj_, "vrun", {"cat", "train.py"}, kTrace);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out, "print('past the squatter')\n");
        EXPECT_NE(r.err.find("hands over to the full client"), std::string::npos) << r.err;
        WriteAll(marker + ".done", "");
        // One more connection wakes the squatter's accept to see it is done.
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        ::connect(fd, reinterpret_cast<sockaddr*>(&a), len);
        ::close(fd);
      });
  EXPECT_EQ(heard, "heard:") << "a request reached another user's socket";
  fs::remove(marker);
  fs::remove(marker + ".done");
}

// The small vbatch asks the daemon too (for the pool's batch settings); the task sees the caller's
// tree, and what it wrote comes back with `tidepool task sync`.
TEST_F(WorkspaceDaemon, VbatchAsksItTooAndTheResultComesBackOnSync) {
  WriteAll(proj_ + "/train.py", "print('for the batch')\n");
  ProcResult here = RunProcess({"sh", "-c", kFingerprint}, {{"PATH", "/usr/bin:/bin"}}, proj_);
  ProcResult sub = ClientIn(*server_, proj_, "vbatch", {"sh", "-c", std::string(kFingerprint) + "; echo out > batch.txt"}, kTrace);
  ASSERT_EQ(sub.exit_code, 0) << sub.err;
  EXPECT_NE(sub.err.find("workspace from the daemon"), std::string::npos) << sub.err;
  EXPECT_EQ(sub.err.find("full client"), std::string::npos) << sub.err;
  auto lines = Lines(sub.out);
  ASSERT_EQ(lines.size(), 1u) << sub.out;
  EXPECT_EQ(server_->WaitTask(lines[0])["state"], "SUCCESS");
  EXPECT_EQ(server_->Tidepool({"task", "logs", lines[0]}).out, here.out);
  EXPECT_FALSE(fs::exists(proj_ + "/batch.txt"));
  ProcResult sync = ClientIn(*server_, proj_, "tidepool", {"task", "sync", lines[0]});
  EXPECT_EQ(sync.exit_code, 0) << sync.err;
  EXPECT_EQ(ReadAll(proj_ + "/batch.txt"), "out\n");
}

// Its own user's garbled requests (not JSON, a version that is not a number, members of the wrong
// type, an unknown op) are each answered "fallback" (the client then asks the full client), and
// the daemon goes on serving.
TEST_F(WorkspaceDaemon, AGarbledRequestIsAnsweredAndTheDaemonServesOn) {
  sockaddr_un a;
  socklen_t len = DaemonAddress(server_->dir(), &a);
  for (const std::string req : {"not json", "{\"v\":\"1\"}", "{\"v\":1,\"op\":\"prepare\",\"server\":7}",
                                "{\"v\":1,\"op\":\"format the disk\"}", "[1,2,3]"}) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), len), 0) << std::strerror(errno);
    std::string line = req + "\n";
    ASSERT_EQ(::send(fd, line.data(), line.size(), MSG_NOSIGNAL), static_cast<ssize_t>(line.size()));
    std::string got;
    char buf[512];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) got.append(buf, static_cast<size_t>(n));
    ::close(fd);
    EXPECT_EQ(got.rfind("{\"done\":true,\"fallback\":", 0), 0u) << req << " -> " << got;
  }
  ExpectSameTree("five garbled requests");
}

}  // namespace
}  // namespace tidepool::testing
