// A check of an SQLite write-ahead log before SQLite opens it.
//
// SQLite replays a WAL frame by frame and stops, silently, at the first frame whose salts or
// cumulative checksum do not match (https://sqlite.org/fileformat2.html#walformat): transactions
// committed after a damaged frame are dropped without an error. This check reads the WAL the way
// SQLite does and reports that case instead.
//
// Contract of CheckWal(wal_path):
// - OK when the file is absent or empty, or when nothing committed lies beyond the frames SQLite
//   will replay. Left alone as normal: frames of a transaction that never committed (a crash
//   mid-write; a partial last frame), and frames of an earlier WAL generation (other salts: the
//   log restarted after a checkpoint and overwrote its start).
// - DataLoss-style error (FailedPrecondition) naming the file, the byte offset of the first bad
//   frame and what to do, when:
//   * the 32-byte header is damaged (bad magic, version, page size or checksum) while frames
//     follow it: SQLite would ignore the whole log;
//   * two or more frames of the current generation (the header's salts) with a commit mark lie
//     at or after the first frame that fails its checksum: SQLite writes a transaction only
//     after the one before it was fsync'd and acknowledged, so at least one acknowledged
//     transaction would be dropped.
// - Exactly one such commit frame is a torn last transaction: a power loss before its fsync
//   persists some of its frames and not others, and it was never acknowledged. It cannot be told
//   apart from damage to the last acknowledged transaction by the file alone, so it is accepted
//   and reported in WalSummary::torn_from (the caller logs it).
// - Reads only; never called while another process may be writing the WAL (the caller holds
//   the database's DbLock).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tidepool::store {

struct WalSummary {
  uint64_t valid_frames = 0;     // frames SQLite replays (up to and including the last commit)
  uint64_t committed_end = 0;    // byte offset just past the last valid commit frame
  uint32_t page_size = 0;
  uint64_t torn_from = 0;        // non-zero: a torn last transaction from this offset is dropped
};

Result<WalSummary> CheckWal(const std::string& wal_path);

}  // namespace tidepool::store
