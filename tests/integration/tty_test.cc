// vrun on a real terminal: the harness opens a pseudo-terminal, runs vrun as its session
// leader, and plays the user (typing, resizing the window).
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/process.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

class Terminal {
 public:
  // `client`: the command that runs vrun (default: the vrun binary).
  Terminal(Server& server, const std::vector<std::string>& vrun_args, unsigned short rows, unsigned short cols,
           std::vector<std::string> client = {}) {
    winsize ws{};
    ws.ws_row = rows;
    ws.ws_col = cols;
    EXPECT_EQ(openpty(&master_, &slave_, nullptr, nullptr, &ws), 0);
    fcntl(master_, F_SETFL, fcntl(master_, F_GETFL) | O_NONBLOCK);
    SpawnOptions o;
    o.argv = client.empty() ? std::vector<std::string>{BinDir() + "/vrun"} : client;
    o.argv.insert(o.argv.end(), vrun_args.begin(), vrun_args.end());
    for (const auto& kv : CurrentEnvironment()) {
      if (kv.rfind("TIDEPOOL_", 0) != 0) o.env.push_back(kv);
    }
    for (const auto& [k, v] : server.ClientEnv()) o.env.push_back(k + "=" + v);
    o.env.push_back("TERM=xterm");
    o.cwd = server.dir();
    o.tty_path = ttyname(slave_);
    o.new_session = true;
    SpawnResult r = Spawn(o);
    EXPECT_GT(r.pid, 0) << r.message;
    pid_ = r.pid;
  }
  ~Terminal() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(master_);
    close(slave_);
  }
  // Everything the terminal has shown so far.
  const std::string& Screen() {
    char buf[4096];
    ssize_t n;
    while ((n = read(master_, buf, sizeof(buf))) > 0) screen_.append(buf, static_cast<size_t>(n));
    return screen_;
  }
  bool Shows(const std::string& text) {
    return WaitFor([&] { return Screen().find(text) != std::string::npos; });
  }
  void Type(const std::string& keys) { ASSERT_EQ(write(master_, keys.data(), keys.size()), static_cast<ssize_t>(keys.size())); }
  void Resize(unsigned short rows, unsigned short cols) {
    winsize ws{};
    ws.ws_row = rows;
    ws.ws_col = cols;
    ioctl(master_, TIOCSWINSZ, &ws);  // the kernel sends SIGWINCH to vrun
  }
  int Wait() {
    int status = 0;
    bool done = WaitFor([&] {
      Screen();
      return waitpid(pid_, &status, WNOHANG) == pid_;
    }, 60s);
    EXPECT_TRUE(done);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  termios Mode() {
    termios t{};
    tcgetattr(slave_, &t);
    return t;
  }

 private:
  int master_ = -1, slave_ = -1;
  pid_t pid_ = -1;
  std::string screen_;
};

TEST(Tty, RemoteGetsAPtyWithOurWindowSizeAndFollowsResizes) {
  Server server;
  // Each of the three clients: the C vrun, the C++ fast client (what it hands --timeout to), the
  // full client over gRPC.
  const std::vector<std::vector<std::string>> clients = {
      {BinDir() + "/vrun"}, {BinDir() + "/vrun", "--timeout", "1h"}, {BinDir() + "/tidepool", "run"}};
  for (const auto& client : clients) {
    SCOPED_TRACE(client.back());
    Terminal term(server, {"sh", "-c", "stty size; trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"},
                  40, 100, client);
    ASSERT_TRUE(term.Shows("40 100")) << term.Screen();
    ASSERT_TRUE(term.Shows("ready")) << term.Screen();
    EXPECT_FALSE(term.Mode().c_lflag & ICANON);  // raw while the remote command runs
    term.Resize(50, 120);
    ASSERT_TRUE(term.Shows("50 120")) << term.Screen();
    // Ctrl-C is a keystroke: it travels to the remote terminal, whose line discipline interrupts
    // the remote foreground job.
    term.Type("\x03");
    EXPECT_EQ(term.Wait(), 130);
    EXPECT_TRUE(term.Mode().c_lflag & ICANON);  // our terminal is restored
  }
}

TEST(Tty, KeystrokesReachTheRemoteProgram) {
  Server server;
  Terminal term(server, {"sh", "-c", "read line; echo \"got:$line\""}, 24, 80);
  ASSERT_TRUE(WaitFor([&] { return server.Workers("local", {"busy"}) == 1; }));
  term.Type("hello\r");
  ASSERT_TRUE(term.Shows("got:hello")) << term.Screen();
  EXPECT_EQ(term.Wait(), 0);
}

}  // namespace
}  // namespace tidepool::testing
