// Bad configuration is refused with its line number; good configuration is summarised.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "harness.h"

namespace tidepool::testing {
namespace {

class ConfigCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tidepool-cfg-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    WriteAll(p, text);
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(ConfigCli, ServerRefusesABadConfigWithItsLineNumber) {
  std::string path = Write("bad.yaml", R"(agent_pools:
  - name: gpu
    auto_scaler:
      backend: { local: {} }
      max_agentz: 3
)");
  ProcResult r = RunProcess({BinDir() + "/tidepool", "server", "--config", path, "--data-dir", (dir_ / "data").string(),
                      "--listen", "127.0.0.1:0"},
                     {}, dir_.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(path + ":5:7:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_agentz"), std::string::npos) << r.err;
  ProcResult v = RunProcess({BinDir() + "/tidepool", "config", "validate", path}, {}, dir_.string());
  EXPECT_EQ(v.exit_code, 2);
  EXPECT_NE(v.err.find(path + ":5:7:"), std::string::npos) << v.err;
  // `up` refuses it too, and says why.
  ProcResult up = RunProcess({BinDir() + "/tidepool", "up", "--config", path, "--data-dir", (dir_ / "data").string()}, {},
                      dir_.string());
  EXPECT_EQ(up.exit_code, 2);
  EXPECT_NE(up.err.find(":5:7:"), std::string::npos) << up.err;
}

TEST_F(ConfigCli, ValidateSummarisesAndReportsInactiveFields) {
  std::string path = Write("ok.yaml", R"(agent_pools:
  - name: cpu
    default: true
    auto_scaler:
      backend: { local: {} }
      max_agents: 3
  - name: gpu
    selectors: [train]
    auto_scaler:
      backend:
        command: { start: "echo w", stop: "true", list: "true" }
      max_agents: 2
      schedule:
        - { days: [mon-fri], hours: "08:00-19:00", min_agents: 1 }
)");
  ProcResult v = RunProcess({BinDir() + "/tidepool", "config", "validate", path}, {}, dir_.string());
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find("cpu"), std::string::npos);
  EXPECT_NE(v.out.find("not yet active"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("auto_scaler.schedule (time-window pre-scaling)"), std::string::npos) << v.out;
}

TEST_F(ConfigCli, EveryVeldaReferenceExampleValidates) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(SourceDir() + "/tests/data/config/velda")) {
    if (e.path().extension() != ".yaml") continue;
    ++n;
    ProcResult v = RunProcess({BinDir() + "/tidepool", "config", "validate", e.path().string()}, {{"MITHRIL_API_TOKEN", "x"},
                       {"DIGITALOCEAN_API_TOKEN", "y"}}, dir_.string());
    EXPECT_EQ(v.exit_code, 0) << e.path() << ": " << v.err;
    EXPECT_EQ(v.out.find("tok"), v.out.find("tok"));  // summary printed
  }
  EXPECT_GE(n, 6);
}

TEST_F(ConfigCli, UpAndDownAroundAServer) {
  std::string data = (dir_ / "updata").string();
  // An existing data dir keeps its owner's mode (the server warns instead of changing it).
  std::filesystem::create_directories(data);
  ::chmod(data.c_str(), 0750);
  ProcResult up = RunProcess({BinDir() + "/tidepool", "up", "--data-dir", data, "--listen", "127.0.0.1:0"}, {}, dir_.string());
  ASSERT_EQ(up.exit_code, 0) << up.err;
  std::string addr = Lines(up.out)[0];
  ProcResult r = RunProcess({BinDir() + "/vrun", "--server", addr, "echo", "via-up"}, {}, dir_.string());
  EXPECT_EQ(r.out, "via-up\n");
  // A second `up` on the same data dir finds the running server.
  ProcResult again = RunProcess({BinDir() + "/tidepool", "up", "--data-dir", data}, {}, dir_.string());
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_EQ(Lines(again.out)[0], addr);
  struct stat st {};
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_NE(ReadAll(data + "/server.log").find("has mode 0750"), std::string::npos);
  // The worker the server started (agents outlive a server restart).
  std::vector<pid_t> agents;
  for (const auto& e : std::filesystem::directory_iterator(data + "/backends/local")) {
    for (const auto& line : Lines(ReadAll(e.path().string()))) {
      pid_t pid = std::atoi(line.substr(line.find(' ') + 1).c_str());
      if (pid > 0) agents.push_back(pid);
    }
  }
  ASSERT_EQ(agents.size(), 1u);
  auto alive = [](pid_t pid) {
    std::string stat = ReadAll("/proc/" + std::to_string(pid) + "/stat");
    size_t paren = stat.rfind(')');
    return !stat.empty() && paren != std::string::npos && stat.substr(paren + 2, 1) != "Z";
  };
  EXPECT_TRUE(alive(agents[0]));
  // `down` ends the session: the server and the local pool's agents are gone when it returns.
  ProcResult down = RunProcess({BinDir() + "/tidepool", "down", "--data-dir", data}, {}, dir_.string());
  EXPECT_EQ(down.exit_code, 0) << down.err;
  EXPECT_NE(down.err.find("stopped 1 local worker"), std::string::npos) << down.err;
  EXPECT_FALSE(alive(agents[0]));
  ProcResult after = RunProcess({BinDir() + "/vrun", "--server", addr, "true"}, {}, dir_.string());
  EXPECT_EQ(after.exit_code, 255);
  for (pid_t pid : agents) kill(pid, SIGKILL);
}

}  // namespace
}  // namespace tidepool::testing
