#include "store/wal_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace tidepool::store {

namespace {

constexpr uint32_t kMagic = 0x377f0682;  // | 1: checksums over big-endian words
constexpr uint32_t kVersion = 3007000;
constexpr size_t kHeader = 32;
constexpr size_t kFrameHeader = 24;

uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t Le32(const uint8_t* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[0]};
}

// SQLite's walChecksumBytes: n is a multiple of 8; s carries the running sums.
void Checksum(bool big_endian, const uint8_t* a, size_t n, uint32_t s[2]) {
  for (size_t i = 0; i < n; i += 8) {
    uint32_t x0 = big_endian ? Be32(a + i) : Le32(a + i);
    uint32_t x1 = big_endian ? Be32(a + i + 4) : Le32(a + i + 4);
    s[0] += x0 + s[1];
    s[1] += x1 + s[0];
  }
}

std::string Remedy(const std::string& wal) {
  return fmt::format(
      "the server will not start on it, since SQLite would silently drop those transactions. Stop here and keep a "
      "copy of the database and {0}; then restore from a backup, or salvage what is readable with "
      "`sqlite3 DB .recover` (which also drops the damaged part), and start again",
      wal);
}

}  // namespace

Result<WalSummary> CheckWal(const std::string& wal) {
  WalSummary out;
  int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    int e = errno;
    return FailedPrecondition(fmt::format("cannot read the write-ahead log {}: {}", wal, std::strerror(e)));
  }
  std::vector<uint8_t> data;
  {
    struct stat st {};
    if (::fstat(fd, &st) == 0) data.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < data.size()) {
      ssize_t n = ::pread(fd, data.data() + got, data.size() - got, static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int e = n < 0 ? errno : EIO;
        ::close(fd);
        return FailedPrecondition(fmt::format("cannot read the write-ahead log {}: {}", wal, std::strerror(e)));
      }
      got += static_cast<size_t>(n);
    }
    ::close(fd);
  }
  if (data.size() < kHeader) return out;  // no header: nothing was ever logged
  const uint8_t* h = data.data();
  uint32_t magic = Be32(h), page = Be32(h + 8);
  bool big_endian = (magic & 1) != 0;
  uint32_t sum[2] = {0, 0};
  bool header_ok = (magic & ~1u) == kMagic && Be32(h + 4) == kVersion && page >= 512 && page <= 65536 &&
                   (page & (page - 1)) == 0;
  if (header_ok) {
    Checksum(big_endian, h, 24, sum);
    header_ok = sum[0] == Be32(h + 24) && sum[1] == Be32(h + 28);
  }
  if (!header_ok) {
    if (data.size() <= kHeader) return out;
    return FailedPrecondition(fmt::format(
        "the write-ahead log {} is damaged: its header (offset 0) is not valid, and the {} bytes after it would be "
        "ignored; {}",
        wal, data.size() - kHeader, Remedy(wal)));
  }
  out.page_size = page;
  const uint32_t salt1 = Be32(h + 16), salt2 = Be32(h + 20);
  const size_t frame = kFrameHeader + page;
  uint64_t first_bad = 0;  // offset of the first frame SQLite would not replay, 0 while none
  uint64_t later_commits = 0, first_later_commit = 0;
  for (size_t off = kHeader; off + frame <= data.size(); off += frame) {
    const uint8_t* f = data.data() + off;
    const bool ours = Be32(f + 8) == salt1 && Be32(f + 12) == salt2;
    const bool commit = Be32(f + 4) != 0;
    if (first_bad == 0) {
      uint32_t next[2] = {sum[0], sum[1]};
      Checksum(big_endian, f, 8, next);
      Checksum(big_endian, f + kFrameHeader, page, next);
      if (ours && Be32(f) != 0 && next[0] == Be32(f + 16) && next[1] == Be32(f + 20)) {
        sum[0] = next[0];
        sum[1] = next[1];
        if (commit) {
          out.committed_end = off + frame;
          out.valid_frames = (off + frame - kHeader) / frame;
        }
        continue;
      }
      first_bad = off;
    }
    if (ours && commit && later_commits++ == 0) first_later_commit = off;
  }
  if (later_commits >= 2) {
    return FailedPrecondition(fmt::format(
        "the write-ahead log {} is damaged: the frame at offset {} fails its checksum, and {} transactions "
        "committed after it (commit frames from offset {}) would be lost; {}",
        wal, first_bad, later_commits, first_later_commit, Remedy(wal)));
  }
  if (later_commits == 1) out.torn_from = first_bad;
  return out;
}

}  // namespace tidepool::store
