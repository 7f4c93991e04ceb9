#include "backends/ssh/ssh_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/crypto.h"
#include "common/fs.h"
#include "common/process.h"
#include "common/strings.h"

namespace tidepool::backends::ssh {

namespace {

std::string Str(const nlohmann::json& f, const char* key, const std::string& fallback = "") {
  auto it = f.find(key);
  return it != f.end() && it->is_string() ? it->get<std::string>() : fallback;
}

std::string FirstLine(std::string_view s) {
  std::string t(Trim(s));
  return t.substr(0, t.find('\n'));
}

}  // namespace

Result<std::unique_ptr<Backend>> SshBackend::Make(const config::BackendConfig& cfg, const BackendContext& ctx) {
  Options o;
  auto hosts = ParseHosts(cfg.fields);
  if (!hosts.ok()) return InvalidArgument("ssh backend: " + hosts.status().message());
  o.hosts = std::move(hosts).value();
  o.known_hosts = Str(cfg.fields, "known_hosts");
  o.proxy_jump = Str(cfg.fields, "proxy_jump");
  o.agent_path = Str(cfg.fields, "agent_path", kDefaultAgentPath);
  o.workers_per_host = cfg.fields.value("workers_per_host", 1);
  if (o.workers_per_host < 1) return InvalidArgument("ssh backend: workers_per_host must be at least 1");
  if (o.agent_path.empty() || o.agent_path.back() == '/') {
    return InvalidArgument("ssh backend: agent_path must name a file (where the agent is installed)");
  }
  Bundle b;
  b.dir = std::filesystem::path(ctx.agent_binary).parent_path().string() + "/agent-bundle";
  auto version = ReadFile(b.dir + "/VERSION");
  auto needs = ReadFile(b.dir + "/NEEDS");
  if (!version.ok() || !needs.ok()) {
    return FailedPrecondition(fmt::format("ssh backend: no agent bundle at {} (it is built with tidepool-agent: "
                                          "scripts/agent_bundle.sh)",
                                          b.dir));
  }
  b.version = std::string(Trim(*version));
  b.needs = std::string(Trim(*needs));
  return std::unique_ptr<Backend>(new SshBackend(ctx, std::move(o), std::move(b)));
}

SshBackend::SshBackend(BackendContext ctx, Options opts, Bundle bundle)
    : ctx_(std::move(ctx)), opts_(std::move(opts)), bundle_(std::move(bundle)) {
  // Socket paths must stay short (108 bytes): a folder named by a hash of the pool's identity.
  control_dir_ = "/tmp/tidepool-ssh-" + HmacSha256Hex("control", ctx_.data_dir + "\n" + ctx_.pool).substr(0, 16);
  std::filesystem::create_directories(control_dir_);
  ::chmod(control_dir_.c_str(), 0700);
  for (size_t i = 0; i < opts_.hosts.size(); ++i) install_mu_.push_back(std::make_unique<std::mutex>());
}

std::vector<std::string> SshBackend::SshArgv(size_t i, const std::string& script) const {
  const Host& h = opts_.hosts[i];
  std::vector<std::string> a = {"ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o",
                                "ServerAliveCountMax=3", "-o", "ControlMaster=auto", "-o",
                                "ControlPath=" + control_dir_ + "/%C", "-o", "ControlPersist=300", "-p",
                                std::to_string(h.port)};
  if (!opts_.known_hosts.empty()) a.insert(a.end(), {"-o", "UserKnownHostsFile=" + opts_.known_hosts});
  if (!h.identity_file.empty()) a.insert(a.end(), {"-o", "IdentitiesOnly=yes", "-i", h.identity_file});
  if (!opts_.proxy_jump.empty()) a.insert(a.end(), {"-J", opts_.proxy_jump});
  if (!h.user.empty()) a.insert(a.end(), {"-l", h.user});
  a.push_back("--");
  a.push_back(h.host);
  a.push_back(script);
  return a;
}

Result<SubprocessResult> SshBackend::Ssh(size_t i, const std::string& script, const std::string& stdin_data,
                                         Deadline deadline) {
  SubprocessSpec spec;
  spec.argv = SshArgv(i, script);
  for (const std::string& kv : CurrentEnvironment()) {
    if (kv.rfind("PATH=", 0) == 0 || kv.rfind("HOME=", 0) == 0 || kv.rfind("USER=", 0) == 0 ||
        kv.rfind("SSH_AUTH_SOCK=", 0) == 0 || kv.rfind("LANG=", 0) == 0) {
      spec.env.push_back(kv);
    }
  }
  spec.stdin_data = stdin_data;
  spec.deadline = deadline;
  spec.groups = &groups_;
  return RunSubprocess(spec);
}

Status SshBackend::Failure(size_t i, const SubprocessResult& r, std::string_view doing) const {
  const std::string host = opts_.hosts[i].Display();
  std::string said = StderrTail(r.err);
  if (r.timed_out) return DeadlineExceeded(fmt::format("{} on {}: no answer before the call's deadline", doing, host));
  if (r.exit_code == 255) {  // ssh's own failure: nothing ran there
    if (said.find("Host key verification failed") != std::string::npos ||
        said.find("HOST IDENTIFICATION HAS CHANGED") != std::string::npos) {
      return MakeError(ErrorClass::kAuth,
                       fmt::format("{}: its host key is not the one in known_hosts{}; nothing was started there "
                                   "(ssh: {})",
                                   host, opts_.known_hosts.empty() ? "" : " (" + opts_.known_hosts + ")", said));
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

Result<std::string> SshBackend::TarOfBundle(Deadline deadline) {
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

Status SshBackend::StartOn(size_t i, const std::string& name, const CreateRequest& request, Deadline deadline) {
  const Host& h = opts_.hosts[i];
  std::map<std::string, std::string> env = {
      {"TIDEPOOL_SERVER", request.server_address},
      {"TIDEPOOL_POOL", request.pool},
      {"TIDEPOOL_WORKER_NAME", name},
      {"TIDEPOOL_WORKER_TOKEN", request.token_for(name)},
      {"TIDEPOOL_SLOTS", std::to_string(h.slots > 0 ? h.slots : request.slots)},
      {"TIDEPOOL_AGENT_ADDRESS", h.host},
  };
  StartArgs args{request.pool, name, opts_.agent_path, request.labels};
  for (const auto& [k, v] : h.labels) args.labels[k] = v;
  const std::string start = StartScript(bundle_, args);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = Ssh(i, start, EnvFile(env), deadline);
    if (!r.ok()) return r.status();
    if (!r->ok()) return Failure(i, *r, "starting the agent");
    if (r->out.find("STARTED") != std::string::npos) return Status::Ok();
    if (r->out.find("NEED-INSTALL") == std::string::npos || attempt > 0) {
      return Internal(fmt::format("{}: the start script answered \"{}\"", h.Display(), FirstLine(r->out)));
    }
    std::lock_guard install(*install_mu_[i]);  // one install per host at a time
    auto tar = TarOfBundle(deadline);
    if (!tar.ok()) return tar.status();
    auto in = Ssh(i, InstallScript(bundle_, opts_.agent_path), *tar, deadline);
    if (!in.ok()) return in.status();
    if (!in->ok()) return Failure(i, *in, "installing the agent");
    spdlog::info("pool {}: installed the agent ({}) on {}", ctx_.pool, bundle_.version.substr(0, 12), h.Display());
  }
  return Internal("unreachable");
}

std::shared_ptr<std::mutex> SshBackend::NameLock(const std::string& name) {
  std::lock_guard lock(mu_);
  auto& l = name_locks_[name];
  if (!l) l = std::make_shared<std::mutex>();
  return l;
}

int SshBackend::HostOf(const std::string& name) const {
  for (size_t i = 0; i < opts_.hosts.size(); ++i) {
    std::string stem = opts_.hosts[i].NameStem(ctx_.pool) + "-";
    if (name.size() > stem.size() && name.compare(0, stem.size(), stem) == 0 &&
        name.find_first_not_of("0123456789", stem.size()) == std::string::npos) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

Result<std::string> SshBackend::Create(const CreateRequest& request, Deadline deadline) {
  Status last = MakeError(ErrorClass::kOutOfCapacity,
                          fmt::format("every host of pool {} runs {} agent{} (workers_per_host)", ctx_.pool,
                                      opts_.workers_per_host, opts_.workers_per_host == 1 ? "" : "s"));
  std::set<size_t> tried;
  for (;;) {
    // The free place on the host with the fewest of our workers; hosts lately unreachable last.
    std::string name;
    size_t host = 0;
    {
      std::lock_guard lock(mu_);
      const auto now = Clock::now();
      std::vector<std::tuple<bool, int, size_t>> order;
      for (size_t i = 0; i < opts_.hosts.size(); ++i) {
        if (tried.count(i)) continue;
        int used = 0;
        for (const auto& [n, at] : where_) used += at == i;
        for (const auto& n : creating_) used += HostOf(n) == static_cast<int>(i) && !where_.count(n);
        auto u = unreachable_until_.find(i);
        order.emplace_back(u != unreachable_until_.end() && u->second > now, used, i);
      }
      std::sort(order.begin(), order.end());
      for (const auto& [down, used, i] : order) {
        for (int k = 0; k < opts_.workers_per_host && name.empty(); ++k) {
          std::string n = fmt::format("{}-{}", opts_.hosts[i].NameStem(ctx_.pool), k);
          if (!where_.count(n) && !creating_.count(n)) name = n;
        }
        if (!name.empty()) {
          host = i;
          break;
        }
      }
      if (name.empty()) return last;
      creating_.insert(name);
    }
    tried.insert(host);
    Status s;
    {
      auto l = NameLock(name);
      std::lock_guard hold(*l);
      s = StartOn(host, name, request, deadline);
    }
    std::lock_guard lock(mu_);
    creating_.erase(name);
    if (s.ok()) {
      where_[name] = host;
      unreachable_until_.erase(host);
      return name;
    }
    spdlog::warn("pool {}: create on {}: {}", ctx_.pool, opts_.hosts[host].Display(), s.message());
    if (ClassOf(s) == ErrorClass::kTransient) unreachable_until_[host] = Clock::now() + std::chrono::seconds(30);
    last = s;
    if (Clock::now() >= deadline) return last;
  }
}

Status SshBackend::Delete(const std::string& name, Deadline deadline) {
  int i = HostOf(name);
  if (i < 0) return Status::Ok();  // not a name this backend makes: nothing of ours to stop
  auto l = NameLock(name);
  std::lock_guard hold(*l);  // a create of this name still running finishes first
  auto r = Ssh(static_cast<size_t>(i), StopScript(ctx_.pool, name, kStopGraceSeconds), "", deadline);
  if (!r.ok()) return r.status();
  if (!r->ok() || r->out.find("STOPPED") == std::string::npos) return Failure(static_cast<size_t>(i), *r, "stopping the agent");
  std::lock_guard lock(mu_);
  where_.erase(name);
  return Status::Ok();
}

Result<std::vector<ListedWorker>> SshBackend::List(Deadline deadline) {
  const std::string script = ListScript(ctx_.pool);
  std::vector<std::future<Result<SubprocessResult>>> runs;
  for (size_t i = 0; i < opts_.hosts.size(); ++i) {
    runs.push_back(std::async(std::launch::async, [this, i, &script, deadline] { return Ssh(i, script, "", deadline); }));
  }
  // Every host's answer first, then the lock: a create meanwhile does not wait for the slowest.
  std::vector<Result<SubprocessResult>> answers;
  for (auto& run : runs) answers.push_back(run.get());
  std::vector<ListedWorker> out;
  std::vector<std::string> failures;
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < answers.size(); ++i) {
    auto& r = answers[i];
    Status failed;
    if (!r.ok()) failed = r.status();
    else if (!r->ok() || r->out.find("LISTED") == std::string::npos) failed = Failure(i, *r, "listing agents");
    if (!failed.ok()) {
      failures.push_back(failed.message());
      unreachable_until_[i] = Clock::now() + std::chrono::seconds(30);
      for (const auto& [name, at] : where_) {
        if (at == i) out.push_back({name, WorkerState::kRunning, "host unreachable: " + failed.message(), ""});
      }
      continue;
    }
    unreachable_until_.erase(i);
    std::set<std::string> running;
    for (const std::string& line : NonEmptyLines(r->out)) {
      if (line == "LISTED") continue;
      auto words = SplitWhitespace(line);
      if (words.size() != 2 || HostOf(words[0]) != static_cast<int>(i)) continue;  // not ours
      bool up = words[1] == "running";
      out.push_back({words[0], up ? WorkerState::kRunning : WorkerState::kStopped, "", line});
      if (up) running.insert(words[0]);
    }
    for (auto it = where_.begin(); it != where_.end();) {
      if (it->second == i && !running.count(it->first) && !creating_.count(it->first)) it = where_.erase(it);
      else ++it;
    }
    for (const auto& n : running) where_[n] = i;
  }
  if (failures.size() == opts_.hosts.size()) {
    return Unavailable(fmt::format("no host of pool {} answered: {}", ctx_.pool, Join(failures, "; ")));
  }
  return out;
}

}  // namespace tidepool::backends::ssh
