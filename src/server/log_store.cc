#include "server/log_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fs.h"

namespace tidepool::server {

LogSink::LogSink(std::string stdout_path, std::string stderr_path) {
  out_.path = std::move(stdout_path);
  err_.path = std::move(stderr_path);
}

LogSink::~LogSink() {
  if (out_.fd >= 0) ::close(out_.fd);
  if (err_.fd >= 0) ::close(err_.fd);
}

Status LogSink::Open() {
  // Sizes only: a stream's file is created by its first byte (most tasks write nothing to one
  // of them, many to both, and creating two files per task was a fifth of the server's CPU on
  // thousands of short tasks, P3). A missing file is an empty stream.
  for (Stream* s : {&out_, &err_}) {
    struct stat st {};
    if (::stat(s->path.c_str(), &st) == 0) {
      s->size = static_cast<uint64_t>(st.st_size);
    } else if (errno != ENOENT) {
      return Internal(fmt::format("cannot read log {}: {}", s->path, std::strerror(errno)));
    }
  }
  return Status::Ok();
}

uint64_t LogSink::Write(v1::OutputStream stream, uint64_t offset, const std::string& data) {
  uint64_t result;
  bool wrote = false;
  {
    std::lock_guard lock(mu_);
    Stream& s = stream == v1::OUTPUT_STREAM_STDERR ? err_ : out_;
    if (offset > s.size) {
      // A gap would mean lost output: refuse it; the agent resends from what we have.
      spdlog::warn("log {}: output at offset {} but only {} bytes stored; asking for a resend", s.path, offset, s.size);
      return s.size;
    }
    uint64_t skip = s.size - offset;  // already stored (a resend)
    if (skip < data.size() && s.fd < 0) {
      s.fd = ::open(s.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
      if (s.fd < 0) {
        // Not acknowledged: the agent keeps the output and sends it again.
        spdlog::error("log {}: cannot open: {}", s.path, std::strerror(errno));
        return s.size;
      }
    }
    if (skip < data.size()) {
      const char* p = data.data() + skip;
      size_t left = data.size() - skip;
      while (left > 0) {
        ssize_t n = ::write(s.fd, p, left);
        if (n < 0) {
          if (errno == EINTR) continue;
          spdlog::error("log {}: write failed: {}", s.path, std::strerror(errno));
          break;
        }
        p += n;
        left -= static_cast<size_t>(n);
        s.size += static_cast<uint64_t>(n);
      }
      wrote = true;
    }
    result = s.size;
  }
  if (wrote) Notify();
  return result;
}

uint64_t LogSink::size(v1::OutputStream stream) const {
  std::lock_guard lock(mu_);
  return stream == v1::OUTPUT_STREAM_STDERR ? err_.size : out_.size;
}

const std::string& LogSink::path(v1::OutputStream stream) const {
  return stream == v1::OUTPUT_STREAM_STDERR ? err_.path : out_.path;
}

uint64_t LogSink::AddListener(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  uint64_t id = next_listener_++;
  listeners_[id] = std::move(fn);
  return id;
}

void LogSink::RemoveListener(uint64_t id) {
  std::lock_guard lock(mu_);
  listeners_.erase(id);
}

void LogSink::Complete() {
  {
    std::lock_guard lock(mu_);
    if (complete_) return;
    complete_ = true;
  }
  Notify();
}

bool LogSink::complete() const {
  std::lock_guard lock(mu_);
  return complete_;
}

void LogSink::Notify() {
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, fn] : listeners_) fns.push_back(fn);
  }
  for (auto& fn : fns) fn();
}

LogStore::LogStore(std::string dir) : dir_(std::move(dir)) { MakeDirs(dir_); }

namespace {
// Task ids may hold '/' (children): percent-encode so every task is one flat pair of files.
std::string EncodeStem(std::string_view task_id) {
  std::string out;
  for (unsigned char c : task_id) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}
}  // namespace

std::string LogStore::FileStem(const std::string& task_id) const { return dir_ + "/" + EncodeStem(task_id); }

Result<size_t> LogStore::SetAsideOrphans(
    const std::function<Status(const std::function<void(std::string_view)>&)>& for_each_id) {
  // The stems on disk, less those of stored ids, are the orphans.
  std::unordered_set<std::string> stems;
  {
    DIR* d = ::opendir(dir_.c_str());
    if (!d) return Internal(fmt::format("cannot read the log directory {}: {}", dir_, std::strerror(errno)));
    while (struct dirent* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      for (std::string_view ext : {".stdout", ".stderr"}) {
        if (n.size() > ext.size() && n.substr(n.size() - ext.size()) == ext) {
          stems.emplace(n.substr(0, n.size() - ext.size()));
        }
      }
    }
    ::closedir(d);
  }
  if (stems.empty()) return size_t{0};
  if (Status s = for_each_id([&](std::string_view id) { stems.erase(EncodeStem(id)); }); !s.ok()) return s;
  if (stems.empty()) return size_t{0};
  const std::string aside = dir_ + "/orphaned";
  if (Status s = MakeDirs(aside); !s.ok()) return s;
  // Kept apart by when they were set aside: a second reset's orphans do not overwrite the first's.
  const std::string suffix = fmt::format(".{}", static_cast<long long>(::time(nullptr)));
  size_t moved = 0;
  for (const std::string& stem : stems) {
    for (const char* ext : {".stdout", ".stderr"}) {
      std::string from = dir_ + "/" + stem + ext;
      std::string to = aside + "/" + stem + suffix + ext;
      if (::rename(from.c_str(), to.c_str()) == 0) {
        moved++;
      } else if (errno != ENOENT) {
        return Internal(fmt::format("cannot move the orphaned log {} to {}: {}", from, to, std::strerror(errno)));
      }
    }
  }
  return moved;
}

std::string LogStore::StdoutPath(const std::string& task_id) const { return FileStem(task_id) + ".stdout"; }
std::string LogStore::StderrPath(const std::string& task_id) const { return FileStem(task_id) + ".stderr"; }

Result<std::shared_ptr<LogSink>> LogStore::Sink(const std::string& task_id) {
  std::lock_guard lock(mu_);
  auto it = open_.find(task_id);
  if (it != open_.end()) return it->second;
  auto sink = std::make_shared<LogSink>(StdoutPath(task_id), StderrPath(task_id));
  if (Status s = sink->Open(); !s.ok()) return s;
  open_[task_id] = sink;
  return sink;
}

void LogStore::Release(const std::string& task_id) {
  std::lock_guard lock(mu_);
  open_.erase(task_id);
}

}  // namespace tidepool::server
