#include "cloud.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/process.h"
#include "harness.h"

namespace tidepool::testing {

namespace {
std::string Script() { return SourceDir() + "/tests/integration/cloud.sh"; }
}  // namespace

// The directory is named after the test process's pid, and pids come round again: a dir left by
// an earlier process would hand this cloud its ledger (two tests failed that way). Start empty.
Cloud::Cloud(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  std::filesystem::create_directories(dir_);
}

Cloud::~Cloud() {
  for (const auto& name : AliveVms()) {
    pid_t p = VmPid(name);
    if (p > 0) {
      ::kill(-p, SIGKILL);
      ::kill(p, SIGKILL);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string Cloud::Backend(const std::string& timeout, const std::string& in) const {
  std::string call = "CLOUD_DIR=" + dir_ + " " + Script();
  return in + "backend:\n" + in + "  command:\n" +
         in + "    start: \"" + call + " start\"\n" +
         in + "    stop: \"" + call + " stop ${WORKER_NAME}\"\n" +  // Velda's documented form
         in + "    list: \"" + call + " list\"\n" +
         in + "    batch_start: \"" + call + " batch $1 $2\"\n" +
         in + "    timeout: \"" + timeout + "\"\n";
}

std::string Cloud::Config(int max_agents, const std::vector<std::string>& extra, const std::string& timeout) const {
  std::string yaml = "agent_pools:\n  - name: cloud\n    default: true\n    auto_scaler:\n" + Backend(timeout) +
                     "      max_agents: " + std::to_string(max_agents) + "\n";
  for (const auto& line : extra) yaml += "      " + line + "\n";
  return yaml;
}

void Cloud::Set(const std::string& knob, const std::string& content) const { WriteAll(dir_ + "/" + knob, content); }
void Cloud::Clear(const std::string& knob) const { std::filesystem::remove(dir_ + "/" + knob); }

std::vector<std::string> Cloud::Ledger() const { return Lines(ReadAll(dir_ + "/ledger")); }

int Cloud::Count(const std::string& verb) const {
  int n = 0;
  for (const auto& l : Ledger()) n += l == verb || l.rfind(verb + " ", 0) == 0;
  return n;
}

std::vector<std::string> Cloud::Started() const {
  std::vector<std::string> out;
  for (const auto& l : Ledger()) {
    std::istringstream ss(l);
    std::string verb, name;
    ss >> verb >> name;
    if (verb == "start") out.push_back(name);
  }
  return out;
}

std::vector<std::string> Cloud::Stopped() const {
  std::vector<std::string> out;
  for (const auto& l : Ledger()) {
    // Each name once: a machine still listed a while after its stop is stopped again.
    if (l.rfind("stop ", 0) == 0 && std::find(out.begin(), out.end(), l.substr(5)) == out.end()) {
      out.push_back(l.substr(5));
    }
  }
  return out;
}

pid_t Cloud::VmPid(const std::string& name) const {
  pid_t pid = -1;
  for (const auto& l : Ledger()) {
    std::istringstream ss(l);
    std::string verb, n;
    long p;
    if (ss >> verb >> n >> p && verb == "start" && n == name) pid = static_cast<pid_t>(p);
  }
  return pid;
}

bool Cloud::Alive(const std::string& name) const {
  pid_t p = VmPid(name);
  if (p <= 0) return false;
  auto st = ReadProcStat(p);
  return st && st->state != 'Z';
}

std::vector<std::string> Cloud::AliveVms() const {
  std::vector<std::string> out;
  for (const auto& n : Started()) {
    if (Alive(n)) out.push_back(n);
  }
  return out;
}

pid_t Cloud::AgentPid(const std::string& name) const {
  pid_t vm = VmPid(name);
  if (vm <= 0) return -1;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string f = e.path().filename();
    if (f.empty() || !isdigit(static_cast<unsigned char>(f[0]))) continue;
    std::string stat = ReadAll(e.path().string() + "/stat");
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream ss(stat.substr(close + 2));
    char state;
    long ppid;
    ss >> state >> ppid;
    std::string cmd = ReadAll(e.path().string() + "/cmdline");
    if (ppid == vm && cmd.find("agent") != std::string::npos) return static_cast<pid_t>(std::stol(f));
  }
  return -1;
}

void Cloud::BootStray(const std::string& name) const {
  ProcResult r = RunProcess({"/bin/bash", Script(), "vm", name}, {{"CLOUD_DIR", dir_}}, dir_);
  (void)r;
}

}  // namespace tidepool::testing
