#include "ssh_hosts.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

namespace tidepool::testing {

namespace fs = std::filesystem;

namespace {

// The folders of a host's own disk, mounted over the caller's: the usual homes of people's files
// and the folder the build lives in, wherever the checkout is (CI clones under /check), so that a
// host never sees the caller's binaries.
std::vector<std::string> OwnDirs() {
  std::vector<std::string> dirs = {"/work", "/tmp", "/root", "/home", "/opt", "/var/lib/tidepool",
                                   "/var/cache/tidepool"};
  fs::path bin = fs::weakly_canonical(BinDir());
  std::string top = "/" + (++bin.begin())->string();
  static const std::vector<std::string> kSystem = {"/usr", "/var", "/etc", "/lib", "/lib64", "/bin", "/sbin",
                                                   "/proc", "/sys", "/dev", "/run"};
  std::string hide = std::find(kSystem.begin(), kSystem.end(), top) == kSystem.end() ? top : bin.string();
  bool covered = false;
  for (const auto& d : dirs) covered = covered || hide == d || hide.rfind(d + "/", 0) == 0;
  if (!covered) dirs.push_back(hide);
  return dirs;
}
const std::vector<std::string> kOwnDirs = OwnDirs();


}  // namespace

SshHosts::SshHosts(TestNet& net) : net_(net) {
  if (!fs::exists("/usr/sbin/sshd") || !fs::exists("/usr/bin/ssh") || !fs::exists("/usr/bin/ssh-keygen")) {
    error_ = "OpenSSH (openssh-server, openssh-client) is not installed";
    return;
  }
  static int made = 0;
  dir_ = "/var/tmp/tidepool-ssh-" + std::to_string(getpid()) + "-" + std::to_string(made++);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  fs::create_directories("/run/sshd");  // sshd's privilege separation directory
  for (const auto& d : kOwnDirs) fs::create_directories(d);  // mount points in every namespace
  client_key_ = dir_ + "/client_key";
  known_hosts_ = dir_ + "/known_hosts";
  ProcResult k = RunProcess({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", client_key_}, {}, dir_);
  if (k.exit_code != 0) {
    error_ = "ssh-keygen: " + k.err;
    return;
  }
  std::string known;
  for (int i = 0; i < net.hosts(); ++i) {
    if (!Prepare(i)) return;
    known += net.ip(i) + " " + host_keys_[i] + "\n";
  }
  WriteAll(known_hosts_, known);
  for (int i = 0; i < net.hosts(); ++i) {
    if (!Start(i)) return;
  }
}

SshHosts::~SshHosts() {
  for (int i = 0; i < net_.hosts(); ++i) Kill(i);
  if (!dir_.empty()) fs::remove_all(dir_);
}

std::string SshHosts::Disk(int i) const { return dir_ + "/host" + std::to_string(i) + "/disk"; }

bool SshHosts::Prepare(int i) {
  std::string h = dir_ + "/host" + std::to_string(i);
  fs::create_directories(h);
  for (const auto& d : kOwnDirs) fs::create_directories(Disk(i) + d);
  fs::permissions(Disk(i) + "/tmp", fs::perms::all | fs::perms::sticky_bit);
  ProcResult k =
      RunProcess({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", h + "/host_key"}, {}, h);
  if (k.exit_code != 0) {
    error_ = "ssh-keygen: " + k.err;
    return false;
  }
  std::string pub = ReadAll(h + "/host_key.pub");
  host_keys_.push_back(pub.substr(0, pub.find(' ', pub.find(' ') + 1)));  // "ssh-ed25519 AAAA..."
  fs::copy_file(client_key_ + ".pub", h + "/authorized_keys", fs::copy_options::overwrite_existing);
  WriteAll(h + "/sshd_config", "ListenAddress " + net_.ip(i) + "\n" +
                                   "HostKey " + h + "/host_key\n" +
                                   "PidFile " + h + "/sshd.pid\n" +
                                   "AuthorizedKeysFile " + h + "/authorized_keys\n" +
                                   "PermitRootLogin prohibit-password\n"
                                   "PasswordAuthentication no\n"
                                   "KbdInteractiveAuthentication no\n"
                                   "UsePAM no\n"
                                   "StrictModes no\n"
                                   "MaxStartups 200\n"
                                   "MaxSessions 100\n"
                                   "Subsystem sftp internal-sftp\n");
  return true;
}

std::string SshHosts::WrongKnownHosts(int i) const {
  std::string out;
  for (int k = 0; k < net_.hosts(); ++k) {
    out += net_.ip(k) + " " + host_keys_[k == i ? (i + 1) % net_.hosts() : k] + "\n";
  }
  std::string path = dir_ + "/wrong_known_hosts_" + std::to_string(i);
  WriteAll(path, out);
  return path;
}

void SshHosts::Kill(int i) {
  for (int pid : net_.Pids(i)) ::kill(pid, SIGKILL);
  WaitFor([&] { return net_.Pids(i).empty(); }, 15s);
}

bool SshHosts::Start(int i) {
  std::string h = dir_ + "/host" + std::to_string(i);
  // sshd runs in the foreground as the host's init (pid 1 of its pid namespace: it reaps what
  // its sessions leave), started in the background of a shell that returns at once.
  std::string inner = "set -e\n";
  for (const auto& d : kOwnDirs) inner += "mount --bind '" + Disk(i) + d + "' '" + d + "'\n";
  inner += "exec /usr/sbin/sshd -D -f '" + h + "/sshd_config' -E '" + h + "/sshd.log'\n";
  WriteAll(h + "/boot.sh", inner);
  std::string outer = "setsid /usr/bin/unshare --pid --fork --mount-proc --mount --propagation private /bin/sh '" + h +
                      "/boot.sh' </dev/null >>'" + h + "/boot.log' 2>&1 &";
  ProcResult r = RunProcess(net_.In(i, {"/bin/sh", "-c", outer}), {}, "/");
  if (r.exit_code != 0 || !WaitListening(i)) {
    error_ = "sshd on host " + std::to_string(i) + " does not answer: " + r.err + ReadAll(h + "/boot.log") +
             ReadAll(h + "/sshd.log");
    return false;
  }
  return true;
}

bool SshHosts::WaitListening(int i) {
  return WaitFor([&] { return Run(i, "true").exit_code == 0; }, 30s);
}

std::vector<std::string> SshHosts::SshArgv(int i) const {
  return {"/usr/bin/ssh", "-i", client_key_, "-o", "UserKnownHostsFile=" + known_hosts_, "-o",
          "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "root@" + net_.ip(i)};
}

ProcResult SshHosts::Run(int i, const std::string& command) const {
  std::vector<std::string> argv = SshArgv(i);
  argv.push_back(command);
  return RunProcess(argv, {{"PATH", "/usr/bin:/bin:/usr/sbin:/sbin"}}, "/", "", 30s);
}

}  // namespace tidepool::testing
