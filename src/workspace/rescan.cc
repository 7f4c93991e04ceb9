#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "workspace/manifest_delta.h"
#include "workspace/scan.h"
#include "workspace/scan_internal.h"

namespace tidepool::workspace {

using namespace internal;  // NOLINT: scan.cc's helpers

Result<RootChanges> RescanChanges(const std::string& root_path, const v1::WorkspaceRoot& state,
                                  const std::set<std::string>& dirty, const ScanOptions& options) {
  for (const std::string& p : dirty) {
    std::string_view name = std::string_view(p).substr(p.rfind('/') == std::string::npos ? 0 : p.rfind('/') + 1);
    if (name == ".tidepoolignore" || name == ".gitignore") {
      return Unavailable(fmt::format("{} changed: the rules for the whole root may have", p));
    }
  }
  RootWalk walk;
  walk.root = root_path;
  while (walk.root.size() > 1 && walk.root.back() == '/') walk.root.pop_back();
  int rootfd = ::open(walk.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return NotFound(fmt::format("workspace root {}: {}", walk.root, std::strerror(errno)));
  std::vector<std::string> unreadable;
  std::map<std::string, std::optional<Item>> updates;  // path -> its entry now (nullopt: gone)
  std::set<std::string> cut;                           // "dir/": state's entries below it all go
  // Whether a folder above `p` is cut: each of its ancestors looked up, not each cut compared.
  auto under_cut = [&](const std::string& p) {
    for (size_t slash = p.find('/'); !cut.empty() && slash != std::string::npos; slash = p.find('/', slash + 1)) {
      if (cut.count(p.substr(0, slash + 1))) return true;
    }
    return false;
  };
  auto in_state = [&](const std::string& p) { return FindEntry(state, p); };
  auto gone = [&](const std::string& p) {
    updates[p] = std::nullopt;
    cut.insert(p + "/");
  };
  for (const std::string& p : dirty) {  // sorted: a directory comes before what is below it
    if (under_cut(p)) continue;
    if (p.empty()) {
      struct stat st;
      if (::fstat(rootfd, &st) != 0) continue;
      Item item;
      item.kind = WorkspaceEntry::DIR;
      item.mode = st.st_mode & 07777;
      updates[p] = std::move(item);
      continue;
    }
    // Down to its folder, with the ignore rules of each folder on the way.
    Walker w(options, &unreadable);
    int dfd = ::dup(rootfd);
    w.PushIgnoresOf(dfd, "", walk);
    bool away = false;
    size_t pos = 0;
    for (size_t slash; !away && (slash = p.find('/', pos)) != std::string::npos; pos = slash + 1) {
      const std::string dir = p.substr(0, slash);
      if (w.Ignored(dir, true)) {
        away = true;
        break;
      }
      int sub = ::openat(dfd, p.substr(pos, slash - pos).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0 && errno != ENOENT && errno != ENOTDIR && errno != ELOOP) Unreadable(walk, dir, errno, &unreadable);
      ::close(dfd);
      dfd = sub;
      if (sub < 0) {
        away = true;
        break;
      }
      w.PushIgnoresOf(dfd, dir, walk);
    }
    if (away) {
      if (dfd >= 0) ::close(dfd);
      gone(p);
      continue;
    }
    const std::string name = p.substr(pos);
    struct stat st;
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) Unreadable(walk, p, errno, &unreadable);
      ::close(dfd);
      gone(p);
      continue;
    }
    const bool is_dir = S_ISDIR(st.st_mode);
    if ((!is_dir && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) || w.Ignored(p, is_dir)) {
      ::close(dfd);
      gone(p);
      continue;
    }
    const WorkspaceEntry* was = in_state(p);
    Item item;
    item.path = p;
    if (int err = FillItem(dfd, name.c_str(), st, &item); err != 0) {
      if (err != ENOENT && err != EINVAL) Unreadable(walk, p, err, &unreadable);
      ::close(dfd);
      gone(p);
      continue;
    }
    if (was && was->kind() == WorkspaceEntry::DIR && !is_dir) cut.insert(p + "/");
    if (is_dir && (!was || was->kind() != WorkspaceEntry::DIR)) {
      // A new folder: everything below it is walked.
      cut.insert(p + "/");
      int sub = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        Unreadable(walk, p, errno, &unreadable);
      } else {
        w.WalkDir(sub, p, p, &walk);
      }
    }
    updates[p] = std::move(item);
    ::close(dfd);
  }
  ::close(rootfd);
  for (Item& it : walk.items) updates[it.path] = std::move(it);
  if (!unreadable.empty()) return ListUnreadable(unreadable);

  RootChanges result;
  for (auto& [p, it] : updates) {
    if (!it || it->kind != WorkspaceEntry::FILE) continue;
    const WorkspaceEntry* e = options.rehash_dirty ? nullptr : in_state(p);
    if (e && e->kind() == WorkspaceEntry::FILE) it->hash = KnownHash(&state, *it);
    if (!it->hash.empty()) continue;
    int err = 0;
    Status s = HashFile(Join(walk.root, p), p, &*it, &err);
    if (!s.ok()) {
      if (err == 0) return s;
      unreadable.push_back(fmt::format("{} ({})", p, std::strerror(err)));
      continue;
    }
    result.hashed_bytes += it->size;
  }
  if (!unreadable.empty()) return ListUnreadable(unreadable);

  // What differs from state: each update that is not as state has it, each of state's entries
  // that went (named, or below a folder that went or is no folder now and not walked again).
  v1::RootDelta& d = result.delta;
  d.set_path(walk.root);
  std::string was_bytes, now_bytes;
  for (const auto& [p, it] : updates) {
    const WorkspaceEntry* was = in_state(p);
    if (!it) {
      if (was) d.add_removed(p);
      continue;
    }
    WorkspaceEntry e;
    e.set_path(it->path);
    e.set_kind(it->kind);
    e.set_mode(it->mode);
    if (it->kind == WorkspaceEntry::FILE) {
      e.set_size(it->size);
      e.set_mtime_ns(it->mtime_ns);
      e.set_hash(it->hash);
    } else if (it->kind == WorkspaceEntry::SYMLINK) {
      e.set_target(it->target);
    }
    if (was && was->SerializeToString(&was_bytes) && e.SerializeToString(&now_bytes) && was_bytes == now_bytes) continue;
    *d.add_put() = std::move(e);
  }
  std::set<std::string> below;
  for (const std::string& c : cut) {
    for (int i = FirstEntryFrom(state, c); i < state.entries_size() && state.entries(i).path().compare(0, c.size(), c) == 0; ++i) {
      if (!updates.count(state.entries(i).path())) below.insert(state.entries(i).path());
    }
  }
  for (const std::string& p : below) d.add_removed(p);
  return result;
}

Result<ScanResult> Rescan(const std::string& root_path, const v1::WorkspaceRoot& state, const std::set<std::string>& dirty,
                          const ScanOptions& options) {
  auto changes = RescanChanges(root_path, state, dirty, options);
  if (!changes.ok()) return changes.status();
  ScanResult result;
  result.hashed_bytes = changes->hashed_bytes;
  v1::WorkspaceRoot* out = result.manifest.add_roots();
  *out = state;
  out->set_path(changes->delta.path());
  if (Status s = ApplyRootDelta(out, changes->delta); !s.ok()) return s;
  for (const WorkspaceEntry& e : out->entries()) {
    if (e.kind() != WorkspaceEntry::FILE) continue;
    ++result.files;
    result.bytes += e.size();
  }
  return result;
}

}  // namespace tidepool::workspace
