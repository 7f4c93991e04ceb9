#include "backends/local/local_backend.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/crypto.h"
#include "common/fs.h"
#include "common/process.h"

namespace tidepool::backends {

Result<std::unique_ptr<Backend>> LocalBackend::Make(const config::BackendConfig& cfg, const BackendContext& ctx) {
  auto millis = [&](const char* field) {
    bool set = cfg.fields.contains(field) && cfg.fields[field].is_number_integer();
    return std::chrono::milliseconds(set ? cfg.fields[field].get<int64_t>() : 0);
  };
  auto backend = std::unique_ptr<LocalBackend>(new LocalBackend(ctx, millis("boot_delay"), millis("api_delay")));
  if (Status s = MakeDirs(ctx.data_dir + "/backends/local"); !s.ok()) return s;
  if (Status s = MakeDirs(backend->log_dir_); !s.ok()) return s;
  backend->LoadLedger();
  return std::unique_ptr<Backend>(std::move(backend));
}

LocalBackend::LocalBackend(BackendContext ctx, std::chrono::milliseconds boot_delay,
                           std::chrono::milliseconds api_delay)
    : ctx_(std::move(ctx)),
      boot_delay_(boot_delay),
      api_delay_(api_delay),
      ledger_path_(ctx_.data_dir + "/backends/local/" + ctx_.pool + ".ledger"),
      log_dir_(ctx_.data_dir + "/workers") {}

void LocalBackend::LoadLedger() {
  auto text = ReadFile(ledger_path_);
  if (!text.ok()) return;
  std::istringstream in(*text);
  std::string name;
  Entry e;
  while (in >> name >> e.pid >> e.start_time) ledger_[name] = e;
}

Status LocalBackend::SaveLedgerLocked() {
  std::string out;
  for (const auto& [name, e] : ledger_) out += fmt::format("{} {} {}\n", name, e.pid, e.start_time);
  return WriteFileAtomic(ledger_path_, out, 0600);
}

bool LocalBackend::Alive(const Entry& e) {
  auto st = ReadProcStat(e.pid);
  if (!st || st->start_time != e.start_time) return false;
  if (st->state == 'Z') {
    ::waitpid(e.pid, nullptr, WNOHANG);  // our child: reap it
    return false;
  }
  return st->state != 'X';
}

Result<std::string> LocalBackend::Create(const CreateRequest& req, Deadline deadline) {
  (void)deadline;  // spawning is immediate; api_delay simulates a slow API on purpose
  std::string name = fmt::format("{}-{}", req.pool, RandomId(6));
  SpawnOptions o;
  o.env = CurrentEnvironment();
  // The server's own TIDEPOOL_* settings are not the agent's; the host's TLS settings and who
  // runs tasks here (agent/task_users.h) are shared.
  std::erase_if(o.env, [](const std::string& kv) {
    bool host_setting = kv.rfind("TIDEPOOL_TLS_", 0) == 0 || kv.rfind("TIDEPOOL_TASK_UID", 0) == 0 ||
                        kv.rfind("TIDEPOOL_RUN_TASKS_AS=", 0) == 0;
    return (kv.rfind("TIDEPOOL_", 0) == 0 && !host_setting) || kv.rfind("AGENT_NAME=", 0) == 0;
  });
  // `tidepool-agent` when it is beside the server and no TLS is to be spoken: `tidepool agent`
  // would exec it anyway, after loading gRPC for nothing (~12 ms per worker here).
  bool tls = std::any_of(o.env.begin(), o.env.end(), [](const std::string& kv) {
    return (kv.rfind("TIDEPOOL_TLS_CA=", 0) == 0 || kv.rfind("TIDEPOOL_TLS_CERT=", 0) == 0) && kv.back() != '=';
  });
  std::string lean = tls ? "" : ProgramBeside(ctx_.agent_binary, "tidepool-agent");
  bool use_lean = !lean.empty();
  std::vector<std::string> agent = use_lean ? std::vector<std::string>{lean}
                                            : std::vector<std::string>{ctx_.agent_binary, "agent"};
  if (boot_delay_.count() > 0) {
    // The simulated boot: the process exists at once (as a VM would), the agent starts later.
    o.argv = {"/bin/sh", "-c", fmt::format("sleep {:.3f}; exec \"$0\"{}", boot_delay_.count() / 1000.0,
                                           use_lean ? "" : " agent"),
              agent[0]};
  } else {
    o.argv = agent;
  }
  o.env.push_back("TIDEPOOL_SERVER=" + req.server_address);
  o.env.push_back("TIDEPOOL_POOL=" + req.pool);
  o.env.push_back("TIDEPOOL_WORKER_NAME=" + name);
  o.env.push_back("TIDEPOOL_WORKER_TOKEN=" + req.token_for(name));
  o.env.push_back(fmt::format("TIDEPOOL_SLOTS={}", req.slots));
  o.stdout_path = log_dir_ + "/" + name + ".log";
  o.stderr_path = o.stdout_path;
  o.new_session = true;
  SpawnResult r = Spawn(o);
  if (r.pid < 0) {
    // No agent program is a configuration problem (bad_request: asking again will not help).
    std::string msg = fmt::format("cannot start agent: {}", r.message);
    return r.error == SpawnError::kNotFound ? MakeError(ErrorClass::kBadRequest, std::move(msg)) : Unavailable(std::move(msg));
  }
  auto st = ReadProcStat(r.pid);
  {
    std::lock_guard lock(mu_);
    creating_.insert(name);
  }
  // The simulated slow API: the create has not answered yet, yet the agent may already have
  // connected and the pool may delete it by name: that delete waits for this create.
  if (api_delay_.count() > 0) std::this_thread::sleep_for(api_delay_);
  std::lock_guard lock(mu_);
  creating_.erase(name);
  ledger_[name] = Entry{r.pid, st ? st->start_time : 0};
  if (Status s = SaveLedgerLocked(); !s.ok()) spdlog::warn("local backend: {}", s.message());
  created_.notify_all();
  return name;
}

Status LocalBackend::Delete(const std::string& name, Deadline deadline) {
  Entry e;
  {
    std::unique_lock lock(mu_);
    // Its create is still running: wait for it, so what it makes is deleted too.
    if (!created_.wait_until(lock, deadline, [&] { return !creating_.count(name); })) {
      return DeadlineExceeded(fmt::format("delete {}: its create is still running", name));
    }
    auto it = ledger_.find(name);
    if (it == ledger_.end()) return Status::Ok();  // not ours or already gone
    e = it->second;
  }
  if (Alive(e)) {
    ::kill(-e.pid, SIGTERM);
    ::kill(e.pid, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + kKillGrace;
    while (Alive(e) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (Alive(e)) {
      ::kill(-e.pid, SIGKILL);
      ::kill(e.pid, SIGKILL);
      while (Alive(e)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::lock_guard lock(mu_);
  ledger_.erase(name);
  if (Status s = SaveLedgerLocked(); !s.ok()) return s;
  return Status::Ok();
}

Result<std::vector<ListedWorker>> LocalBackend::List(Deadline deadline) {
  (void)deadline;  // reads /proc only
  std::lock_guard lock(mu_);
  std::vector<ListedWorker> out;
  bool changed = false;
  for (auto it = ledger_.begin(); it != ledger_.end();) {
    if (Alive(it->second)) {
      out.push_back({it->first, WorkerState::kRunning, "", ""});
      ++it;
    } else {
      it = ledger_.erase(it);
      changed = true;
    }
  }
  if (changed) {
    if (Status s = SaveLedgerLocked(); !s.ok()) spdlog::warn("local backend: {}", s.message());
  }
  return out;
}

}  // namespace tidepool::backends
