// "Nothing lost" (pools.md): a stopped server is stopped, and a flooded list is no delete storm.
//
// The command backend runs this test's scripts; each appends to files in the test's directory,
// so the assertions are on the backend's own record of the calls it got.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.h"

namespace tidepool::testing {
namespace {

namespace fs = std::filesystem;

// A directory of scripts for the command backend, outside the server's (it must exist first).
class Scripts {
 public:
  Scripts() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = "/tmp/tidepool-shutdown-" + std::to_string(getpid()) + "-" + info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~Scripts() {
    if (!::testing::Test::HasFailure()) fs::remove_all(dir_);
  }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void Write(const std::string& name, const std::string& body) const { WriteAll(path(name), body); }
  void Touch(const std::string& name) const { WriteAll(path(name), ""); }
  void Remove(const std::string& name) const { fs::remove(path(name)); }
  bool Exists(const std::string& name) const { return fs::exists(path(name)); }
  std::vector<std::string> Read(const std::string& name) const { return Lines(ReadAll(path(name))); }

  // One pool `p` on these scripts (create.sh, delete.sh NAME, list.sh).
  std::string Config(const std::vector<std::string>& extra) const {
    std::string yaml = "agent_pools:\n  - name: p\n    default: true\n    auto_scaler:\n      backend:\n        command:\n";
    yaml += "          start: \"bash " + path("create.sh") + "\"\n";
    yaml += "          stop: \"bash " + path("delete.sh") + " $1\"\n";
    yaml += "          list: \"bash " + path("list.sh") + "\"\n";
    yaml += "          timeout: \"10m\"\n";
    for (const auto& line : extra) yaml += "      " + line + "\n";
    return yaml;
  }

 private:
  std::string dir_;
};

bool ProcessGone(pid_t pid) {
  std::string stat = ReadAll("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return true;
  auto paren = stat.rfind(") ");
  return paren != std::string::npos && stat[paren + 2] == 'Z';
}

int CountLines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (const auto& line : Lines(text)) n += line.find(needle) != std::string::npos;
  return n;
}

// SIGTERM while a create hangs, two deletes hang and more deletes wait: the server exits, every
// script it started is gone, none starts after it has stopped, nothing is logged after "stopped";
// and the next start reconciles the machine the abandoned create had made.
TEST(Shutdown, EndsBackendCallsAndExitsThenTheNextStartReconciles) {
  Scripts s;
  const std::string D = s.dir();
  // Every script refuses (and says so in `late`) once the test has seen the server exit.
  const std::string guard = "[ -e " + D + "/server_gone ] && { echo \"$0 $*\" >> " + D + "/late; exit 1; }\n";
  s.Write("create.sh", guard +
                           "echo \"create $$\" >> " + D + "/calls\n"
                           "if [ -e " + D + "/create_hangs ]; then echo made-1 >> " + D + "/machines; exec sleep 1000; fi\n"
                           "echo made-2 >> " + D + "/machines; echo made-2\n");
  s.Write("delete.sh", guard +
                           "echo \"delete $1 $$\" >> " + D + "/calls\n"
                           "[ -e " + D + "/delete_hangs ] && exec sleep 1000\n"
                           "flock " + D + "/machines.lock sed -i \"/^$1\\$/d\" " + D + "/machines " + D + "/ghosts\n");
  // Until the restart the hanging create's machine is not listed yet (a cloud whose list lags):
  // listed at once, it would be an unknown worker beside its own requested one, and with
  // kill_unknown_after 1s the pool would delete it and create again before the stop.
  s.Write("list.sh", guard + "cat " + D + "/ghosts; if [ -e " + D + "/list_lags ]; then grep -v '^made-1$' " + D +
                         "/machines; else cat " + D + "/machines; fi 2>/dev/null; true\n");
  s.Touch("list_lags");
  s.Write("ghosts", "ghost-1\nghost-2\nghost-3\nghost-4\nghost-5\nghost-6\n");
  s.Touch("create_hangs");
  s.Touch("delete_hangs");

  Server server(s.Config({"max_agents: 1", "min_agents: 1", "kill_unknown_after: \"1s\"", "sync_loop_interval: \"1s\"",
                          "max_concurrent_creates: 2", "create_rate: \"100/s\""}));
  // The create hangs; two deletes hang (the in-flight limit); the other ghosts' deletes wait.
  auto calls_starting = [&](const std::string& verb) {
    int n = 0;
    for (const auto& l : s.Read("calls")) n += l.rfind(verb + " ", 0) == 0;
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return calls_starting("create") >= 1 && calls_starting("delete") >= 2; }, 120s))
      << ReadAll(s.path("calls"));
  ASSERT_TRUE(WaitFor([&] { return server.Workers("p", {"deleting"}) >= 6; }, 60s));

  server.Stop(SIGTERM);  // fails the test if the server is not gone within 30 s
  s.Touch("server_gone");
  std::vector<std::string> at_exit = s.Read("calls");
  // The scripts the server had started (a hanging create, two hanging deletes) died with it.
  std::vector<pid_t> pids;
  for (const auto& line : at_exit) pids.push_back(static_cast<pid_t>(std::stol(SplitWords(line).back())));
  EXPECT_TRUE(WaitFor([&] { return std::all_of(pids.begin(), pids.end(), ProcessGone); }, 30s))
      << "scripts outlived the server:\n" << ReadAll(s.path("calls"));
  for (pid_t pid : pids) {
    if (!ProcessGone(pid)) ::kill(pid, SIGKILL);  // never leave them behind, even when failing
  }
  std::this_thread::sleep_for(1s);  // a window for anything late to show (not a timing assertion)
  EXPECT_FALSE(s.Exists("late")) << ReadAll(s.path("late"));
  EXPECT_EQ(s.Read("calls"), at_exit);
  std::vector<std::string> log = Lines(server.ServerLog());
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log.back().find("stopped"), std::string::npos) << "logged after \"stopped\": " << log.back();
  EXPECT_EQ(calls_starting("delete"), 2);  // the queued deletes never started

  // The next start: the abandoned create's machine (listed, never named to the server) is an
  // unknown worker, deleted after kill_unknown_after.
  s.Remove("server_gone");
  s.Remove("create_hangs");
  s.Remove("delete_hangs");
  s.Remove("list_lags");
  size_t before = at_exit.size();
  server.Start();
  EXPECT_TRUE(WaitFor(
      [&] {
        auto calls = s.Read("calls");
        for (size_t i = before; i < calls.size(); ++i) {
          if (calls[i].rfind("delete made-1 ", 0) == 0) return true;
        }
        return false;
      },
      120s))
      << ReadAll(s.path("calls"));
  EXPECT_TRUE(WaitFor([&] { return ReadAll(s.path("machines")).find("made-1") == std::string::npos; }, 60s));
}

// A list that suddenly shows 100,000 machines nobody asked for: reported once, loudly, and
// deleted at the create rate. The rate (1/h, burst 3) allows 3 deletes during the test, 4 if it
// ran an hour; the count is checked after three more syncs, the server's own progress (or as
// soon as it is over the bound: a storm may keep the server from listing at all).
TEST(DeleteStorm, FloodedListIsReportedOnceAndDeletedAtTheCreateRate) {
  Scripts s;
  const std::string D = s.dir();
  s.Write("create.sh", "echo create >> " + D + "/calls; exit 1\n");
  s.Write("delete.sh", "echo \"delete $1\" >> " + D + "/deletes\n");
  s.Write("list.sh", "echo list >> " + D + "/lists; seq -f 'ghost-%06g' 1 100000\n");
  Server server(s.Config({"max_agents: 2", "kill_unknown_after: \"1s\"", "sync_loop_interval: \"1s\"",
                          "max_concurrent_creates: 3", "create_rate: \"1/h\""}));
  ASSERT_TRUE(WaitFor([&] { return s.Read("deletes").size() >= 3; }, 180s));
  size_t lists = s.Read("lists").size();
  auto over_the_bound = [&] { return s.Read("deletes").size() > 4; };  // burst 3, plus one token an hour
  EXPECT_TRUE(WaitFor([&] { return s.Read("lists").size() >= lists + 3 || over_the_bound(); }, 180s));
  EXPECT_FALSE(over_the_bound()) << s.Read("deletes").size() << " delete calls";
  std::string log = server.ServerLog();
  EXPECT_EQ(CountLines(log, "list_flood"), 1) << "the flood is reported once";
  EXPECT_NE(log.find("100000 machines"), std::string::npos);
  EXPECT_LE(CountLines(log, "unknown_worker"), 0) << "not one line per machine";
  EXPECT_TRUE(s.Read("calls").empty());  // never a create while the unknown machines exist
}

}  // namespace
}  // namespace tidepool::testing
