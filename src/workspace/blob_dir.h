// A content-addressed store in one directory: the server's store of one owner, an agent's cache
// of one owner. A blob is a file named by the SHA-256 of its bytes (`DIR/ab/abcdef...`); it
// appears under that name only once complete and checked (written to `DIR/partial/HASH`, then
// renamed), so a reader never sees part of one. A cut-off write leaves its partial file, and the
// next write of that blob resumes at its end.
//
// Writers of one blob may overlap (two agents of one machine fetching it into a shared cache):
// a write at or before the partial file's end puts the same bytes there again (the content is
// named by its hash, which is checked when it completes), and a writer that finds the blob
// complete is done. Only a write past the end (a gap) is refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tidepool::workspace {

// The folder name of `owner`'s store under a parent of stores (the server's per owner, an agent's
// cache per owner): the first 32 hex digits of SHA-256("owner:" + owner), never the name itself.
std::string OwnerStoreName(const std::string& owner);

class BlobDir {
 public:
  // Creates `dir` (0700) if need be.
  static Result<BlobDir> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // `hash` must satisfy IsHash (else false / errors: a name is never a path).
  bool Has(const std::string& hash) const;
  std::string PathOf(const std::string& hash) const;  // where the complete blob is (or would be)
  // Bytes of a cut-off write of `hash` (0 if none).
  uint64_t PartialSize(const std::string& hash) const;

  // Writes `data` at `offset` of the partial blob. `offset` must be at most PartialSize (else
  // FailedPrecondition naming both); a blob already complete is OK at once; `last` completes it: its bytes are hashed and it is renamed
  // into place, or removed with DataLoss-like InvalidArgument if they hash to something else.
  // A full disk is ResourceExhausted naming the directory.
  Status Append(const std::string& hash, uint64_t offset, std::string_view data, bool last);
  // A whole blob the caller has in memory, hashed there (not written, then read back and hashed,
  // as Append's last chunk is): InvalidArgument when `data` does not hash to `hash`.
  Status Put(const std::string& hash, std::string_view data);
  // Copies a whole file in (hashing it as it goes; fails if it does not hash to `hash`).
  Status PutFile(const std::string& hash, const std::string& path);
  // Up to `max` bytes of a complete blob from `offset`.
  Result<std::string> Read(const std::string& hash, uint64_t offset, uint64_t max) const;
  Result<uint64_t> SizeOf(const std::string& hash) const;

  // Marks blobs as used now (for eviction).
  void Touch(const std::string& hash) const;
  // Removes least recently used complete blobs until the total is at most `max_bytes`, never
  // one in `keep`. Returns the bytes removed.
  uint64_t Evict(uint64_t max_bytes, const std::vector<std::string>& keep = {});

 private:
  explicit BlobDir(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace tidepool::workspace
