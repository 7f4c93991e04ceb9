#include "common/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace tidepool {

Result<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(fmt::format("{}: {}", path, std::strerror(errno)));
  // Read into a string sized by fstat (a file that grows meanwhile is read to its end).
  struct stat st;
  std::string out;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.resize(static_cast<size_t>(st.st_size));
  size_t have = 0;
  for (;;) {
    if (have == out.size()) out.resize(std::max<size_t>(out.size() * 2, 4096));
    ssize_t n = ::read(fd, out.data() + have, out.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return NotFound(fmt::format("{}: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(have);
  return out;
}

Result<MappedFile> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(fmt::format("{}: {}", path, std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(fmt::format("{}: not a regular file", path));
  }
  if (st.st_size == 0) {
    ::close(fd);
    return MappedFile(nullptr, 0);
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) return Internal(fmt::format("{}: {}", path, std::strerror(err)));
  return MappedFile(p, static_cast<size_t>(st.st_size));
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

Status WriteFileAtomic(const std::string& path, const std::string& content, int mode, bool sync) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Internal(fmt::format("{}: {}", tmp, std::strerror(errno)));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Internal(fmt::format("{}: {}", tmp, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (sync) ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Internal(fmt::format("{}: {}", path, std::strerror(err)));
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& path, int mode) {
  std::error_code ec;
  const bool existed = std::filesystem::is_directory(path, ec);
  std::filesystem::create_directories(path, ec);
  if (ec) return Internal(fmt::format("cannot create directory {}: {}", path, ec.message()));
  // Only a directory made here gets `mode`: an existing one keeps what its owner chose.
  if (!existed && ::chmod(path.c_str(), mode) != 0) {
    return Internal(fmt::format("cannot set the mode of {}: {}", path, std::strerror(errno)));
  }
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string DefaultDataDir() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && *xdg) return std::string(xdg) + "/tidepool";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.local/share/tidepool";
}

std::string ProgramBeside(const std::string& exe, const std::string& name) {
  auto slash = exe.rfind('/');
  if (slash == std::string::npos) return "";
  std::string path = exe.substr(0, slash + 1) + name;
  return ::access(path.c_str(), X_OK) == 0 ? path : "";
}

std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "tidepool";
  buf[n] = '\0';
  return buf;
}

}  // namespace tidepool
