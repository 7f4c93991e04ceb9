#include "backends/ssh/installer.h"

#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fs.h"
#include "common/strings.h"

namespace tidepool::backends::ssh {

Result<Bundle> LoadBundle(const std::string& agent_binary, std::string_view who) {
  Bundle b;
  b.dir = std::filesystem::path(agent_binary).parent_path().string() + "/agent-bundle";
  auto version = ReadFile(b.dir + "/VERSION");
  auto needs = ReadFile(b.dir + "/NEEDS");
  if (!version.ok() || !needs.ok()) {
    return FailedPrecondition(fmt::format("{}: no agent bundle at {} (it is built with tidepool-agent: "
                                          "scripts/agent_bundle.sh)",
                                          who, b.dir));
  }
  b.version = std::string(Trim(*version));
  b.needs = std::string(Trim(*needs));
  return b;
}

Result<std::string> Installer::Tar(Deadline deadline) {
  {
    std::lock_guard lock(mu_);
    if (!tar_.empty()) return tar_;
  }
  SubprocessSpec spec;
  spec.argv = {"tar", "-c", "-C", bundle_.dir, "."};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.deadline = deadline;
  spec.stdout_cap = size_t{512} << 20;
  auto r = RunSubprocess(spec);
  if (!r.ok()) return r.status();
  if (!r->ok() || r->stdout_overflow) return Internal(fmt::format("tar of {}: {} {}", bundle_.dir, r->Describe(), r->err));
  std::lock_guard lock(mu_);
  tar_ = std::move(r->out);
  return tar_;
}

Status Installer::Install(const SshConnection& c, const std::string& agent_path, Deadline deadline) {
  auto tar = Tar(deadline);
  if (!tar.ok()) return tar.status();
  auto in = c.Run(InstallScript(bundle_, agent_path), *tar, deadline);
  if (!in.ok()) return in.status();
  if (!in->ok()) return c.Failure(*in, "installing the agent");
  spdlog::info("installed the agent ({}) on {} at {}", bundle_.version.substr(0, 12), c.host().Display(), agent_path);
  return Status::Ok();
}

Status Installer::Ensure(const SshConnection& c, const std::string& agent_path, Deadline deadline) {
  auto r = c.Run(InstalledScript(bundle_, agent_path), "", deadline);
  if (!r.ok()) return r.status();
  if (!r->ok()) return c.Failure(*r, "looking for the agent");
  if (r->out.find("INSTALLED") != std::string::npos) return Status::Ok();
  return Install(c, agent_path, deadline);
}

}  // namespace tidepool::backends::ssh
