#include "workspace/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <thread>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/fs.h"
#include "common/strings.h"
#include "workspace/hash.h"
#include "workspace/ignore.h"
#include "workspace/scan_internal.h"

namespace tidepool::workspace {

using namespace internal;  // NOLINT: this file's own helpers

std::string WorkspaceRootFor(const std::string& cwd) {
  std::string dir = cwd;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  for (std::string d = dir;;) {
    struct stat st;
    if (::lstat((d == "/" ? std::string("/.git") : d + "/.git").c_str(), &st) == 0 &&
        (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
      return d;
    }
    auto slash = d.rfind('/');
    if (slash == std::string::npos || d == "/") break;
    d = slash == 0 ? "/" : d.substr(0, slash);
  }
  return dir;
}

Result<ScanResult> Scan(const std::vector<std::string>& roots, const ScanOptions& options) {
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  const int64_t start_ns = Ns(now);
  std::vector<std::string> unreadable;
  std::vector<RootWalk> walks(roots.size());
  // 1. The walk: lstat only, so a workspace over max_bytes is refused before anything is read.
  for (size_t i = 0; i < roots.size(); ++i) {
    RootWalk& w = walks[i];
    w.root = roots[i];
    while (w.root.size() > 1 && w.root.back() == '/') w.root.pop_back();
    if (w.root.empty() || w.root[0] != '/') return InvalidArgument(fmt::format("workspace root {} is not absolute", roots[i]));
    w.label = i == 0 ? "" : w.root + "/";
    // As many entries as last time (the stat cache's count) without moving them as the list grows.
    if (options.stat_cache && i == 0) w.items.reserve(options.stat_cache->size() + options.stat_cache->size() / 8 + 16);
    int fd = ::open(w.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return NotFound(fmt::format("workspace root {}: {}", w.root, std::strerror(errno)));
      if (errno == ENOTDIR) return InvalidArgument(fmt::format("workspace root {} is not a directory", w.root));
      return InvalidArgument(fmt::format("cannot read workspace root {}: {}", w.root, std::strerror(errno)));
    }
    struct stat st;
    ::fstat(fd, &st);
    Item root_item;
    root_item.kind = WorkspaceEntry::DIR;
    root_item.mode = st.st_mode & 07777;
    w.items.push_back(std::move(root_item));
    if (options.threads <= 1) {
      Walker(options, &unreadable).WalkDir(fd, "", "", &w);
      continue;
    }
    // The root's own entries here; its folders shared out among `threads` walkers, each with a
    // list of its own, merged after (the manifest is sorted later anyway).
    std::vector<Walker::Deferred> folders;
    int rootfd = ::dup(fd);
    Walker(options, &unreadable).WalkDir(fd, "", "", &w, &folders);
    std::atomic<size_t> next{0};
    const int n = std::min<int>(options.threads, static_cast<int>(folders.size()));
    std::vector<RootWalk> parts(static_cast<size_t>(std::max(n, 1)));
    std::vector<std::vector<std::string>> part_unreadable(parts.size());
    auto work = [&](size_t k) {
      RootWalk& part = parts[k];
      part.root = w.root;
      part.label = w.label;
      for (size_t j; (j = next++) < folders.size();) {
        const Walker::Deferred& f = folders[j];
        int sub = ::openat(rootfd, f.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
          Unreadable(part, f.name, errno, &part_unreadable[k]);
          continue;
        }
        Walker(options, &part_unreadable[k], f.ignores).WalkDir(sub, f.name, f.key, &part);
      }
    };
    std::vector<std::thread> helpers;
    for (int k = 1; k < n; ++k) helpers.emplace_back(work, static_cast<size_t>(k));
    work(0);
    for (std::thread& t : helpers) t.join();
    ::close(rootfd);
    for (size_t k = 0; k < parts.size(); ++k) {
      std::move(parts[k].items.begin(), parts[k].items.end(), std::back_inserter(w.items));
      for (const auto& [key, bytes] : parts[k].top_bytes) w.top_bytes[key] += bytes;
      unreadable.insert(unreadable.end(), part_unreadable[k].begin(), part_unreadable[k].end());
    }
    std::sort(unreadable.begin(), unreadable.end());  // as listed, whichever walker met them
  }
  ScanResult result;
  for (const RootWalk& w : walks) {
    for (const Item& it : w.items) {
      if (it.kind != WorkspaceEntry::FILE) continue;
      ++result.files;
      result.bytes += it.size;
    }
  }
  if (options.max_bytes > 0 && result.bytes > options.max_bytes) return TooLarge(walks, result.bytes, options.max_bytes);
  if (!unreadable.empty()) {
    // The scan fails: list the files that cannot be opened as well, without reading any.
    for (const RootWalk& w : walks) {
      for (const Item& it : w.items) {
        if (it.kind != WorkspaceEntry::FILE) continue;
        int fd = ::open(Join(w.root, it.path).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
          ::close(fd);
        } else if (errno != ENOENT) {
          unreadable.push_back(fmt::format("{}{} ({})", w.label, it.path, std::strerror(errno)));
        }
      }
    }
    return ListUnreadable(unreadable);
  }

  // 2. Hashes: from the stat cache, from `known`, else read.
  result.bytes = 0;
  for (RootWalk& w : walks) {
    const v1::WorkspaceRoot* known = nullptr;
    if (options.known) {
      for (const auto& r : options.known->roots()) {
        if (r.path() == w.root) known = &r;
      }
    }
    for (Item& it : w.items) {
      if (it.kind != WorkspaceEntry::FILE) continue;
      std::string abs = Join(w.root, it.path);
      if (options.stat_cache) it.hash = options.stat_cache->Lookup(abs, it.size, it.mtime_ns, it.ctime_ns, it.ino);
      if (it.hash.empty()) it.hash = KnownHash(known, it);
      if (it.hash.empty()) {
        int err = 0;
        Status s = HashFile(abs, w.label + it.path, &it, &err);
        if (!s.ok()) {
          if (err == 0) return s;
          unreadable.push_back(fmt::format("{}{} ({})", w.label, it.path, std::strerror(err)));
          continue;
        }
        result.hashed_bytes += it.size;
      }
      if (options.stat_cache && it.ctime_ns < start_ns - kRacyNs) {
        options.stat_cache->Remember(abs, it.size, it.mtime_ns, it.ctime_ns, it.ino, it.hash);
      }
      result.bytes += it.size;
    }
  }
  if (!unreadable.empty()) return ListUnreadable(unreadable);

  // 3. The manifest: entries sorted bytewise by path (so a directory comes before its contents).
  for (RootWalk& w : walks) {
    v1::WorkspaceRoot* root = result.manifest.add_roots();
    root->set_path(w.root);
    std::sort(w.items.begin(), w.items.end(), [](const Item& a, const Item& b) { return a.path < b.path; });
    root->mutable_entries()->Reserve(static_cast<int>(w.items.size()));
    for (Item& it : w.items) {
      WorkspaceEntry* e = root->add_entries();
      e->set_path(std::move(it.path));
      e->set_kind(it.kind);
      e->set_mode(it.mode);
      if (it.kind == WorkspaceEntry::FILE) {
        e->set_size(it.size);
        e->set_mtime_ns(it.mtime_ns);
        e->set_hash(std::move(it.hash));
      } else if (it.kind == WorkspaceEntry::SYMLINK) {
        e->set_target(std::move(it.target));
      }
    }
  }
  return result;
}

std::string AbsolutePath(const std::string& root, const std::string& rel) { return Join(root, rel); }

int FirstEntryFrom(const v1::WorkspaceRoot& root, const std::string& path) {
  const auto& es = root.entries();
  auto it = std::lower_bound(es.begin(), es.end(), path, [](const WorkspaceEntry& e, const std::string& p) { return e.path() < p; });
  return static_cast<int>(it - es.begin());
}

int EntryIndex(const v1::WorkspaceRoot& root, const std::string& path) {
  const int i = FirstEntryFrom(root, path);
  return i < root.entries_size() && root.entries(i).path() == path ? i : -1;
}

const v1::WorkspaceEntry* FindEntry(const v1::WorkspaceRoot& root, const std::string& path) {
  const int i = EntryIndex(root, path);
  return i < 0 ? nullptr : &root.entries(i);
}

Result<v1::WorkspaceManifest> ReadManifest(const BlobDir& store, const std::string& hash) {
  Result<MappedFile> bytes = MappedFile::Open(store.PathOf(hash));
  v1::WorkspaceManifest m;
  if (!bytes.ok() || !m.ParseFromArray(bytes->data().data(), static_cast<int>(bytes->data().size()))) {
    return InvalidArgument(fmt::format("{} is not a manifest in {}", hash, store.dir()));
  }
  return m;
}

std::map<std::string, std::string> SourcesOf(const v1::WorkspaceManifest& m) {
  std::map<std::string, std::string> out;
  for (const auto& r : m.roots()) {
    for (const auto& e : r.entries()) {
      if (e.kind() == WorkspaceEntry::FILE && !out.count(e.hash())) out.emplace(e.hash(), Join(r.path(), e.path()));
    }
  }
  return out;
}

std::string ManifestHash(const v1::WorkspaceManifest& m, std::string* serialized) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  std::string hash = Sha256Hex(bytes);
  if (serialized) *serialized = std::move(bytes);
  return hash;
}

}  // namespace tidepool::workspace
