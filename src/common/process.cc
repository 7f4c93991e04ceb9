#include "common/process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

extern char** environ;

namespace tidepool {

namespace {

std::string LookupEnv(const std::vector<std::string>& env, std::string_view key) {
  for (const auto& kv : env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
      return kv.substr(key.size() + 1);
    }
  }
  return {};
}

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Resolves argv[0] like execvp would, but with the child's PATH. Relative names containing '/'
// are resolved against the child's working directory by the kernel after chdir.
std::optional<std::string> Resolve(const std::string& cmd, const std::vector<std::string>& env,
                                   const std::string& cwd) {
  if (cmd.find('/') != std::string::npos) {
    std::string full = (cmd[0] == '/' || cwd.empty()) ? cmd : cwd + "/" + cmd;
    if (IsExecutableFile(full)) return cmd;
    return std::nullopt;
  }
  std::string path = LookupEnv(env, "PATH");
  if (path.empty()) path = "/usr/local/bin:/usr/bin:/bin";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + cmd;
    std::string check = (candidate[0] == '/' || cwd.empty()) ? candidate : cwd + "/" + candidate;
    if (IsExecutableFile(check)) return candidate;
  }
  return std::nullopt;
}

// The child side of SpawnDieWithParent. It shares the parent's memory (CLONE_VM) while the
// parent waits (CLONE_VFORK), so it only makes async-signal-safe calls, and reports a failure
// through `error` before _exit.
struct CloneChild {
  const SpawnOptions* o;
  const char* exe;
  char* const* argv;
  char* const* envp;
  pid_t parent;
  int error = 0;
  int step = 0;       // what failed: kStep*
  int error_fd = -1;  // TSan builds only (see SpawnDieWithParent): where the child writes `error`
};

enum { kStepOther = 0, kStepUser = 1, kStepCwd = 2, kStepExec = 3 };

int CloneChildMain(void* arg) {
  auto* c = static_cast<CloneChild*>(arg);
  const SpawnOptions& o = *c->o;
  // Default dispositions, then an empty mask (signals were blocked around clone).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t empty;
  sigemptyset(&empty);
  if (o.new_session && setsid() < 0) goto fail;
  if (o.uid >= 0) {
    // Raw system calls: glibc's setuid would signal every thread sharing this memory (the
    // parent's), as POSIX wants for a process. Before PR_SET_PDEATHSIG, which a change of
    // credentials clears.
    c->step = kStepUser;
    if (syscall(SYS_setgroups, 0, nullptr) != 0) goto fail;
    if (syscall(SYS_setresgid, o.gid, o.gid, o.gid) != 0) goto fail;
    if (syscall(SYS_setresuid, o.uid, o.uid, o.uid) != 0) goto fail;
    c->step = kStepOther;
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) goto fail;
  if (getppid() != c->parent) _exit(127);  // the parent is already gone
  if (!o.tty_path.empty()) {
    int fd = open(o.tty_path.c_str(), O_RDWR);  // as session leader: the controlling terminal
    if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) goto fail;
  } else {
    int fds[3] = {o.stdin_fd, o.stdout_fd, o.stderr_fd};
    for (int target = 0; target < 3; ++target) {
      int fd = fds[target];
      if (fd < 0) fd = open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
      if (fd < 0 || dup2(fd, target) < 0) goto fail;
    }
  }
  c->step = kStepCwd;
  if (!o.cwd.empty() && chdir(o.cwd.c_str()) != 0) goto fail;
  c->step = kStepExec;
  if (c->error_fd >= 3) {  // keep it open until exec (it is close-on-exec)
    syscall(SYS_close_range, 3U, static_cast<unsigned>(c->error_fd - 1), 0U);
    syscall(SYS_close_range, static_cast<unsigned>(c->error_fd + 1), ~0U, 0U);
  } else {
    syscall(SYS_close_range, 3U, ~0U, 0U);
  }
  sigprocmask(SIG_SETMASK, &empty, nullptr);
  execve(c->exe, c->argv, c->envp);
fail:
  c->error = errno;
  if (c->error_fd >= 0) {
    int report[2] = {c->error, c->step};
    [[maybe_unused]] ssize_t n = write(c->error_fd, report, sizeof(report));
  }
  _exit(127);
}

// The stack the clone child runs on until its exec. One per spawning thread, kept for the
// thread's life: CLONE_VFORK holds the thread until the child has exec'd (or exited), so the
// stack is free again when clone returns, and a fresh mapping per spawn cost an mmap, page
// faults and a munmap with its TLB shootdown across the agent's threads.
class CloneStack {
 public:
  static constexpr size_t kSize = 64 * 1024;
  // nullptr (errno set) if it cannot be mapped.
  static void* ForThisThread() {
    thread_local CloneStack stack;
    if (!stack.base_) {
      void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
      if (p == MAP_FAILED) return nullptr;
      stack.base_ = p;
    }
    return stack.base_;
  }
  ~CloneStack() {
    if (base_) munmap(base_, kSize);
  }

 private:
  void* base_ = nullptr;
};

SpawnResult SpawnDieWithParent(const SpawnOptions& o, const std::string& exe, std::vector<char*>& argv,
                               std::vector<char*>& envp) {
  SpawnResult r;
  CloneChild child{&o, exe.c_str(), argv.data(), envp.data(), getpid()};
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &saved);  // no handler may run in the shared-memory child
#if defined(__SANITIZE_THREAD__)
  // TSan's clone interceptor does its fork bookkeeping inside a CLONE_VM child, i.e. on the
  // parent's own memory: the parent is then taken for "forked while multi-threaded" and killed
  // at its next pthread_create. So TSan builds fork (which it supports) and learn of a failed
  // exec through a close-on-exec pipe instead of shared memory. Same behaviour, slower.
  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) error_pipe[0] = error_pipe[1] = -1;
  child.error_fd = error_pipe[1];
  pid_t pid = fork();
  if (pid == 0) _exit(CloneChildMain(&child));
  int clone_errno = errno;
  if (error_pipe[1] >= 0) ::close(error_pipe[1]);
  if (pid > 0 && error_pipe[0] >= 0) {
    int report[2] = {0, 0};
    ssize_t n;
    do n = read(error_pipe[0], report, sizeof(report));  // 0 bytes: exec succeeded
    while (n < 0 && errno == EINTR);
    child.error = report[0];
    child.step = report[1];
  }
  if (error_pipe[0] >= 0) ::close(error_pipe[0]);
#else
  void* stack = CloneStack::ForThisThread();  // its mmap's failure is reported as clone's
  pid_t pid = stack ? clone(CloneChildMain, static_cast<char*>(stack) + CloneStack::kSize,
                            CLONE_VM | CLONE_VFORK | SIGCHLD, &child)
                    : -1;
  int clone_errno = errno;
#endif
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    r.error = SpawnError::kOther;
    r.message = fmt::format("cannot start {}: {}", o.argv[0], std::strerror(clone_errno));
    return r;
  }
  if (child.error != 0) {  // it never reached its program
    waitpid(pid, nullptr, 0);
    if (child.step == kStepUser || child.step == kStepCwd) {
      std::string as = o.uid >= 0 ? fmt::format(" as uid {}", o.uid) : "";
      r.error = child.step == kStepCwd ? SpawnError::kNoCwd : SpawnError::kOther;
      r.message = child.step == kStepCwd
                      ? fmt::format("cannot enter working directory {}{}: {}", o.cwd, as, std::strerror(child.error))
                      : fmt::format("cannot switch to uid {} gid {}: {}", o.uid, o.gid, std::strerror(child.error));
      return r;
    }
    bool not_found = child.error == ENOENT || child.error == EACCES;
    r.error = not_found ? SpawnError::kNotFound : SpawnError::kOther;
    r.message = not_found ? fmt::format("command not found: {}", o.argv[0])
                          : fmt::format("cannot start {}: {}", o.argv[0], std::strerror(child.error));
    return r;
  }
  r.pid = pid;
  return r;
}

}  // namespace

SpawnResult Spawn(const SpawnOptions& o) {
  SpawnResult r;
  if (o.argv.empty()) {
    r.error = SpawnError::kOther;
    r.message = "empty command";
    return r;
  }
  if (!o.cwd.empty()) {
    struct stat st {};
    if (::stat(o.cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      r.error = SpawnError::kNoCwd;
      r.message = fmt::format("working directory not found: {}", o.cwd);
      return r;
    }
  }
  std::optional<std::string> exe = Resolve(o.argv[0], o.env, o.cwd);
  if (!exe) {
    r.error = SpawnError::kNotFound;
    r.message = fmt::format("command not found: {}", o.argv[0]);
    return r;
  }

  std::vector<char*> argv, envp;
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : o.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  if (o.die_with_parent) return SpawnDieWithParent(o, *exe, argv, envp);
  if (o.uid >= 0) {
    r.error = SpawnError::kOther;
    r.message = "running a child as another user needs die_with_parent";
    return r;
  }

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);

  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (o.new_session) flags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&attr, flags);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);

  if (!o.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, o.cwd.c_str());
  if (!o.tty_path.empty()) {
    // setsid runs before the file actions, so this open makes it the controlling terminal.
    posix_spawn_file_actions_addopen(&fa, 0, o.tty_path.c_str(), O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&fa, 0, 1);
    posix_spawn_file_actions_adddup2(&fa, 0, 2);
  } else {
    auto setup = [&](int target, int fd, const std::string& path, int open_flags) {
      if (fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, fd, target);
      } else if (!path.empty()) {
        posix_spawn_file_actions_addopen(&fa, target, path.c_str(), open_flags, 0644);
      } else {
        posix_spawn_file_actions_addopen(&fa, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
      }
    };
    setup(0, o.stdin_fd, "", O_RDONLY);
    setup(1, o.stdout_fd, o.stdout_path, O_WRONLY | O_CREAT | O_APPEND);
    setup(2, o.stderr_fd, o.stderr_path, O_WRONLY | O_CREAT | O_APPEND);
  }
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, exe->c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    r.error = (rc == ENOENT || rc == EACCES) ? SpawnError::kNotFound : SpawnError::kOther;
    r.message = rc == ENOENT || rc == EACCES ? fmt::format("command not found: {}", o.argv[0])
                                             : fmt::format("cannot start {}: {}", o.argv[0], std::strerror(rc));
    return r;
  }
  r.pid = pid;
  return r;
}

std::vector<std::string> CurrentEnvironment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  // The command name may contain spaces and parentheses: fields resume after the last ')'.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  ProcStat st;
  std::string field;
  rest >> st.state;
  // fields after state: ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt..(10-13)
  // utime(14) stime(15) cutime(16) cstime(17) priority(18) nice(19) threads(20) itreal(21) start(22)
  long long v = 0;
  for (int idx = 4; idx <= 22; ++idx) {
    if (!(rest >> v)) return std::nullopt;
    if (idx == 5) st.pgid = static_cast<pid_t>(v);
    if (idx == 22) st.start_time = static_cast<uint64_t>(v);
  }
  return st;
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  auto st = ReadProcStat(pid);
  return st && st->start_time == start_time && st->state != 'Z' && st->state != 'X';
}

sigset_t BlockStopSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  return sigs;
}

}  // namespace tidepool
