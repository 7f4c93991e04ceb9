#include "backends/ssh/ssh_backend.h"

#include <algorithm>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

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
  auto b = LoadBundle(ctx.agent_binary, "ssh backend");
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(new SshBackend(ctx, std::move(o), std::move(b).value()));
}

SshBackend::SshBackend(BackendContext ctx, Options opts, Bundle bundle)
    : ctx_(std::move(ctx)), opts_(std::move(opts)), installer_(std::move(bundle)) {
  const std::string control_dir = SshConnection::ControlDir(ctx_.data_dir, ctx_.pool);
  for (const Host& h : opts_.hosts) {
    hosts_.emplace_back(h, opts_.known_hosts, opts_.proxy_jump, control_dir, &groups_);
    install_mu_.push_back(std::make_unique<std::mutex>());
  }
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
  const std::string start = StartScript(installer_.bundle(), args);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = hosts_[i].Run(start, EnvFile(env), deadline);
    if (!r.ok()) return r.status();
    if (!r->ok()) return hosts_[i].Failure(*r, "starting the agent");
    if (r->out.find("STARTED") != std::string::npos) return Status::Ok();
    if (r->out.find("NEED-INSTALL") == std::string::npos || attempt > 0) {
      return Internal(fmt::format("{}: the start script answered \"{}\"", h.Display(), FirstLine(r->out)));
    }
    std::lock_guard install(*install_mu_[i]);  // one install per host at a time
    if (Status s = installer_.Install(hosts_[i], opts_.agent_path, deadline); !s.ok()) return s;
  }
  return Internal("unreachable");
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
      auto l = name_locks_.For(name);
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
  auto l = name_locks_.For(name);
  std::lock_guard hold(*l);  // a create of this name still running finishes first
  const SshConnection& c = hosts_[static_cast<size_t>(i)];
  auto r = c.Run(StopScript(ctx_.pool, name, kStopGraceSeconds), "", deadline);
  if (!r.ok()) return r.status();
  if (!r->ok() || r->out.find("STOPPED") == std::string::npos) return c.Failure(*r, "stopping the agent");
  std::lock_guard lock(mu_);
  where_.erase(name);
  return Status::Ok();
}

Result<std::vector<ListedWorker>> SshBackend::List(Deadline deadline) {
  const std::string script = ListScript(ctx_.pool);
  std::vector<std::future<Result<SubprocessResult>>> runs;
  for (size_t i = 0; i < opts_.hosts.size(); ++i) {
    runs.push_back(std::async(std::launch::async, [this, i, &script, deadline] { return hosts_[i].Run(script, "", deadline); }));
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
    else if (!r->ok() || r->out.find("LISTED") == std::string::npos) failed = hosts_[i].Failure(*r, "listing agents");
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
