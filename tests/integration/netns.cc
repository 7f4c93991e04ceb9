#include "netns.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "harness.h"

namespace tidepool::testing {

namespace fs = std::filesystem;

namespace {

int net_counter = 0;   // nets made by this process
int host_counter = 0;  // hosts made by this process

std::string Find(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::stringstream ss(path);
  std::string d;
  while (std::getline(ss, d, ':')) {
    if (d.empty()) continue;
    std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool PidAlive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// Serialises making nets (and sweeping) between test processes running at once, so two never
// pick the same subnet or sweep what the other is making.
class Lock {
 public:
  Lock() {
    fd_ = ::open("/tmp/tidepool-netns.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~Lock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

}  // namespace

TestNet::TestNet(int hosts) {
  if (::geteuid() != 0) {
    error_ = "not root (network namespaces and veth links need root)";
    return;
  }
  ip_bin_ = Find("ip");
  ss_bin_ = Find("ss");
  if (ip_bin_.empty() || ss_bin_.empty()) {
    error_ = "`ip` or `ss` (iproute2) is not installed";
    return;
  }
  int k = net_counter++;
  dir_ = "/tmp/tidepool-netns-" + std::to_string(getpid()) + "-" + std::to_string(k);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  bridge_ = "tpb" + std::to_string(getpid()) + "_" + std::to_string(k);
  Lock lock;
  SweepStale();
  if (!Make(hosts)) {
    Teardown();
    hosts_.clear();
  }
}

TestNet::~TestNet() {
  Teardown();
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

bool TestNet::Ip(const std::vector<std::string>& args, std::string* why, std::string* out) const {
  std::vector<std::string> argv = {ip_bin_};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcResult r = RunProcess(argv, {}, dir_, "", 30s);
  if (out) *out = r.out;
  if (r.exit_code == 0) return true;
  if (why) {
    std::string cmd = "ip";
    for (const auto& a : args) cmd += " " + a;
    *why = "`" + cmd + "` failed: " + Trimmed(r.err.empty() ? r.out : r.err);
  }
  return false;
}

bool TestNet::PickSubnet() {
  std::string addrs, routes;
  if (!Ip({"-o", "-4", "addr"}, &error_, &addrs) || !Ip({"-4", "route", "show", "table", "all"}, &error_, &routes)) {
    return false;
  }
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> octet(1, 254);
  for (int tries = 0; tries < 100; ++tries) {
    std::string s = "10.199." + std::to_string(octet(rng)) + ".";
    std::regex used("(^|[^0-9])" + std::regex_replace(s, std::regex("\\."), "\\."));
    if (std::regex_search(addrs, used) || std::regex_search(routes, used)) continue;
    subnet_ = s;
    return true;
  }
  error_ = "no unused 10.199.N.0/24 subnet found";
  return false;
}

bool TestNet::Make(int hosts) {
  std::string probe = "tp" + std::to_string(getpid()) + "_probe";
  // The first thing that needs the kernel's consent: a namespace.
  if (!Ip({"netns", "add", probe}, &error_)) {
    error_ = "cannot make network namespaces: " + error_;
    return false;
  }
  Ip({"netns", "del", probe});
  if (!PickSubnet()) return false;
  server_ip_ = subnet_ + "1";
  if (!Ip({"link", "add", bridge_, "type", "bridge"}, &error_)) return false;
  bridge_made_ = true;
  if (!Ip({"addr", "add", server_ip_ + "/24", "dev", bridge_}, &error_) || !Ip({"link", "set", bridge_, "up"}, &error_)) {
    return false;
  }
  for (int i = 0; i < hosts; ++i) {
    int g = host_counter++;
    Host h;
    std::string tag = std::to_string(getpid()) + "_" + std::to_string(g);
    h.ns = "tp" + tag;
    h.link = "tph" + tag;
    h.peer = "tpc" + tag;
    h.ip = subnet_ + std::to_string(i + 2);
    if (!Ip({"netns", "add", h.ns}, &error_)) return false;
    made_ns_.push_back(h.ns);
    if (!Ip({"link", "add", h.link, "type", "veth", "peer", "name", h.peer}, &error_)) return false;
    made_links_.push_back(h.link);
    if (!Ip({"link", "set", h.peer, "netns", h.ns}, &error_) ||
        !Ip({"link", "set", h.link, "master", bridge_}, &error_) || !Ip({"link", "set", h.link, "up"}, &error_) ||
        !Ip({"-n", h.ns, "addr", "add", h.ip + "/24", "dev", h.peer}, &error_) ||
        !Ip({"-n", h.ns, "link", "set", h.peer, "up"}, &error_) || !Ip({"-n", h.ns, "link", "set", "lo", "up"}, &error_)) {
      return false;
    }
    hosts_.push_back(h);
  }
  return true;
}

std::vector<int> TestNet::Pids(int i) const {
  std::string out;
  std::vector<int> pids;
  if (!Ip({"netns", "pids", hosts_[i].ns}, nullptr, &out)) return pids;
  for (const auto& w : SplitWords(out)) pids.push_back(std::stoi(w));
  return pids;
}

void TestNet::Teardown() {
  // Whatever still runs inside a host (agents, their tasks) goes with it.
  for (int i = 0; i < hosts(); ++i) {
    for (int pid : Pids(i)) ::kill(pid, SIGKILL);
    WaitFor([&] { return Pids(i).empty(); }, 15s);
  }
  for (const auto& l : made_links_) Ip({"link", "del", l});  // takes its peer with it
  for (const auto& n : made_ns_) Ip({"netns", "del", n});
  if (bridge_made_) Ip({"link", "del", bridge_});
  made_links_.clear();
  made_ns_.clear();
  bridge_made_ = false;
}

void TestNet::SweepStale() {
  // Namespaces and links named by a test process that no longer exists (killed mid-test).
  std::regex mine("^tp[bh]?([0-9]+)_[0-9a-z]+$");
  std::smatch m;
  std::string out;
  if (Ip({"netns", "list"}, nullptr, &out)) {
    for (const auto& line : Lines(out)) {
      std::string name = line.substr(0, line.find(' '));
      if (std::regex_match(name, m, mine) && !PidAlive(std::stol(m[1]))) Ip({"netns", "del", name});
    }
  }
  if (Ip({"-o", "link"}, nullptr, &out)) {
    for (const auto& line : Lines(out)) {
      auto parts = SplitWords(line);
      if (parts.size() < 2) continue;
      std::string name = parts[1].substr(0, parts[1].find_first_of("@:"));
      if (std::regex_match(name, m, mine) && !PidAlive(std::stol(m[1]))) Ip({"link", "del", name});
    }
  }
}

bool TestNet::SetLink(int i, bool up) {
  std::string why;
  bool ok = Ip({"link", "set", hosts_[i].link, up ? "up" : "down"}, &why);
  if (!ok) ADD_FAILURE() << why;
  return ok;
}

std::vector<std::string> TestNet::In(int i, const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {ip_bin_, "netns", "exec", hosts_[i].ns};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

}  // namespace tidepool::testing
