#include "workspace/blob_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "common/fs.h"
#include "workspace/hash.h"

namespace tidepool::workspace {
namespace {

Status NotAHash(const std::string& hash) { return InvalidArgument(fmt::format("not a blob name: {:?}", hash)); }

Status WriteError(const std::string& dir, const std::string& what, int err) {
  if (err == ENOSPC || err == EDQUOT) {
    return {StatusCode::kResourceExhausted, fmt::format("no space left in the blob store {}: {}", dir, std::strerror(err))};
  }
  return Internal(fmt::format("{}: {}", what, std::strerror(err)));
}

Status WriteAll(int fd, std::string_view data, uint64_t offset, const std::string& dir, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return WriteError(dir, path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace

std::string OwnerStoreName(const std::string& owner) { return Sha256Hex("owner:" + owner).substr(0, 32); }

Result<BlobDir> BlobDir::Open(const std::string& dir) {
  Status s = MakeDirs(dir + "/partial", 0700);
  if (!s.ok()) return s;
  ::chmod(dir.c_str(), 0700);
  return BlobDir(dir);
}

bool BlobDir::Has(const std::string& hash) const {
  if (!IsHash(hash)) return false;
  struct stat st;
  return ::stat(PathOf(hash).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string BlobDir::PathOf(const std::string& hash) const {
  if (!IsHash(hash)) return dir_ + "/invalid-blob-name";
  return fmt::format("{}/{}/{}", dir_, hash.substr(0, 2), hash);
}

uint64_t BlobDir::PartialSize(const std::string& hash) const {
  if (!IsHash(hash)) return 0;
  struct stat st;
  if (::stat((dir_ + "/partial/" + hash).c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

Status BlobDir::Append(const std::string& hash, uint64_t offset, std::string_view data, bool last) {
  if (!IsHash(hash)) return NotAHash(hash);
  if (Has(hash)) return Status::Ok();  // another writer completed it
  const std::string partial = dir_ + "/partial/" + hash;
  int fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return WriteError(dir_, partial, errno);
  struct stat st;
  // Bytes before the end are the same for every honest writer (the name is their hash; a wrong
  // one is caught when the blob completes): a write over them (two agents of one machine fetching
  // one blob) puts the same bytes there again. Only a gap is refused.
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < offset) {
    ::close(fd);
    return FailedPrecondition(
        fmt::format("blob {}: a write at offset {} but {} bytes are there", hash, offset, static_cast<uint64_t>(st.st_size)));
  }
  Status s = WriteAll(fd, data, offset, dir_, partial);
  if (!s.ok() || !last) {
    ::close(fd);
    return s;
  }
  Result<FileHash> h = HashFd(fd);
  ::close(fd);
  if (!h.ok()) return Internal(fmt::format("{}: {}", partial, h.status().message()));
  if (h->hash != hash) {
    if (Has(hash)) return Status::Ok();  // completed by another writer meanwhile
    ::unlink(partial.c_str());
    return InvalidArgument(
        fmt::format("blob {}: its {} bytes hash to {}; discarded (data corrupted or misnamed)", hash, h->size, h->hash));
  }
  const std::string sub = dir_ + "/" + hash.substr(0, 2);
  if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) return WriteError(dir_, sub, errno);
  if (::rename(partial.c_str(), PathOf(hash).c_str()) != 0) {
    if (errno == ENOENT && Has(hash)) return Status::Ok();  // another writer renamed it first
    return WriteError(dir_, PathOf(hash), errno);
  }
  return Status::Ok();
}

Status BlobDir::Put(const std::string& hash, std::string_view data) {
  if (!IsHash(hash)) return NotAHash(hash);
  if (Has(hash)) return Status::Ok();
  const std::string got = Sha256Hex(data);
  if (got != hash) {
    return InvalidArgument(fmt::format("blob {}: its {} bytes hash to {}; not stored (data corrupted or misnamed)", hash,
                                       data.size(), got));
  }
  // A name of its own (Append's partial file may be another writer's, mid-way).
  static std::atomic<uint64_t> seq{0};
  const std::string partial = fmt::format("{}/partial/{}.put-{}-{}", dir_, hash, ::getpid(), seq++);
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return WriteError(dir_, partial, errno);
  Status s = WriteAll(fd, data, 0, dir_, partial);
  ::close(fd);
  if (!s.ok()) {
    ::unlink(partial.c_str());
    return s;
  }
  const std::string sub = dir_ + "/" + hash.substr(0, 2);
  if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) return WriteError(dir_, sub, errno);
  if (::rename(partial.c_str(), PathOf(hash).c_str()) != 0) {
    const int err = errno;
    ::unlink(partial.c_str());
    return WriteError(dir_, PathOf(hash), err);
  }
  return Status::Ok();
}

Status BlobDir::PutFile(const std::string& hash, const std::string& path) {
  if (!IsHash(hash)) return NotAHash(hash);
  if (Has(hash)) return Status::Ok();
  int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return NotFound(fmt::format("{}: {}", path, std::strerror(errno)));
  // A name of its own (not the resumable partial file): a whole copy needs no resuming, and two
  // copies at once must not truncate each other.
  std::string partial = dir_ + "/partial/" + hash + ".copy-XXXXXX";
  int out = ::mkstemp(partial.data());
  if (out < 0) {
    int err = errno;
    ::close(in);
    return WriteError(dir_, partial, err);
  }
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  uint64_t size = 0;
  Status s;
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = Internal(fmt::format("{}: {}", path, std::strerror(errno)));
      break;
    }
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    sha.Update(chunk);
    s = WriteAll(out, chunk, size, dir_, partial);
    if (!s.ok()) break;
    size += static_cast<uint64_t>(n);
  }
  ::close(in);
  ::close(out);
  const std::string got = sha.FinalHex();
  if (s.ok() && got != hash) {
    s = InvalidArgument(fmt::format("{} hashes to {}, not {} (changed while it was copied?)", path, got, hash));
  }
  if (!s.ok()) {
    ::unlink(partial.c_str());
    return s;
  }
  const std::string sub = dir_ + "/" + hash.substr(0, 2);
  if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) return WriteError(dir_, sub, errno);
  if (::rename(partial.c_str(), PathOf(hash).c_str()) != 0) return WriteError(dir_, PathOf(hash), errno);
  return Status::Ok();
}

Result<std::string> BlobDir::Read(const std::string& hash, uint64_t offset, uint64_t max) const {
  if (!IsHash(hash)) return NotAHash(hash);
  int fd = ::open(PathOf(hash).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound(fmt::format("blob {}: {}", hash, std::strerror(errno)));
  struct stat st;
  ::fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string out(offset < size ? std::min(max, size - offset) : 0, '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

Result<uint64_t> BlobDir::SizeOf(const std::string& hash) const {
  if (!IsHash(hash)) return NotAHash(hash);
  struct stat st;
  if (::stat(PathOf(hash).c_str(), &st) != 0) return NotFound(fmt::format("blob {}: {}", hash, std::strerror(errno)));
  return static_cast<uint64_t>(st.st_size);
}

void BlobDir::Touch(const std::string& hash) const {
  if (IsHash(hash)) ::utimensat(AT_FDCWD, PathOf(hash).c_str(), nullptr, 0);
}

uint64_t BlobDir::Evict(uint64_t max_bytes, const std::vector<std::string>& keep) {
  struct Blob {
    int64_t used_ns;
    uint64_t size;
    std::string hash;
  };
  std::vector<Blob> blobs;
  uint64_t total = 0;
  DIR* top = ::opendir(dir_.c_str());
  if (!top) return 0;
  while (struct dirent* sub = ::readdir(top)) {
    std::string name = sub->d_name;
    if (name.size() != 2 || !std::isxdigit(static_cast<unsigned char>(name[0])) ||
        !std::isxdigit(static_cast<unsigned char>(name[1]))) {
      continue;
    }
    DIR* d = ::opendir((dir_ + "/" + name).c_str());
    if (!d) continue;
    while (struct dirent* e = ::readdir(d)) {
      std::string hash = e->d_name;
      struct stat st;
      if (!IsHash(hash) || hash.compare(0, 2, name) != 0 || ::fstatat(::dirfd(d), e->d_name, &st, 0) != 0) continue;
      blobs.push_back({int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec, static_cast<uint64_t>(st.st_size),
                       std::move(hash)});
      total += static_cast<uint64_t>(st.st_size);
    }
    ::closedir(d);
  }
  ::closedir(top);
  std::sort(blobs.begin(), blobs.end(), [](const Blob& a, const Blob& b) { return a.used_ns < b.used_ns; });
  const std::set<std::string> kept(keep.begin(), keep.end());
  uint64_t removed = 0;
  for (const Blob& b : blobs) {
    if (total <= max_bytes) break;
    if (kept.count(b.hash)) continue;
    if (::unlink(PathOf(b.hash).c_str()) == 0) {
      total -= b.size;
      removed += b.size;
    }
  }
  return removed;
}

}  // namespace tidepool::workspace
