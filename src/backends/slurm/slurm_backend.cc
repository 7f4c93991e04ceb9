#include "backends/slurm/slurm_backend.h"

#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backends/slurm/scripts.h"
#include "backends/slurm/slurm_time.h"
#include "backends/slurm/squeue.h"
#include "common/fs.h"
#include "common/process.h"
#include "common/random.h"
#include "common/strings.h"
#include "common/worker_name.h"

namespace tidepool::backends::slurm {

namespace {

std::string Str(const nlohmann::json& f, const char* key) {
  auto it = f.find(key);
  return it != f.end() && it->is_string() ? it->get<std::string>() : "";
}

bool Has(std::string_view said, std::string_view what) { return said.find(what) != std::string_view::npos; }

}  // namespace

ErrorClass ClassifySlurmError(std::string_view said) {
  // Slurm's own wording (slurm_errno.c), as sbatch prints it after "Batch job submission failed: ".
  if (Has(said, "Unable to contact slurm controller") || Has(said, "Socket timed out") ||
      Has(said, "Connection refused") || Has(said, "Zero Bytes were transmitted") || Has(said, "try again")) {
    return ErrorClass::kTransient;
  }
  if (Has(said, "MaxSubmit") || Has(said, "submit limit") || Has(said, "job submit limit") ||
      Has(said, "QOSMax") || Has(said, "AssocMax") || Has(said, "Job violates accounting/QOS policy")) {
    return ErrorClass::kQuota;
  }
  if (Has(said, "Access/permission denied") || Has(said, "Invalid user id") || Has(said, "not permitted") ||
      Has(said, "Authentication") || Has(said, "credential")) {
    return ErrorClass::kAuth;
  }
  if (Has(said, "Invalid") || Has(said, "invalid") || Has(said, "not available") || Has(said, "Unrecognized") ||
      Has(said, "unrecognized") || Has(said, "exceeds") || Has(said, "More processors requested") ||
      Has(said, "Memory specification") || Has(said, "unknown")) {
    return ErrorClass::kBadRequest;
  }
  return ErrorClass::kTransient;
}

Result<std::unique_ptr<Backend>> SlurmBackend::Make(const config::BackendConfig& cfg, const BackendContext& ctx) {
  const nlohmann::json& f = cfg.fields;
  Options o;
  auto flag = [&](const char* key, const char* option) {
    if (std::string v = Str(f, key); !v.empty()) o.sbatch_args.push_back(fmt::format("--{}={}", option, v));
  };
  flag("partition", "partition");
  flag("account", "account");
  flag("qos", "qos");
  if (std::string limit = Str(f, "time_limit"); !limit.empty()) {
    auto arg = SlurmTimeArg(limit);
    if (!arg.ok()) return InvalidArgument("slurm backend: time_limit: " + arg.status().message());
    o.sbatch_args.push_back("--time=" + *arg);
  }
  if (auto it = f.find("cpus_per_task"); it != f.end() && it->is_number_integer() && it->get<int>() > 0) {
    o.sbatch_args.push_back(fmt::format("--cpus-per-task={}", it->get<int>()));
  }
  flag("mem", "mem");
  flag("gres", "gres");
  if (auto it = f.find("sbatch_args"); it != f.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (a.is_string()) o.sbatch_args.push_back(a.get<std::string>());
    }
  }
  o.prefix = Str(f, "job_name_prefix");
  if (o.prefix.empty()) o.prefix = "tp-" + ctx.pool;
  if (auto it = f.find("drain_before"); it != f.end() && it->is_number_integer()) o.drain_before_ms = it->get<int64_t>();
  o.agent_path = Str(f, "agent_path");
  o.output_dir = Str(f, "output_dir");
  std::optional<ssh::Bundle> bundle;
  if (auto it = f.find("login"); it != f.end() && it->is_object()) {
    nlohmann::json entry = *it;
    o.known_hosts = Str(entry, "known_hosts");
    o.proxy_jump = Str(entry, "proxy_jump");
    entry.erase("known_hosts");
    entry.erase("proxy_jump");
    auto hosts = ssh::ParseHosts(nlohmann::json{{"hosts", nlohmann::json::array({entry})}});
    if (!hosts.ok()) return InvalidArgument("slurm backend: login: " + hosts.status().message());
    o.login = hosts->at(0);
    if (o.agent_path.empty()) o.agent_path = ".tidepool/bin/tidepool-agent";
    if (o.output_dir.empty()) o.output_dir = ".tidepool/slurm/" + ctx.pool;
    auto b = ssh::LoadBundle(ctx.agent_binary, "slurm backend (login)");
    if (!b.ok()) return b.status();
    bundle = std::move(b).value();
  } else {
    if (o.agent_path.empty()) o.agent_path = ProgramBeside(ctx.agent_binary, "tidepool-agent");
    if (o.agent_path.empty()) {
      return FailedPrecondition(fmt::format("slurm backend: no tidepool-agent beside {}; set agent_path to the agent "
                                            "as the compute nodes see it",
                                            ctx.agent_binary));
    }
    if (o.output_dir.empty()) o.output_dir = ctx.data_dir + "/slurm/" + ctx.pool;
  }
  return std::unique_ptr<Backend>(new SlurmBackend(ctx, std::move(o), std::move(bundle)));
}

SlurmBackend::SlurmBackend(BackendContext ctx, Options opts, std::optional<ssh::Bundle> bundle)
    : ctx_(std::move(ctx)), opts_(std::move(opts)) {
  if (opts_.login) {
    login_.emplace(*opts_.login, opts_.known_hosts, opts_.proxy_jump,
                   ssh::SshConnection::ControlDir(ctx_.data_dir, ctx_.pool), &groups_);
    installer_ = std::make_unique<ssh::Installer>(std::move(*bundle));
  }
}

Result<SubprocessResult> SlurmBackend::Run(const std::string& script, const std::string& stdin_data,
                                           Deadline deadline) {
  if (login_) return login_->Run(script, stdin_data, deadline);
  SubprocessSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  // What Slurm's commands need (SLURM_CONF and the like) and nothing else of the server's: the
  // job gets this environment (sbatch --export=ALL), and the server's may hold secrets.
  for (const std::string& kv : CurrentEnvironment()) {
    for (const char* keep : {"PATH=", "HOME=", "USER=", "LOGNAME=", "LANG=", "LC_", "TZ=", "SLURM_"}) {
      if (kv.rfind(keep, 0) == 0) {
        spec.env.push_back(kv);
        break;
      }
    }
  }
  spec.stdin_data = stdin_data;
  spec.deadline = deadline;
  spec.groups = &groups_;
  return RunSubprocess(spec);
}

Status SlurmBackend::Failure(const SubprocessResult& r, std::string_view doing) const {
  if (login_ && (r.timed_out || r.exit_code == 255)) return login_->Failure(r, doing);
  if (r.timed_out) return DeadlineExceeded(fmt::format("{}: no answer before the call's deadline", doing));
  std::string said = StderrTail(r.err);
  if (said.empty()) said = r.Describe();
  if (r.exit_code == 127) return MakeError(ErrorClass::kBadRequest, fmt::format("{}: {}", doing, said));
  return MakeError(ClassifySlurmError(said), fmt::format("{}: {}", doing, said));
}

std::string SlurmBackend::NewStem() { return opts_.prefix + "-" + HexEncode(RandomBytes(4)); }

Status SlurmBackend::Submit(const std::string& job_name, const std::vector<std::string>& names,
                            const CreateRequest& request, Deadline deadline) {
  if (installer_) {
    std::lock_guard lock(install_mu_);
    if (!installed_) {
      if (Status s = installer_->Ensure(*login_, opts_.agent_path, deadline); !s.ok()) return s;
      installed_ = true;
    }
  }
  SubmitArgs a;
  a.job_name = job_name;
  a.nodes = static_cast<int>(names.size());
  a.worker_names = names;
  a.sbatch_args = opts_.sbatch_args;
  a.env = {{"TIDEPOOL_SERVER", request.server_address},
           {"TIDEPOOL_POOL", request.pool},
           {"TIDEPOOL_SLOTS", std::to_string(request.slots)},
           {"TIDEPOOL_AGENT_DRAIN_BEFORE", fmt::format("{}ms", opts_.drain_before_ms)}};
  a.agent = opts_.agent_path;
  a.output_dir = opts_.output_dir;
  std::string tokens;
  for (const std::string& n : names) tokens += request.token_for(n) + "\n";
  auto r = Run(SubmitScript(a), tokens, deadline);
  Status failed;
  if (!r.ok()) failed = r.status();
  else if (!r->ok()) failed = Failure(*r, "submitting the job");
  else if (std::string id(Trim(r->out)); id.empty() || id.find_first_not_of("0123456789;_-.abcdefghijklmnopqrstuvwxyz") != std::string::npos) {
    failed = Internal(fmt::format("sbatch answered {} instead of a job id", QuoteForLog(id)));
  } else {
    spdlog::info("pool {}: submitted Slurm job {} ({})", ctx_.pool, id, job_name);
    return Status::Ok();
  }
  // It may have reached the controller all the same (a timeout, a lost answer): leave nothing behind.
  if (!r.ok() || r->timed_out || r->ok()) {
    auto c = Run(CancelJobScript(job_name), "", Clock::now() + std::chrono::seconds(30));
    if (!c.ok() || !c->ok()) spdlog::warn("pool {}: could not cancel job {} after a failed submit", ctx_.pool, job_name);
  }
  return failed;
}

Result<std::string> SlurmBackend::Create(const CreateRequest& request, Deadline deadline) {
  const std::string name = NewStem();
  auto l = name_locks_.For(name);
  std::lock_guard hold(*l);
  if (Status s = Submit(name, {name}, request, deadline); !s.ok()) return s;
  return name;
}

Result<std::vector<std::string>> SlurmBackend::CreateBatch(const CreateRequest& request, int count,
                                                           const std::string& label, Deadline deadline) {
  (void)label;
  if (count < 1) return InvalidArgument("a batch needs at least one worker");
  const std::string stem = NewStem();
  const std::string job = BatchJobName(stem, count);
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(BatchWorkerName(stem, count, i));
  std::vector<std::shared_ptr<std::mutex>> locks;
  for (const auto& n : names) locks.push_back(name_locks_.For(n));
  std::vector<std::unique_lock<std::mutex>> held;
  for (auto& l : locks) held.emplace_back(*l);
  if (Status s = Submit(job, names, request, deadline); !s.ok()) return s;
  return names;
}

Status SlurmBackend::Delete(const std::string& name, Deadline deadline) {
  // Not ours by name: nothing to cancel. A batch worker is "<stem>-x<N>-<i>".
  std::string job = name;
  bool batch_worker = false;
  bool whole = true;
  if (JobName own = ParseJobName(name, opts_.prefix); own.count != 1 || own.stem != name) {
    size_t dash = name.rfind('-');
    if (dash == std::string::npos) return Status::Ok();
    job = name.substr(0, dash);
    JobName j = ParseJobName(job, opts_.prefix);
    if (j.count < 2 || job != BatchJobName(j.stem, j.count)) return Status::Ok();
    batch_worker = true;
    std::lock_guard lock(mu_);
    deleted_.insert(name);
    for (int i = 0; i < j.count; ++i) whole = whole && deleted_.count(BatchWorkerName(j.stem, j.count, i));
  }
  auto l = name_locks_.For(name);
  std::lock_guard hold(*l);  // a create of this name still running finishes first
  auto r = Run(batch_worker ? CancelStepScript(job, name, whole) : CancelJobScript(job), "", deadline);
  if (!r.ok()) return r.status();
  if (!r->ok() || r->out.find("CANCELLED") == std::string::npos) return Failure(*r, "cancelling the job");
  return Status::Ok();
}

Result<std::vector<ListedWorker>> SlurmBackend::List(Deadline deadline) {
  auto r = Run(ListScript(), "", deadline);
  if (!r.ok()) return r.status();
  if (!r->ok() || r->out.find("LISTED") == std::string::npos) return Failure(*r, "listing the jobs");
  const std::string& out = r->out;
  size_t steps_at = out.find("STEPS\n");
  if (steps_at == std::string::npos) return Internal("squeue: the list script's answer has no STEPS line");
  std::vector<Job> jobs = ParseJobs(std::string_view(out).substr(0, steps_at));
  std::vector<Step> steps = ParseSteps(std::string_view(out).substr(steps_at + 6));
  std::lock_guard lock(mu_);
  return WorkersOf(jobs, steps, opts_.prefix, deleted_, kStepGraceSeconds);
}

}  // namespace tidepool::backends::slurm
