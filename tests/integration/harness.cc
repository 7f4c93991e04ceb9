#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/process.h"

namespace tidepool::testing {

namespace fs = std::filesystem;

std::string BinDir() { return TIDEPOOL_BIN_DIR; }
std::string SourceDir() { return TIDEPOOL_SOURCE_DIR; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

std::vector<std::string> SplitWords(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string w;
  while (ss >> w) out.push_back(w);
  return out;
}

namespace {

std::atomic<int> counter{0};  // RunProcess runs on many test threads at once (the chaos test)

// Where a process's captured stdout, stderr and stdin live: a folder of this test process's own.
// Never the process's working directory: tests run clients from "/" at the same time, and two
// test processes' "/proc7.out" were once the same file (one test read another's vrun's stderr).
const std::string& CaptureDir() {
  static const std::string dir = [] {
    std::string d = "/tmp/tidepool-it-io-" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all("/tmp/tidepool-it-io-" + std::to_string(::getpid()), ec);
    });
    return d;
  }();
  return dir;
}

std::vector<std::string> EnvWith(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (const std::string& kv : CurrentEnvironment()) {
    std::string key = kv.substr(0, kv.find('='));
    if (key.rfind("TIDEPOOL_", 0) == 0 || extra.count(key)) continue;
    env.push_back(kv);
  }
  for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

}  // namespace

Background::Background(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                       const std::string& dir, const std::string& stdin_path) {
  int n = counter++;
  out_path_ = CaptureDir() + "/proc" + std::to_string(n) + ".out";
  err_path_ = CaptureDir() + "/proc" + std::to_string(n) + ".err";
  // Spawn appends: a file left by an earlier run in the same directory must not be read as ours.
  ::unlink(out_path_.c_str());
  ::unlink(err_path_.c_str());
  SpawnOptions o;
  o.argv = argv;
  o.env = EnvWith(env);
  o.cwd = dir;
  o.new_session = false;
  o.stdout_path = out_path_;
  o.stderr_path = err_path_;
  int in_fd = -1;
  if (!stdin_path.empty()) {
    in_fd = ::open(stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
    o.stdin_fd = in_fd;
  }
  SpawnResult r = Spawn(o);
  if (in_fd >= 0) ::close(in_fd);
  pid_ = r.pid;
  if (pid_ < 0) ADD_FAILURE() << "cannot start " << argv[0] << ": " << r.message;
}

Background::~Background() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (pid_ > 0) {  // not a moved-from shell
    ::unlink(out_path_.c_str());
    ::unlink(err_path_.c_str());
  }
}

void Background::Signal(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

bool Background::Running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) result_.signal = WTERMSIG(status);
    return false;
  }
  return true;
}

ProcResult Background::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      reaped_ = true;
      result_.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  result_.out = Stdout();
  result_.err = Stderr();
  return result_;
}

std::string Background::Stdout() const { return ReadAll(out_path_); }
std::string Background::Stderr() const { return ReadAll(err_path_); }

ProcResult RunProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
               const std::string& dir, const std::string& stdin_data, std::chrono::milliseconds timeout) {
  std::string stdin_path;
  if (!stdin_data.empty()) {
    stdin_path = CaptureDir() + "/stdin" + std::to_string(counter++);
    WriteAll(stdin_path, stdin_data);
  }
  Background p(argv, env, dir, stdin_path);
  ProcResult r = p.Wait(timeout);
  if (!stdin_path.empty()) ::unlink(stdin_path.c_str());
  if (r.timed_out) ADD_FAILURE() << "timed out (" << timeout.count() << " ms): " << argv[0] << " " << (argv.size() > 1 ? argv[1] : "");
  return r;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

std::string OnePool(const std::string& name, int max_agents, const std::vector<std::string>& extra,
                    const std::string& backend) {
  std::string yaml = "agent_pools:\n  - name: " + name + "\n    default: true\n    auto_scaler:\n" +
                     "      backend: { local: " + backend + " }\n      max_agents: " + std::to_string(max_agents) + "\n";
  for (const auto& line : extra) yaml += "      " + line + "\n";
  return yaml;
}

std::string DefaultConfig() { return OnePool("local", 4, {"max_idle_agents: 4", "idle_decay: \"60s\""}); }

Server::Server(const std::string& config_yaml, std::vector<std::string> flags, std::string listen,
               std::map<std::string, std::string> env,
               const std::function<void(const std::string& data_dir)>& before_start)
    : flags_(std::move(flags)), listen_(std::move(listen)), env_(std::move(env)) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "harness";
  dir_ = (fs::temp_directory_path() / ("tidepool-it-" + std::to_string(getpid()) + "-" + name)).string();
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  data_dir_ = dir_ + "/data";
  config_path_ = dir_ + "/tidepool.yaml";
  WriteAll(config_path_, config_yaml.empty() ? DefaultConfig() : config_yaml);
  if (before_start) before_start(data_dir_);
  Start();
}

TmpfsMount::~TmpfsMount() {
  if (!dir_.empty()) ::umount2(dir_.c_str(), MNT_DETACH);
}

bool TmpfsMount::Mount(const std::string& dir, const std::string& size) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0) return false;
  dir_ = dir;
  return true;
}

bool TmpfsMount::Resize(const std::string& size) {
  return !dir_.empty() && ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0;
}

Server::~Server() {
  if (pid_ > 0) Stop(SIGTERM);
  KillAgents();
  if (!::testing::Test::HasFailure()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  } else {
    std::fprintf(stderr, "[harness] kept %s for inspection; server log:\n%s\n", dir_.c_str(), ServerLog().c_str());
  }
}

void Server::Start() {
  ::unlink((data_dir_ + "/server.addr").c_str());
  SpawnOptions o;
  // First start: any free port. A restart keeps the address, as agents dial it.
  std::string previous = address();
  std::string listen = !previous.empty() ? previous : !listen_.empty() ? listen_ : "127.0.0.1:0";
  o.argv = {BinDir() + "/tidepool", "server", "--config", config_path_, "--data-dir", data_dir_, "--listen",
            listen, "--log-level", "debug"};
  o.argv.insert(o.argv.end(), flags_.begin(), flags_.end());
  // The command backend's scripts run with the server's environment: let them find `tidepool`.
  std::map<std::string, std::string> env = env_;
  env["PATH"] = BinDir() + ":" + std::string(std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
  o.env = EnvWith(env);
  o.cwd = dir_;
  o.new_session = true;
  o.stdout_path = dir_ + "/server.log";
  o.stderr_path = o.stdout_path;
  SpawnResult r = Spawn(o);
  ASSERT_GT(r.pid, 0) << r.message;
  pid_ = r.pid;
  bool up = WaitFor([&] {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    std::string addr = ReadAll(data_dir_ + "/server.addr");
    if (addr.empty()) return false;
    std::lock_guard lock(address_mu_);
    address_ = addr.substr(0, addr.find('\n'));
    return true;
  }, 30s);
  ASSERT_TRUE(up && pid_ > 0) << "server did not start:\n" << ServerLog();
}

void Server::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

void Server::Stop(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int status;
  bool gone = WaitFor([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 30s);
  if (!gone) {
    // Where it hangs, when gdb is there to say (a hang seen once in CI is otherwise a guess).
    std::string stacks;
    if (::access("/usr/bin/gdb", X_OK) == 0) {
      stacks = RunProcess({"/usr/bin/gdb", "-p", std::to_string(pid_), "-batch", "-ex", "thread apply all bt"}, {},
                          dir_, "", 60s)
                   .out;
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    ADD_FAILURE() << "server did not stop on signal " << sig << "\n" << stacks;
  }
  pid_ = -1;
}

std::string Server::ServerLog() const { return ReadAll(dir_ + "/server.log"); }

std::vector<pid_t> Server::AgentPids() const {
  std::vector<pid_t> out;
  if (!fs::exists(data_dir_ + "/backends/local")) return out;
  for (const auto& e : fs::directory_iterator(data_dir_ + "/backends/local")) {
    if (e.path().extension() != ".ledger") continue;
    std::stringstream ss(ReadAll(e.path().string()));
    std::string name;
    long pid;
    unsigned long long start;
    while (ss >> name >> pid >> start) {
      if (ProcessAlive(static_cast<pid_t>(pid), start)) out.push_back(static_cast<pid_t>(pid));
    }
  }
  return out;
}

pid_t Server::AgentPid(const std::string& pool, const std::string& worker) const {
  for (const auto& line : Lines(ReadAll(data_dir_ + "/backends/local/" + pool + ".ledger"))) {
    auto parts = SplitWords(line);
    if (parts.size() >= 2 && parts[0] == worker) return std::stoi(parts[1]);
  }
  return -1;
}

void Server::KillAgents() {
  std::vector<pid_t> pids = AgentPids();
  for (pid_t p : pids) ::kill(p, SIGTERM);
  WaitFor([&] { return AgentPids().empty(); }, 15s);
  for (pid_t p : AgentPids()) {
    ::kill(-p, SIGKILL);
    ::kill(p, SIGKILL);
  }
}

std::map<std::string, std::string> Server::ClientEnv() const {
  return {{"TIDEPOOL_SERVER", address()}, {"PATH", BinDir() + ":/usr/local/bin:/usr/bin:/bin"}};
}

ProcResult Server::Tidepool(const std::vector<std::string>& args, const std::string& stdin_data) {
  std::vector<std::string> argv = {BinDir() + "/tidepool"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, ClientEnv(), dir_, stdin_data);
}

ProcResult Server::Vrun(const std::vector<std::string>& args, const std::string& stdin_data) {
  std::vector<std::string> argv = {BinDir() + "/vrun"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, ClientEnv(), dir_, stdin_data);
}

ProcResult Server::Vbatch(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinDir() + "/vbatch"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, ClientEnv(), dir_);
}

Background Server::VrunBackground(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinDir() + "/vrun"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Background(argv, ClientEnv(), dir_);
}

nlohmann::json Server::Json(const std::vector<std::string>& args) {
  std::vector<std::string> a = args;
  a.push_back("--json");
  ProcResult r = Tidepool(a);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "tidepool " << args[0] << " failed: " << r.err;
    return nlohmann::json();
  }
  return nlohmann::json::parse(r.out);
}

int Server::Workers(const std::string& pool, const std::vector<std::string>& states) {
  nlohmann::json p = Pool(pool);
  int n = 0;
  for (auto& [state, count] : p["workers"].items()) {
    if (states.empty() || std::find(states.begin(), states.end(), state) != states.end()) n += count.get<int>();
  }
  return n;
}

nlohmann::json Server::WaitTask(const std::string& id, std::chrono::milliseconds deadline) {
  nlohmann::json t;
  bool final = WaitFor([&] {
    t = Task(id);
    std::string s = t.value("state", "");
    return s == "SUCCESS" || s == "FAILURE" || s == "FAILED_UPSTREAM" || s == "CANCELLED";
  }, deadline);
  EXPECT_TRUE(final) << "task " << id << " did not end; last seen " << t.dump();
  return t;
}

}  // namespace tidepool::testing
