// What the workspace tests share (workspace_test.cc, workspace_daemon_test.cc): the caller's
// scratch tree, a git project with every kind of file, running a client in it, and the server's
// byte counters.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "harness.h"

namespace tidepool::testing {

namespace fs = std::filesystem;

// The caller's side: a scratch folder under /tmp (which no test host sees), removed at the end.
class CallerDir {
 public:
  CallerDir() {
    char tmpl[] = "/tmp/tidepool-ws-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~CallerDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// A git work tree with what a workspace must carry as it is: binary content, an executable, an
// empty file, links (one dangling), a name that is not UTF-8, an ignored folder, a sub-folder.
inline void MakeProject(const std::string& dir) {
  fs::create_directories(dir + "/src");
  fs::create_directories(dir + "/ignored");
  WriteAll(dir + "/train.py", "print('hello from train.py')\n");
  WriteAll(dir + "/data.bin", RandomBytes(3 << 20, 7));
  WriteAll(dir + "/run.sh", "#!/bin/sh\necho run\n");
  ::chmod((dir + "/run.sh").c_str(), 0755);
  WriteAll(dir + "/empty", "");
  WriteAll(dir + "/src/a.txt", "a\n");
  WriteAll(dir + "/caf\xe9.txt", "latin-1 name\n");
  WriteAll(dir + "/ignored/big.txt", "not sent\n");
  WriteAll(dir + "/.tidepoolignore", "ignored/\n");
  WriteAll(dir + "/.gitignore", "ignored/\n");  // untracked too: git answers the same without it
  fs::create_symlink("train.py", dir + "/link");
  fs::create_symlink("nowhere", dir + "/dangling");
  ProcResult git = RunProcess({"sh", "-c",
                               "git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm first"},
                              {{"PATH", "/usr/bin:/bin"}, {"HOME", dir}}, dir);
  ASSERT_EQ(git.exit_code, 0) << git.err;
}

// The client's environment for these tests: its caches (and its workspace daemon) go with the test.
inline std::map<std::string, std::string> ClientEnvIn(Server& server, const std::map<std::string, std::string>& extra = {}) {
  auto env = server.ClientEnv();
  env["HOME"] = server.dir();
  for (const auto& [k, v] : extra) env[k] = v;
  return env;
}

inline ProcResult ClientIn(Server& server, const std::string& cwd, const std::string& bin, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& extra_env = {}) {
  std::vector<std::string> argv = {BinDir() + "/" + bin};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, ClientEnvIn(server, extra_env), cwd);
}

// tidepool_workspace_bytes_total{direction,peer} from /metrics (0 when not there yet).
inline double WorkspaceBytes(const Server& server, const std::string& direction, const std::string& peer) {
  std::string addr = Lines(ReadAll(server.data_dir() + "/metrics.addr"))[0];
  httplib::Client http("http://" + addr);
  auto res = http.Get("/metrics");
  if (!res) return -1;
  std::string key = "tidepool_workspace_bytes_total{direction=\"" + direction + "\",peer=\"" + peer + "\"} ";
  for (const std::string& line : Lines(res->body)) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size()));
  }
  return 0;
}

inline std::string WithMetrics(const std::string& pools) { return "server:\n  metrics_listen: \"127.0.0.1:0\"\n" + pools; }

}  // namespace tidepool::testing
