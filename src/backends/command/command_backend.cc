#include "backends/command/command_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/duration.h"
#include "common/process.h"
#include "common/strings.h"

namespace tidepool::backends {

namespace {

constexpr size_t kMaxStdout = size_t{16} << 20;  // far beyond any real list; bounds memory
constexpr size_t kStderrKept = size_t{64} << 10;  // only the tail ends up in an error
constexpr size_t kErrorLines = 5;
constexpr size_t kErrorBytes = 1024;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Collects a pipe's bytes: all of them (stdout, up to a cap) or only the tail (stderr).
struct Sink {
  std::string data;
  size_t limit = 0;
  bool keep_tail = false;
  bool overflow = false;

  void Append(const char* p, size_t n) {
    data.append(p, n);
    if (data.size() <= limit) return;
    if (keep_tail) {
      data.erase(0, data.size() - limit);
    } else {
      data.resize(limit);
      overflow = true;
    }
  }
};

// Reads what the non-blocking pipe holds right now, at most `budget` bytes (a child that
// writes forever must not pin us here). Closes the fd at EOF.
void ReadAvailable(Fd& fd, Sink& sink, size_t budget) {
  char buf[65536];
  while (fd.get() >= 0 && budget > 0) {
    ssize_t n = ::read(fd.get(), buf, std::min(sizeof buf, budget));
    if (n > 0) {
      sink.Append(buf, static_cast<size_t>(n));
      budget -= static_cast<size_t>(n);
    } else if (n == 0) {
      fd.Reset();
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN) fd.Reset();
      return;
    }
  }
}

std::vector<std::string> NonEmptyLines(std::string_view text) {
  std::vector<std::string> out;
  for (const std::string& line : Split(text, '\n')) {
    std::string_view t = Trim(line);
    if (!t.empty()) out.emplace_back(t);
  }
  return out;
}

// The last few non-empty lines of stderr, at most ~1 KiB, cut on a UTF-8 boundary.
std::string StderrTail(std::string_view err) {
  std::vector<std::string> lines = NonEmptyLines(err);
  if (lines.size() > kErrorLines) lines.erase(lines.begin(), lines.end() - kErrorLines);
  std::string tail = Join(lines, "\n");
  if (tail.size() > kErrorBytes) {
    size_t cut = tail.size() - kErrorBytes;
    while (cut < tail.size() && (static_cast<unsigned char>(tail[cut]) & 0xC0) == 0x80) ++cut;
    tail = "…" + tail.substr(cut);
  }
  return tail;
}

std::string StringField(const nlohmann::json& fields, const char* key) {
  auto it = fields.find(key);
  return it != fields.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool NotAWorker(std::string status) {
  std::transform(status.begin(), status.end(), status.begin(), [](unsigned char c) { return std::tolower(c); });
  return status == "stopped" || status == "terminated" || status == "terminating" || status == "suspended";
}

}  // namespace

// Every script's process group from its spawn until it is reaped. Killing and reaping happen
// under one lock, so a group is never signalled after its leader was reaped (its id may be
// reused by then).
struct CommandBackend::Running {
  std::mutex mu;
  bool abandoned = false;
  std::set<pid_t> groups;

  bool abandoned_now() {
    std::lock_guard lock(mu);
    return abandoned;
  }
  // A script was spawned. After Abandon it is killed at once.
  void Add(pid_t pid) {
    std::lock_guard lock(mu);
    if (abandoned) {
      ::kill(-pid, SIGKILL);
    } else {
      groups.insert(pid);
    }
  }
  // waitpid(WNOHANG); a reaped script leaves the set in the same step.
  pid_t Reap(pid_t pid, int* wstatus) {
    std::lock_guard lock(mu);
    pid_t w;
    do w = ::waitpid(pid, wstatus, WNOHANG);
    while (w < 0 && errno == EINTR);
    if (w != 0) groups.erase(pid);
    return w;
  }
  // Kills the group of a script not yet reaped, which the caller then reaps.
  void Kill(pid_t pid) {
    std::lock_guard lock(mu);
    groups.erase(pid);
    ::kill(-pid, SIGKILL);
  }
  void Abandon() {
    std::lock_guard lock(mu);
    abandoned = true;
    for (pid_t pid : groups) ::kill(-pid, SIGKILL);
  }
};

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
      timeout_(timeout),
      running_(std::make_unique<Running>()) {}

CommandBackend::~CommandBackend() = default;

void CommandBackend::Abandon() {
  running_->Abandon();
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

Result<std::string> CommandBackend::Create(const CreateRequest& req) {
  std::vector<std::string> env =
      BaseEnv(req.server_address.empty() ? ctx_.server_address : req.server_address, req.slots);
  AddTokenEnv(req, env);
  auto out = Run("start", start_, {}, env);
  if (!out.ok()) return out.status();
  std::vector<std::string> lines = NonEmptyLines(*out);
  return lines.empty() ? std::string() : lines.back();  // earlier lines are progress chatter
}

Status CommandBackend::Delete(const std::string& name) {
  std::vector<std::string> env = BaseEnv(ctx_.server_address, ctx_.slots);
  env.push_back("WORKER_NAME=" + name);
  return Run("stop", stop_, {name}, env).status();
}

Result<std::vector<ListedWorker>> CommandBackend::List() {
  auto out = Run("list", list_, {}, BaseEnv(ctx_.server_address, ctx_.slots));
  if (!out.ok()) return out.status();
  std::vector<ListedWorker> workers;
  for (const std::string& line : Split(*out, '\n')) {
    std::vector<std::string> f = SplitWhitespace(line);
    if (f.empty()) continue;
    // The name is checked by the pool (autoscaler/answers.h), which is told the whole line.
    ListedWorker w{f[0], f.size() > 1 ? f[1] : "", std::string(Trim(line))};
    if (!NotAWorker(w.status)) workers.push_back(std::move(w));
  }
  return workers;
}

Result<std::vector<std::string>> CommandBackend::CreateBatch(const CreateRequest& req, int count,
                                                             const std::string& label) {
  if (batch_start_.empty()) return Backend::CreateBatch(req, count, label);
  if (count <= 0) return InvalidArgument(fmt::format("batch_start: count must be positive, got {}", count));
  std::vector<std::string> env =
      BaseEnv(req.server_address.empty() ? ctx_.server_address : req.server_address, req.slots);
  AddTokenEnv(req, env);
  auto out = Run("batch_start", batch_start_, {std::to_string(count), label}, env);
  if (!out.ok()) return out.status();
  std::vector<std::string> names = NonEmptyLines(*out);
  if (names.size() != static_cast<size_t>(count)) {
    return Internal(fmt::format("batch_start printed {} names for a batch of {}", names.size(), count));
  }
  return names;
}

Result<std::string> CommandBackend::Run(std::string_view op, const std::string& script,
                                        const std::vector<std::string>& args,
                                        const std::vector<std::string>& env) const {
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + timeout_;
  auto sys_error = [&](const char* what) {
    return Internal(fmt::format("{}: {}: {}", op, what, std::strerror(errno)));
  };
  if (running_->abandoned_now()) return Unavailable(fmt::format("{}: not run, the server is stopping", op));

  // The script goes on stdin from a memfd: bash reads it at its own pace, we never block on a
  // write, and a script that exits early cannot SIGPIPE us.
  Fd script_fd(::memfd_create("tidepool-command", MFD_CLOEXEC));
  if (script_fd.get() < 0) return sys_error("memfd_create");
  for (size_t off = 0; off < script.size();) {
    ssize_t n = ::write(script_fd.get(), script.data() + off, script.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("writing the script");
    off += static_cast<size_t>(n);
  }
  if (::lseek(script_fd.get(), 0, SEEK_SET) < 0) return sys_error("lseek");

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return sys_error("pipe");
  Fd err_r(err_pipe[0]), err_w(err_pipe[1]);
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);

  SpawnOptions o;
  o.argv = {"bash", "-s", "--"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = env;
  o.new_session = true;  // its own process group, killed as a whole on timeout
  o.stdin_fd = script_fd.get();
  o.stdout_fd = out_w.get();
  o.stderr_fd = err_w.get();
  SpawnResult spawned = Spawn(o);
  script_fd.Reset();
  out_w.Reset();  // only the script may hold the write ends, or EOF would never come
  err_w.Reset();
  if (spawned.pid < 0) return Internal(fmt::format("{}: cannot run bash: {}", op, spawned.message));
  const pid_t pid = spawned.pid;
  running_->Add(pid);

  // Readable once bash exits. Without pidfds (old kernels) we poll in short slices.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  Sink out{.limit = kMaxStdout};
  Sink err{.limit = kStderrKept, .keep_tail = true};
  // Kills the group before reaping bash, so the group id cannot have been reused.
  auto kill_group = [this, pid] {
    running_->Kill(pid);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  };
  int wstatus = 0;
  bool exited = false;
  while (!exited) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    int wait_ms = static_cast<int>(std::min<int64_t>(left.count(), pidfd.get() >= 0 ? 60000 : 20));
    pollfd fds[3] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    int rc = ::poll(fds, 3, wait_ms);
    if (rc < 0 && errno != EINTR) {
      Status s = sys_error("poll");
      kill_group();
      return s;
    }
    if (rc > 0) {
      if (fds[0].revents) ReadAvailable(out_r, out, 1 << 20);
      if (fds[1].revents) ReadAvailable(err_r, err, 1 << 20);
    }
    if (pidfd.get() < 0 || (rc > 0 && fds[2].revents)) {
      pid_t w = running_->Reap(pid, &wstatus);
      if (w == pid) exited = true;
      if (w < 0) return sys_error("waitpid");  // someone else reaped it (SIGCHLD ignored?)
    }
  }

  if (!exited) {
    kill_group();
    return DeadlineExceeded(fmt::format("{} timed out after {}", op, FormatDuration(timeout_)));
  }

  // bash is gone; what it wrote is already in the pipes. Background children may keep the
  // write ends open forever, so take what is there now and stop.
  ReadAvailable(out_r, out, kMaxStdout);
  ReadAvailable(err_r, err, kMaxStdout);

  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  std::string tail = StderrTail(err.data);
  std::string failure;
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
    if (out.overflow) return Internal(fmt::format("{}: more than {} bytes on stdout", op, kMaxStdout));
    spdlog::debug("command backend: pool {}: {} ok in {}", ctx_.pool, op, FormatDuration(ms));
    return std::move(out.data);
  }
  if (WIFEXITED(wstatus)) {
    failure = fmt::format("exit {}", WEXITSTATUS(wstatus));
  } else {
    const char* sig = WIFSIGNALED(wstatus) ? ::sigabbrev_np(WTERMSIG(wstatus)) : nullptr;
    failure = sig ? fmt::format("killed by signal SIG{}", sig)
                  : fmt::format("killed by signal {}", WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
  }
  std::string msg = tail.empty() ? fmt::format("{} failed: {} with no output", op, failure)
                                 : fmt::format("{} failed ({}): {}", op, failure, tail);
  // Not the stderr itself: it may hold secrets, and is logged once scrubbed (redacting_backend.h).
  spdlog::debug("command backend: pool {}: {} failed: {} in {}", ctx_.pool, op, failure, FormatDuration(ms));
  return Status(StatusCode::kUnknown, std::move(msg));
}

}  // namespace tidepool::backends
