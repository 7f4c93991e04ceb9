#include "cli/workspace_daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/client.h"
#include "cli/workspace_client.h"
#include "common/fs.h"
#include "workspace/manifest_delta.h"
#include "workspace/root_watch.h"
#include "workspace/scan.h"

namespace tidepool::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kIdle = std::chrono::minutes(15);
constexpr size_t kMaxTrees = 8;              // workspaces kept watched; the least recently used goes
constexpr size_t kMaxRequest = 64 * 1024;    // one line of JSON
constexpr int kReadTimeoutSeconds = 10;      // a client that connects and says nothing

bool Disabled() {
  const char* v = std::getenv("TIDEPOOL_WORKSPACE_DAEMON");
  return v && std::strcmp(v, "0") == 0;
}

socklen_t Address(const std::string& name, sockaddr_un* a) {
  *a = {};
  a->sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(a->sun_path) - 1);
  std::memcpy(a->sun_path + 1, name.data(), n);  // sun_path[0] = 0: the abstract namespace
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

bool SameUser(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == ::getuid();
}

// A daemon of this user listens already.
bool Answers() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a;
  socklen_t len = Address(WorkspaceDaemonName(), &a);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), len) == 0 && SameUser(fd);
  ::close(fd);
  return ok;
}

bool SendLine(int fd, const json& j) {
  std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// One workspace as the daemon keeps it: the manifest a scan gave, and the watches that vouch for it.
struct Tree {
  std::vector<std::string> roots;
  bool gitignore = false;
  uint64_t max_bytes = 0;
  std::vector<std::unique_ptr<workspace::RootWatch>> watches;  // one per root, or none (scan each time)
  std::unique_ptr<workspace::StatCache> stat_cache;
  v1::WorkspaceManifest manifest;
  std::string hash, bytes;  // "" until scanned
  uint64_t files = 0, total = 0;
  std::string base_hash, base_bytes;  // the last one a server took: what a delta is made against
  // The last Refresh's changes, when they are the difference from base_hash (the server had the
  // manifest they were made from): sent as they are, not made again from the serializations.
  std::optional<v1::ManifestDelta> delta;
  bool save_stat_cache = false;       // a whole scan filled it: saved once the caller has its answer
  Clock::time_point used;
};

class Daemon {
 public:
  // `first`: a prepare to begin with (the tree the starting client brought), answered to no one.
  int Serve(const std::optional<json>& first);

 private:
  void Handle(int fd);
  json Prepare(const json& req, int fd);
  void BringBack(const json& req, int fd);
  Client& ClientFor(const std::string& server, const std::string& token);
  Tree& TreeFor(const std::vector<std::string>& roots, bool gitignore, uint64_t max_bytes);
  Status Refresh(Tree& t);
  Status ScanWhole(Tree& t);
  bool Stale() const;
  void SaveStatCaches();

  std::map<std::string, std::unique_ptr<Client>> clients_;  // by server and token
  std::map<std::string, Tree> trees_;                      // by RootsKey
  std::string cache_home_ = CacheHome();
  Clock::time_point last_request_ = Clock::now();
  std::thread saver_;  // the last SaveStatCaches
};

Client& Daemon::ClientFor(const std::string& server, const std::string& token) {
  std::string key = server + '\n' + token;
  auto& c = clients_[key];
  if (!c) c = std::make_unique<Client>(ClientOptions{server, token, ""});
  return *c;
}

Tree& Daemon::TreeFor(const std::vector<std::string>& roots, bool gitignore, uint64_t max_bytes) {
  const std::string key = RootsKey(roots);
  auto it = trees_.find(key);
  if (it != trees_.end() && (it->second.gitignore != gitignore || it->second.max_bytes != max_bytes)) {
    trees_.erase(it);  // other rules: a scan of its own
    it = trees_.end();
  }
  if (it == trees_.end()) {
    if (trees_.size() >= kMaxTrees) {
      auto oldest = trees_.begin();
      for (auto i = trees_.begin(); i != trees_.end(); ++i) {
        if (i->second.used < oldest->second.used) oldest = i;
      }
      trees_.erase(oldest);
    }
    Tree& t = trees_[key];
    t.roots = roots;
    t.gitignore = gitignore;
    t.max_bytes = max_bytes;
    // The client's stat cache of these roots: files it has hashed need not be read again here.
    t.stat_cache = std::make_unique<workspace::StatCache>(LoadStatCache(roots));
    it = trees_.find(key);
  }
  it->second.used = Clock::now();
  return it->second;
}

// Watches first, then the walk: what changes during the walk is dirty for the next request.
Status Daemon::ScanWhole(Tree& t) {
  t.watches.clear();
  for (const std::string& r : t.roots) {
    auto w = workspace::RootWatch::Start(r);
    if (!w.ok()) {  // no inotify to be had (or no such root: the scan names it)
      t.watches.clear();
      break;
    }
    t.watches.push_back(std::move(*w));
  }
  auto scanned = ScanCallersTree(t.roots, t.gitignore, t.max_bytes, t.stat_cache.get());
  if (!scanned.ok()) {
    t.hash.clear();
    return scanned.status();
  }
  t.manifest = std::move(scanned->manifest);
  t.files = scanned->files;
  t.total = scanned->bytes;
  t.hash = workspace::ManifestHash(t.manifest, &t.bytes);
  t.save_stat_cache = true;
  return Status::Ok();
}

// The tree as it is now: nothing looked at when the watches saw nothing; the paths they saw
// looked at again (each file among them read again: a second write within the clock's tick leaves
// size and mtime as they were); a whole scan when they cannot vouch.
Status Daemon::Refresh(Tree& t) {
  t.delta.reset();
  if (t.hash.empty() || t.watches.size() != t.roots.size()) return ScanWhole(t);
  bool changed = false;
  v1::ManifestDelta delta;  // every root, changed or not (a root a delta leaves out is gone)
  for (size_t i = 0; i < t.watches.size(); ++i) {
    const int at = static_cast<int>(i);
    v1::RootDelta* rd = delta.add_roots();
    rd->set_path(t.manifest.roots(at).path());
    workspace::RootWatch& w = *t.watches[i];
    w.Drain();
    if (w.lost()) return ScanWhole(t);
    if (w.dirty().empty()) continue;
    workspace::ScanOptions o;
    o.gitignore = t.gitignore;
    o.rehash_dirty = true;
    auto r = workspace::RescanChanges(t.roots[i], t.manifest.roots(at), w.dirty(), o);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kUnavailable) return ScanWhole(t);  // an ignore file changed
      return Status(r.status().code(), fmt::format("workspace: {}", r.status().message()));
    }
    // Only the entries that changed are touched, not the 10,000 of the tree.
    if (!workspace::ApplyRootDelta(t.manifest.mutable_roots(at), r->delta).ok()) return ScanWhole(t);
    rd->mutable_put()->Swap(r->delta.mutable_put());
    rd->mutable_removed()->Swap(r->delta.mutable_removed());
    w.Clear();
    changed = true;
  }
  if (!changed) return Status::Ok();
  const std::string was = t.hash;
  t.files = t.total = 0;
  for (const auto& root : t.manifest.roots()) {
    for (const auto& e : root.entries()) {
      if (e.kind() != v1::WorkspaceEntry::FILE) continue;
      ++t.files;
      t.total += e.size();
    }
  }
  if (t.max_bytes > 0 && t.total > t.max_bytes) return ScanWhole(t);  // which names the largest folders
  t.hash = workspace::ManifestHash(t.manifest, &t.bytes);
  if (was == t.base_hash && t.hash != was) {
    delta.set_base(was);
    delta.set_hash(t.hash);
    t.delta = std::move(delta);
  }
  return Status::Ok();
}

json Daemon::Prepare(const json& req, int fd) {
  Trace trace;
  Client& client = ClientFor(req.value("server", ""), req.value("token", ""));
  v1::TaskSpec spec;
  spec.set_pool(req.value("pool", ""));
  spec.set_kind(req.value("batch", false) ? v1::TASK_KIND_BATCH : v1::TASK_KIND_INTERACTIVE);
  auto settings = AskSettings(client, spec);
  if (!settings.ok()) return {{"done", true}, {"fallback", settings.status().message()}};
  if (!settings->sync()) return {{"done", true}, {"fallback", "the pool brings no files"}};
  const std::vector<std::string> roots = WorkspaceRoots(req.value("cwd", "/"), *settings);
  if (roots.empty()) return {{"done", true}, {"none", true}};
  trace.Step("daemon: settings");
  Tree& t = TreeFor(roots, settings->gitignore(), settings->max_bytes());
  if (Status s = Refresh(t); !s.ok()) return {{"done", true}, {"error", s.message()}};
  trace.Step("daemon: tree refreshed");
  const bool quiet = req.value("quiet", false);
  Say say = [fd](const std::string& line) {
    if (fd >= 0) SendLine(fd, {{"say", line}});
  };
  auto sent = PutOnServer(client, Upload{t.hash, t.bytes, t.manifest, t.base_hash, t.base_bytes, t.delta ? &*t.delta : nullptr},
                          quiet, say);
  if (!sent.ok()) return {{"done", true}, {"error", sent.status().message()}};
  trace.Step("daemon: the server has it");
  if (t.base_hash != t.hash) {
    t.base_hash = t.hash;
    t.base_bytes = t.bytes;
  }
  t.delta.reset();
  return {{"done", true}, {"manifest", t.hash}, {"files", t.files}, {"bytes", t.total}};
}

void Daemon::BringBack(const json& req, int fd) {
  Client& client = ClientFor(req.value("server", ""), req.value("token", ""));
  const std::string base = req.value("base", ""), result = req.value("result", ""), task = req.value("task", "");
  const v1::WorkspaceManifest* known = nullptr;
  for (const auto& [key, t] : trees_) {
    if (t.hash == base) known = &t.manifest;
  }
  auto back = cli::BringBack(client, base, result, workspace::OnConflict::kStop, known);
  std::string report =
      back.ok() ? ConflictReport(*back, task)
                : fmt::format("tidepool: the task's workspace changes were not brought back: {} (`tidepool task sync {}` tries again)",
                              back.status().message(), task);
  if (!report.empty()) SendLine(fd, {{"say", report}});
  SendLine(fd, {{"done", true}});
}

void Daemon::Handle(int fd) {
  timeval tv{kReadTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string line;
  char buf[4096];
  while (line.find('\n') == std::string::npos && line.size() < kMaxRequest) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    line.append(buf, static_cast<size_t>(n));
  }
  json req = json::parse(line.substr(0, line.find('\n')), nullptr, /*allow_exceptions=*/false);
  try {
    if (!req.is_object() || !req["v"].is_number_integer() || req["v"] != 1) {
      SendLine(fd, {{"done", true}, {"fallback", "a request this daemon does not know"}});
      return;
    }
    const std::string op = req.value("op", "");
    if (op == "prepare") {
      SendLine(fd, Prepare(req, fd));
    } else if (op == "bring_back") {
      BringBack(req, fd);
    } else {
      SendLine(fd, {{"done", true}, {"fallback", "a request this daemon does not know"}});
    }
  } catch (const json::exception& e) {  // a member of the wrong type
    SendLine(fd, {{"done", true}, {"fallback", fmt::format("a request this daemon cannot read: {}", e.what())}});
  }
}

// Time to go: its cache home was removed (its caller's account or a test's folder is gone), or
// its program was replaced (a newer client starts a newer daemon).
bool Daemon::Stale() const {
  if (!PathExists(cache_home_)) return true;
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  return n > 0 && std::string_view(exe, static_cast<size_t>(n)).ends_with(" (deleted)");
}

// Stat caches a whole scan filled, saved for the full client (should it be the one to run next: no
// daemon, or another tree's) on a thread of their own, from copies: writing 10,000 entries takes
// tens of ms, which the next request need not wait.
void Daemon::SaveStatCaches() {
  std::vector<std::unique_ptr<workspace::StatCache>> copies;
  for (auto& [key, t] : trees_) {
    if (!t.save_stat_cache) continue;
    copies.push_back(std::make_unique<workspace::StatCache>(*t.stat_cache));
    t.save_stat_cache = false;
  }
  if (copies.empty()) return;
  if (saver_.joinable()) saver_.join();
  saver_ = std::thread([copies = std::move(copies)] {
    for (const auto& c : copies) (void)c->Save();
  });
}

int Daemon::Serve(const std::optional<json>& first) {
  // The requests name their server and token: none is taken from the environment it was started in.
  for (const char* v : {"TIDEPOOL_SERVER", "TIDEPOOL_TOKEN", "TIDEPOOL_TLS_CA"}) ::unsetenv(v);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1;
  sockaddr_un a;
  socklen_t len = Address(WorkspaceDaemonName(), &a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) {
    ::close(fd);
    return errno == EADDRINUSE ? 0 : 1;  // another one serves
  }
  ::listen(fd, 64);
  if (first) {
    json r = Prepare(*first, -1);
    if (r.contains("error") || r.contains("fallback")) fmt::print(stderr, "workspace daemon: {}\n", r.dump());
    SaveStatCaches();
  }
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 1000);
    if (r <= 0) {
      if (Clock::now() - last_request_ > kIdle || Stale()) break;
      continue;
    }
    int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    if (SameUser(c)) {
      last_request_ = Clock::now();
      Handle(c);
    }
    ::close(c);
    SaveStatCaches();
  }
  if (saver_.joinable()) saver_.join();
  ::close(fd);
  return 0;
}

}  // namespace

std::string WorkspaceDaemonName() {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : CacheHome()) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("tidepool-workspace-{}-{:016x}", ::getuid(), h);
}

void StartWorkspaceDaemon(const Client& client, const std::string& pool, const std::string& cwd) {
  if (Disabled() || Answers()) return;
  // Everything the child needs is made before the fork: after it, only async-signal-safe calls.
  const std::string home = CacheHome();
  if (!MakeDirs(home, 0700).ok()) return;
  const std::string log = home + "/workspace-daemon.log";
  std::vector<std::string> args = {"tidepool", "workspace-daemon", "--server", client.address(), "--pool", pool, "--cwd", cwd};
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    if (std::strncmp(*e, "TIDEPOOL_TOKEN=", 15) != 0) env.emplace_back(*e);
  }
  if (!client.token().empty()) env.push_back("TIDEPOOL_TOKEN=" + client.token());
  auto pointers = [](std::vector<std::string>& v) {
    std::vector<char*> p;
    for (auto& s : v) p.push_back(s.data());
    p.push_back(nullptr);
    return p;
  };
  std::vector<char*> argv = pointers(args), envp = pointers(env);
  pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);  // the daemon is no child of the caller's
    int null = ::open("/dev/null", O_RDWR);
    int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(err >= 0 ? err : null, 2);
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    ::execve("/proc/self/exe", argv.data(), envp.data());
    ::_exit(127);
  }
  int status;
  ::waitpid(pid, &status, 0);
}

void AddWorkspaceDaemonCommand(CLI::App& app, int* rc) {
  auto opts = std::make_shared<std::array<std::string, 3>>();
  CLI::App* sub = app.add_subcommand("workspace-daemon", "");
  sub->group("");  // not for people: clients start it (workspace_daemon.h)
  sub->add_option("--server", (*opts)[0]);
  sub->add_option("--pool", (*opts)[1]);
  sub->add_option("--cwd", (*opts)[2]);
  sub->callback([opts, rc] {
    std::optional<json> first;
    if (!(*opts)[0].empty()) {
      first = json{{"v", 1}, {"op", "prepare"}, {"quiet", true}, {"server", (*opts)[0]}, {"token", ResolveToken("")},
                   {"pool", (*opts)[1]}, {"cwd", (*opts)[2]}};
    }
    Daemon d;
    *rc = d.Serve(first);
  });
}

}  // namespace tidepool::cli
