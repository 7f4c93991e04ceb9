#include "backends/toolkit/subprocess.h"

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

#include <fmt/format.h>

#include "common/process.h"
#include "common/strings.h"

namespace tidepool::backends {

namespace {

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

// Collects a pipe's bytes: all of them up to a cap (stdout), or only the tail (stderr).
struct Sink {
  std::string data;
  size_t limit = 0;
  bool keep_tail = false;
  bool overflow = false;

  void Append(const char* p, size_t n) {
    if (!keep_tail && overflow) return;
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

Status SysError(std::string_view what) { return Internal(fmt::format("{}: {}", what, std::strerror(errno))); }

}  // namespace

void ProcessGroups::Abandon() {
  std::lock_guard lock(mu_);
  abandoned_ = true;
  for (pid_t pid : groups_) ::kill(-pid, SIGKILL);
}

bool ProcessGroups::abandoned() const {
  std::lock_guard lock(mu_);
  return abandoned_;
}

bool ProcessGroups::Running() const {
  std::lock_guard lock(mu_);
  return !groups_.empty();
}

void ProcessGroups::Add(pid_t pid) {
  std::lock_guard lock(mu_);
  if (abandoned_) {
    ::kill(-pid, SIGKILL);
  } else {
    groups_.insert(pid);
  }
}

pid_t ProcessGroups::Reap(pid_t pid, int* wstatus) {
  std::lock_guard lock(mu_);
  pid_t w;
  do w = ::waitpid(pid, wstatus, WNOHANG);
  while (w < 0 && errno == EINTR);
  if (w != 0) groups_.erase(pid);
  return w;
}

void ProcessGroups::Kill(pid_t pid) {
  std::lock_guard lock(mu_);
  groups_.erase(pid);
  ::kill(-pid, SIGKILL);
}

SubprocessSpec BashScript(const std::string& script, const std::vector<std::string>& args) {
  SubprocessSpec s;
  s.argv = {"bash", "-s", "--"};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  s.stdin_data = script;
  return s;
}

std::string SubprocessResult::Describe() const {
  if (timed_out) return "timed out";
  if (term_signal != 0) {
    const char* sig = ::sigabbrev_np(term_signal);
    return sig ? fmt::format("killed by signal SIG{}", sig) : fmt::format("killed by signal {}", term_signal);
  }
  return fmt::format("exit {}", exit_code);
}

Result<SubprocessResult> RunSubprocess(const SubprocessSpec& spec) {
  // Every run registers its group somewhere: with the caller's set, or a private one.
  ProcessGroups own;
  ProcessGroups& groups = spec.groups ? *spec.groups : own;
  if (groups.abandoned()) return Unavailable("not run: the server is stopping");
  if (spec.argv.empty()) return InvalidArgument("no program to run");
  const auto started = std::chrono::steady_clock::now();

  Fd in_fd(::memfd_create("tidepool-stdin", MFD_CLOEXEC));
  if (in_fd.get() < 0) return SysError("memfd_create");
  for (size_t off = 0; off < spec.stdin_data.size();) {
    ssize_t n = ::write(in_fd.get(), spec.stdin_data.data() + off, spec.stdin_data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError("writing stdin");
    off += static_cast<size_t>(n);
  }
  if (::lseek(in_fd.get(), 0, SEEK_SET) < 0) return SysError("lseek");

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return SysError("pipe");
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return SysError("pipe");
  Fd err_r(err_pipe[0]), err_w(err_pipe[1]);
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);

  SpawnOptions o;
  o.argv = spec.argv;
  o.env = spec.env;
  o.new_session = true;  // its own process group, killed as a whole at the deadline
  o.stdin_fd = in_fd.get();
  o.stdout_fd = out_w.get();
  o.stderr_fd = err_w.get();
  SpawnResult spawned = Spawn(o);
  in_fd.Reset();
  out_w.Reset();  // only the child may hold the write ends, or EOF would never come
  err_w.Reset();
  if (spawned.pid < 0) return Unavailable(fmt::format("cannot run {}: {}", spec.argv[0], spawned.message));
  const pid_t pid = spawned.pid;
  groups.Add(pid);

  // Readable once the child exits. Without pidfds (old kernels) we poll in short slices.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  SubprocessResult r;
  Sink out{.limit = spec.stdout_cap};
  Sink err{.limit = spec.stderr_cap, .keep_tail = true};
  // Kills the group before reaping the leader, so the group id cannot have been reused.
  auto kill_group = [&groups, pid] {
    groups.Kill(pid);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  };
  int wstatus = 0;
  bool exited = false;
  while (!exited) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(spec.deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    int wait_ms = static_cast<int>(std::min<int64_t>(left.count(), pidfd.get() >= 0 ? 60000 : 20));
    pollfd fds[3] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    int rc = ::poll(fds, 3, wait_ms);
    if (rc < 0 && errno != EINTR) {
      Status s = SysError("poll");
      kill_group();
      return s;
    }
    if (rc > 0) {
      if (fds[0].revents) ReadAvailable(out_r, out, 1 << 20);
      if (fds[1].revents) ReadAvailable(err_r, err, 1 << 20);
    }
    if (pidfd.get() < 0 || (rc > 0 && fds[2].revents)) {
      pid_t w = groups.Reap(pid, &wstatus);
      if (w == pid) exited = true;
      if (w < 0) return SysError("waitpid");  // someone else reaped it (SIGCHLD ignored?)
    }
  }
  if (!exited) {
    kill_group();
    r.timed_out = true;
  } else {
    // The child is gone; what it wrote is already in the pipes. Background children may keep
    // the write ends open forever, so take what is there now and stop.
    ReadAvailable(out_r, out, spec.stdout_cap + 1);
    ReadAvailable(err_r, err, size_t{16} << 20);
    if (WIFEXITED(wstatus)) r.exit_code = WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus)) r.term_signal = WTERMSIG(wstatus);
  }
  r.out = std::move(out.data);
  r.err = std::move(err.data);
  r.stdout_overflow = out.overflow;
  r.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  return r;
}

std::vector<std::string> NonEmptyLines(std::string_view text) {
  std::vector<std::string> out;
  for (const std::string& line : Split(text, '\n')) {
    std::string_view t = Trim(line);
    if (!t.empty()) out.emplace_back(t);
  }
  return out;
}

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

}  // namespace tidepool::backends
