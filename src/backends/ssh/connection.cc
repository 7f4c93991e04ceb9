#include "backends/ssh/connection.h"

#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>

#include "common/crypto.h"
#include "common/process.h"
#include "common/strings.h"

namespace tidepool::backends::ssh {

SshConnection::SshConnection(Host host, std::string known_hosts, std::string proxy_jump, std::string control_dir,
                             ProcessGroups* groups)
    : host_(std::move(host)),
      known_hosts_(std::move(known_hosts)),
      proxy_jump_(std::move(proxy_jump)),
      control_dir_(std::move(control_dir)),
      groups_(groups) {}

std::string SshConnection::ControlDir(const std::string& data_dir, const std::string& pool) {
  std::string dir = "/tmp/tidepool-ssh-" + HmacSha256Hex("control", data_dir + "\n" + pool).substr(0, 16);
  std::filesystem::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  return dir;
}

std::vector<std::string> SshConnection::Argv(const std::string& script) const {
  std::vector<std::string> a = {"ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o",
                                "ServerAliveCountMax=3", "-o", "ControlMaster=auto", "-o",
                                "ControlPath=" + control_dir_ + "/%C", "-o", "ControlPersist=300", "-p",
                                std::to_string(host_.port)};
  if (!known_hosts_.empty()) a.insert(a.end(), {"-o", "UserKnownHostsFile=" + known_hosts_});
  if (!host_.identity_file.empty()) a.insert(a.end(), {"-o", "IdentitiesOnly=yes", "-i", host_.identity_file});
  if (!proxy_jump_.empty()) {
    // Not `-J`: ssh would reach the jump host with none of the options above (its key, the
    // known_hosts to check it against). The same checks, spelled out as the proxy command.
    auto jump = ParseHostString(proxy_jump_);
    if (jump.ok()) {
      std::vector<std::string> p = {"ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
                                    "ConnectTimeout=10", "-p", std::to_string(jump->port)};
      if (!known_hosts_.empty()) p.insert(p.end(), {"-o", "UserKnownHostsFile=" + known_hosts_});
      if (!host_.identity_file.empty()) p.insert(p.end(), {"-o", "IdentitiesOnly=yes", "-i", host_.identity_file});
      if (!jump->user.empty()) p.insert(p.end(), {"-l", jump->user});
      p.insert(p.end(), {"-W", "[%h]:%p", "--", jump->host});
      a.insert(a.end(), {"-o", "ProxyCommand=" + ShellQuote(p)});
    } else {
      a.insert(a.end(), {"-J", proxy_jump_});
    }
  }
  if (!host_.user.empty()) a.insert(a.end(), {"-l", host_.user});
  a.push_back("--");
  a.push_back(host_.host);
  a.push_back(script);
  return a;
}

Result<SubprocessResult> SshConnection::Run(const std::string& script, const std::string& stdin_data,
                                            Deadline deadline) const {
  SubprocessSpec spec;
  spec.argv = Argv(script);
  for (const std::string& kv : CurrentEnvironment()) {
    if (kv.rfind("PATH=", 0) == 0 || kv.rfind("HOME=", 0) == 0 || kv.rfind("USER=", 0) == 0 ||
        kv.rfind("SSH_AUTH_SOCK=", 0) == 0 || kv.rfind("LANG=", 0) == 0) {
      spec.env.push_back(kv);
    }
  }
  spec.stdin_data = stdin_data;
  spec.deadline = deadline;
  spec.groups = groups_;
  return RunSubprocess(spec);
}

Status SshConnection::Failure(const SubprocessResult& r, std::string_view doing) const {
  const std::string host = host_.Display();
  std::string said = StderrTail(r.err);
  if (r.timed_out) return DeadlineExceeded(fmt::format("{} on {}: no answer before the call's deadline", doing, host));
  if (r.exit_code == 255) {  // ssh's own failure: nothing ran there
    if (said.find("Host key verification failed") != std::string::npos ||
        said.find("HOST IDENTIFICATION HAS CHANGED") != std::string::npos) {
      return MakeError(ErrorClass::kAuth,
                       fmt::format("{}: its host key is not the one in known_hosts{}; nothing was started there "
                                   "(ssh: {})",
                                   host, known_hosts_.empty() ? "" : " (" + known_hosts_ + ")", said));
    }
    if (said.find("Permission denied") != std::string::npos) {
      return MakeError(ErrorClass::kAuth, fmt::format("{}: the key was refused (ssh: {})", host, said));
    }
    if (said.find("Could not resolve hostname") != std::string::npos) {
      return MakeError(ErrorClass::kBadRequest, fmt::format("{}: unknown host (ssh: {})", host, said));
    }
    return Unavailable(fmt::format("{}: unreachable (ssh: {})", host, said.empty() ? r.Describe() : said));
  }
  if (r.exit_code == 3) return MakeError(ErrorClass::kBadRequest, fmt::format("{}: {}", host, said));
  return Status(StatusCode::kUnknown, fmt::format("{} on {} failed ({}): {}", doing, host, r.Describe(), said));
}

}  // namespace tidepool::backends::ssh
