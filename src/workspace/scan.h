// Reading a workspace into a manifest (client: before a task; agent: after one, to see what it
// changed). Pure of everything but the filesystem.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/blob_dir.h"

namespace tidepool::workspace {

// The workspace root for a working directory: the git work tree that contains it (the nearest
// ancestor holding `.git`, a directory or a file), else the directory itself.
std::string WorkspaceRootFor(const std::string& cwd);

// Remembers path, size, mtime, ctime and inode -> hash, so an unchanged file is not read again.
// Saved to and loaded from a file (client: ~/.cache/tidepool/stat-<sha of root>); a missing or
// damaged file is an empty cache, never an error.
class StatCache {
 public:
  static StatCache Load(const std::string& path);
  Status Save() const;  // atomically; no-op when nothing changed or path is ""
  // The hash remembered for this exact stat, or "".
  std::string Lookup(const std::string& abs_path, uint64_t size, int64_t mtime_ns, int64_t ctime_ns, uint64_t ino) const;
  size_t size() const { return entries_.size(); }
  void Remember(const std::string& abs_path, uint64_t size, int64_t mtime_ns, int64_t ctime_ns, uint64_t ino, const std::string& hash);

 private:
  struct Key {
    uint64_t size;
    int64_t mtime_ns, ctime_ns;
    uint64_t ino;
    std::string hash;
  };
  std::string path_;
  std::map<std::string, Key> entries_;
  bool dirty_ = false;
};

struct ScanOptions {
  bool gitignore = false;       // .gitignore files count as well as .tidepoolignore
  uint64_t max_bytes = 0;       // 0 = no limit; over it: ResourceExhausted naming the size and the largest folders
  StatCache* stat_cache = nullptr;
  // Entries known to be unchanged when size and mtime_ns still match (the agent's view of what it
  // materialized): their hash is taken without reading the file.
  const v1::WorkspaceManifest* known = nullptr;
  // Walkers of the tree at once (the root's folders are shared out among them): the client's scan
  // uses two; the agent's one (its tasks want the machine; and a thread made inside the owner's
  // rights would have them too, agent/fs_user.h, but one keeps that simple).
  int threads = 1;
  // Rescan: every file among the dirty paths is read again, whatever its size and mtime (a watcher
  // that saw a write cannot tell a second one within the clock's tick from none).
  bool rehash_dirty = false;
};

struct ScanResult {
  v1::WorkspaceManifest manifest;  // one root per input, in input order
  uint64_t files = 0;
  uint64_t bytes = 0;           // sum of file sizes
  uint64_t hashed_bytes = 0;    // of those, read and hashed this time (the rest came from caches)
};

// Scans each absolute root (a directory; a root that is a file or a missing path is an error
// naming it). Ignores what the ignore files say (ignore.h) and never descends into another
// filesystem's special files: sockets, FIFOs and devices are skipped (listed in no error).
// Unreadable files or directories fail the scan with InvalidArgument listing them (up to 20,
// then "and N more"). A file whose size or mtime changes while it is read is read again, up to 3
// times, then fails the scan naming it.
Result<ScanResult> Scan(const std::vector<std::string>& roots, const ScanOptions& options);

// `state` (root `root` as a scan gave it) brought up to date for `dirty` (paths relative to the
// root, as a RootWatch gives them, workspace/root_watch.h) without walking the rest: each of them
// is looked at again (a file whose size and mtime are as `state` says keeps its hash; others are
// read), a new folder is walked, a gone or now ignored one goes with all below it. Unavailable
// when an ignore file is among them (the caller scans the root whole). Errors as Scan's.
Result<ScanResult> Rescan(const std::string& root, const v1::WorkspaceRoot& state, const std::set<std::string>& dirty,
                          const ScanOptions& options);

// What Rescan finds, told as its difference from `state`: the entries that are new or differ
// (files hashed) and the paths of state's entries that went. delta.path() is the root.
struct RootChanges {
  v1::RootDelta delta;
  uint64_t hashed_bytes = 0;
};
Result<RootChanges> RescanChanges(const std::string& root, const v1::WorkspaceRoot& state,
                                  const std::set<std::string>& dirty, const ScanOptions& options);

// `rel` (a path relative to `root`, "" = the root) as an absolute path.
std::string AbsolutePath(const std::string& root, const std::string& rel);

// In a root's entries sorted by path, as a scan makes them (a binary search): the index of the
// first entry whose path is not before `path` (entries_size() when none), ...
int FirstEntryFrom(const v1::WorkspaceRoot& root, const std::string& path);
// ... the index of the entry at `path` (-1 when none), and that entry (null when none).
int EntryIndex(const v1::WorkspaceRoot& root, const std::string& path);
const v1::WorkspaceEntry* FindEntry(const v1::WorkspaceRoot& root, const std::string& path);

// For each file content hash of `m`: one absolute path holding it (what to upload from).
std::map<std::string, std::string> SourcesOf(const v1::WorkspaceManifest& m);

// The hash of a manifest: what names it in a store (SHA-256 of its deterministic serialization).
std::string ManifestHash(const v1::WorkspaceManifest& m, std::string* serialized = nullptr);
// The manifest named `hash` in `store`: InvalidArgument when it is missing or not a manifest.
Result<v1::WorkspaceManifest> ReadManifest(const BlobDir& store, const std::string& hash);

}  // namespace tidepool::workspace
