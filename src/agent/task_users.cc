#include "agent/task_users.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "common/random.h"

namespace tidepool::agent {

namespace {

std::string HexDecode(const std::string& hex, bool* ok) {
  std::string out;
  *ok = hex.size() % 2 == 0;
  for (size_t i = 0; *ok && i < hex.size(); i += 2) {
    int v = 0;
    for (size_t k = i; k < i + 2; ++k) {
      char c = hex[k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) *ok = false;
      v = v * 16 + d;
    }
    out += static_cast<char>(v);
  }
  return out;
}

bool ParseId(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 10) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// Closes the fd (and so drops its flock) on every path.
struct LockedFile {
  int fd = -1;
  ~LockedFile() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<TaskUsers> TaskUsers::Make(const std::string& mode, const std::string& range, const std::string& map_path) {
  Mode m;
  if (mode.empty()) {
    m = ::geteuid() == 0 ? Mode::kOwner : Mode::kAgent;
  } else if (mode == "owner") {
    if (::geteuid() != 0) {
      return InvalidArgument("--run-tasks-as owner needs an agent running as root (it switches users)");
    }
    m = Mode::kOwner;
  } else if (mode == "agent") {
    m = Mode::kAgent;
  } else {
    return InvalidArgument(fmt::format("--run-tasks-as {}: expected owner or agent", mode));
  }
  int64_t first = kDefaultFirst, last = kDefaultLast;
  if (!range.empty()) {
    size_t dash = range.find('-');
    if (dash == std::string::npos || !ParseId(range.substr(0, dash), &first) ||
        !ParseId(range.substr(dash + 1), &last) || first < 1000 || last < first || last >= 4294967295LL) {
      return InvalidArgument(fmt::format("--task-uids {}: expected FIRST-LAST, 1000 <= FIRST <= LAST < 4294967295", range));
    }
  }
  return TaskUsers(m, first, last, map_path.empty() ? kDefaultMap : map_path);
}

Status TaskUsers::Load(int fd) {
  std::string data;
  char buf[4096];
  ssize_t n;
  ::lseek(fd, 0, SEEK_SET);
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) data.append(buf, static_cast<size_t>(n));
  if (n < 0) return Internal(fmt::format("{}: {}", map_path_, std::strerror(errno)));
  known_.clear();
  size_t line_no = 0, pos = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) break;  // a line cut by a crash mid-append: not recorded yet
    std::string line = data.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    size_t sp = line.find(' ');
    int64_t uid = 0;
    bool ok = sp != std::string::npos && ParseId(line.substr(0, sp), &uid);
    std::string owner = ok ? HexDecode(line.substr(sp + 1), &ok) : "";
    if (!ok) return Internal(fmt::format("{}:{}: not \"UID HEX-OWNER\"", map_path_, line_no));
    known_[owner] = uid;
  }
  if (pos < data.size()) {  // drop the cut line so the next append starts a fresh one
    if (::ftruncate(fd, static_cast<off_t>(pos)) != 0) {
      return Internal(fmt::format("{}: {}", map_path_, std::strerror(errno)));
    }
  }
  return Status::Ok();
}

Result<TaskUser> TaskUsers::For(const std::string& owner) {
  if (mode_ == Mode::kAgent || owner.empty()) return TaskUser{};
  if (auto it = known_.find(owner); it != known_.end()) return TaskUser{it->second, it->second};
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(map_path_).parent_path(), ec);
  LockedFile f;
  f.fd = ::open(map_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (f.fd < 0) return Internal(fmt::format("task uid map {}: {}", map_path_, std::strerror(errno)));
  if (::flock(f.fd, LOCK_EX) != 0) return Internal(fmt::format("task uid map {}: {}", map_path_, std::strerror(errno)));
  if (Status s = Load(f.fd); !s.ok()) return s;
  if (auto it = known_.find(owner); it != known_.end()) return TaskUser{it->second, it->second};
  int64_t next = first_;
  for (const auto& [o, uid] : known_) {
    if (uid >= next && uid <= last_) next = uid + 1;
  }
  while (next <= last_ && ::getpwuid(static_cast<uid_t>(next)) != nullptr) ++next;  // a real account's
  if (next > last_) {
    return Status(StatusCode::kResourceExhausted, fmt::format("no task uid left for {} in {}-{} (see {})", owner, first_, last_, map_path_));
  }
  std::string line = fmt::format("{} {}\n", next, HexEncode(owner));
  if (::lseek(f.fd, 0, SEEK_END) < 0 || ::write(f.fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
      ::fsync(f.fd) != 0) {
    return Internal(fmt::format("task uid map {}: {}", map_path_, std::strerror(errno)));
  }
  known_[owner] = next;
  return TaskUser{next, next};
}

}  // namespace tidepool::agent
