#include "backends/command/command_backend.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "common/process.h"
#include "common/strings.h"

namespace tidepool::backends {

namespace {

constexpr size_t kMaxStdout = size_t{16} << 20;  // far beyond any real list; bounds memory

std::string StringField(const nlohmann::json& fields, const char* key) {
  auto it = fields.find(key);
  return it != fields.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Result<std::unique_ptr<Backend>> CommandBackend::Make(const config::BackendConfig& cfg, const BackendContext& ctx) {
  std::string start = StringField(cfg.fields, "start");
  std::string stop = StringField(cfg.fields, "stop");
  std::string list = StringField(cfg.fields, "list");
  for (auto [key, value] : {std::pair{"start", &start}, {"stop", &stop}, {"list", &list}}) {
    if (Trim(*value).empty()) return InvalidArgument(fmt::format("command backend: `{}` is required", key));
  }
  std::chrono::milliseconds timeout = kDefaultTimeout;
  if (auto it = cfg.fields.find("timeout"); it != cfg.fields.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      return InvalidArgument("command backend: `timeout` must be a positive duration");
    }
    timeout = std::chrono::milliseconds(it->get<int64_t>());
  }
  std::string batch = StringField(cfg.fields, "batch_start");
  if (Trim(batch).empty()) batch.clear();
  return std::unique_ptr<Backend>(new CommandBackend(ctx, std::move(start), std::move(stop), std::move(list),
                                                     std::move(batch), timeout));
}

CommandBackend::CommandBackend(BackendContext ctx, std::string start, std::string stop, std::string list,
                               std::string batch_start, std::chrono::milliseconds timeout)
    : ctx_(std::move(ctx)),
      start_(std::move(start)),
      stop_(std::move(stop)),
      list_(std::move(list)),
      batch_start_(std::move(batch_start)),
      timeout_(timeout) {}

CommandBackend::~CommandBackend() = default;

void CommandBackend::Abandon() {
  running_.Abandon();
  spdlog::debug("command backend: pool {}: calls abandoned", ctx_.pool);
}

std::vector<std::string> CommandBackend::BaseEnv(const std::string& server, int slots) const {
  std::vector<std::string> env = CurrentEnvironment();
  // A stale identity inherited from the server's own environment must not reach an agent.
  std::erase_if(env, [](const std::string& kv) {
    // The server's own TIDEPOOL_* settings are not the scripts'; TLS settings are shared.
    return (kv.rfind("TIDEPOOL_", 0) == 0 && kv.rfind("TIDEPOOL_TLS_", 0) != 0) || kv.rfind("WORKER_NAME=", 0) == 0;
  });
  env.push_back("TIDEPOOL_SERVER=" + server);
  env.push_back("TIDEPOOL_POOL=" + ctx_.pool);
  env.push_back(fmt::format("TIDEPOOL_SLOTS={}", slots));
  return env;
}

void CommandBackend::AddTokenEnv(const CreateRequest& req, std::vector<std::string>& env) const {
  std::string cmd = !req.token_command.empty() ? req.token_command : ctx_.agent_binary + " worker-token";
  env.push_back("TIDEPOOL_WORKER_TOKEN_FOR=" + cmd);
  env.push_back("TIDEPOOL_DATA_DIR=" + ctx_.data_dir);
}

Result<std::string> CommandBackend::Create(const CreateRequest& req, Deadline deadline) {
  std::vector<std::string> env =
      BaseEnv(req.server_address.empty() ? ctx_.server_address : req.server_address, req.slots);
  AddTokenEnv(req, env);
  auto out = Run("start", start_, {}, env, deadline);
  if (!out.ok()) return out.status();
  std::vector<std::string> lines = NonEmptyLines(*out);
  return lines.empty() ? std::string() : lines.back();  // earlier lines are progress chatter
}

Status CommandBackend::Delete(const std::string& name, Deadline deadline) {
  std::vector<std::string> env = BaseEnv(ctx_.server_address, ctx_.slots);
  env.push_back("WORKER_NAME=" + name);
  return Run("stop", stop_, {name}, env, deadline).status();
}

Result<std::vector<ListedWorker>> CommandBackend::List(Deadline deadline) {
  auto out = Run("list", list_, {}, BaseEnv(ctx_.server_address, ctx_.slots), deadline);
  if (!out.ok()) return out.status();
  std::vector<ListedWorker> workers;
  for (const std::string& line : Split(*out, '\n')) {
    std::vector<std::string> f = SplitWhitespace(line);
    if (f.empty()) continue;
    // The name is checked by the pool (autoscaler/answers.h), which is told the whole line.
    std::string status = f.size() > 1 ? f[1] : "";
    WorkerState state = StateOf(status);
    if (IsWorker(state)) workers.push_back({f[0], state, status, std::string(Trim(line))});
  }
  return workers;
}

Result<std::vector<std::string>> CommandBackend::CreateBatch(const CreateRequest& req, int count,
                                                             const std::string& label, Deadline deadline) {
  if (batch_start_.empty()) return Backend::CreateBatch(req, count, label, deadline);
  if (count <= 0) return InvalidArgument(fmt::format("batch_start: count must be positive, got {}", count));
  std::vector<std::string> env =
      BaseEnv(req.server_address.empty() ? ctx_.server_address : req.server_address, req.slots);
  AddTokenEnv(req, env);
  auto out = Run("batch_start", batch_start_, {std::to_string(count), label}, env, deadline);
  if (!out.ok()) return out.status();
  std::vector<std::string> names = NonEmptyLines(*out);
  if (names.size() != static_cast<size_t>(count)) {
    return Internal(fmt::format("batch_start printed {} names for a batch of {}", names.size(), count));
  }
  return names;
}

WorkerState CommandBackend::StateOf(std::string_view status) {
  std::string s(status);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "stopped" || s == "terminated" || s == "suspended") return WorkerState::kStopped;
  if (s == "terminating") return WorkerState::kStopping;
  if (s == "pending" || s == "starting" || s == "provisioning" || s == "booting") return WorkerState::kPending;
  return WorkerState::kRunning;
}

ErrorClass CommandBackend::ClassOfStderr(std::string_view err) {
  std::vector<std::string> lines = NonEmptyLines(err);
  if (lines.empty()) return ErrorClass::kTransient;
  std::string_view last = lines.back();
  for (ErrorClass c : {ErrorClass::kOutOfCapacity, ErrorClass::kQuota, ErrorClass::kAuth, ErrorClass::kBadRequest,
                       ErrorClass::kTransient}) {
    std::string_view name = ErrorClassName(c);
    if (last.size() > name.size() && last.starts_with(name) && last[name.size()] == ':') return c;
  }
  return ErrorClass::kTransient;
}

Result<std::string> CommandBackend::Run(std::string_view op, const std::string& script,
                                        const std::vector<std::string>& args, const std::vector<std::string>& env,
                                        Deadline deadline) const {
  // The script's own `timeout`, or the pool's deadline if that comes first.
  const auto now = Clock::now();
  const auto budget = std::min(timeout_, std::chrono::ceil<std::chrono::milliseconds>(deadline - now));
  SubprocessSpec spec = BashScript(script, args);
  spec.env = env;
  spec.deadline = now + budget;
  spec.stdout_cap = kMaxStdout;
  spec.groups = &running_;
  auto ran = RunSubprocess(spec);
  if (!ran.ok()) return Status(ran.status().code(), fmt::format("{}: {}", op, ran.status().message()));
  const SubprocessResult& r = *ran;
  if (r.timed_out) {
    spdlog::debug("command backend: pool {}: {} timed out", ctx_.pool, op);
    return DeadlineExceeded(fmt::format("{} timed out after {}", op, FormatDuration(std::max(budget, {}))));
  }
  if (r.ok()) {
    if (r.stdout_overflow) return Internal(fmt::format("{}: more than {} bytes on stdout", op, kMaxStdout));
    spdlog::debug("command backend: pool {}: {} ok in {}", ctx_.pool, op, FormatDuration(r.took));
    return r.out;
  }
  std::string tail = StderrTail(r.err);
  std::string msg = tail.empty() ? fmt::format("{} failed: {} with no output", op, r.Describe())
                                 : fmt::format("{} failed ({}): {}", op, r.Describe(), tail);
  // Not the stderr itself: it may hold secrets, and is logged once scrubbed (redacting_backend.h).
  spdlog::debug("command backend: pool {}: {} failed: {} in {}", ctx_.pool, op, r.Describe(), FormatDuration(r.took));
  ErrorClass cls = ClassOfStderr(r.err);
  // Unclassed failures keep their old code (UNKNOWN): transient either way.
  return cls == ErrorClass::kTransient ? Status(StatusCode::kUnknown, std::move(msg)) : MakeError(cls, std::move(msg));
}

}  // namespace tidepool::backends
