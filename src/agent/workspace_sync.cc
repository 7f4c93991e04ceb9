#include "agent/workspace_sync.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/fs_user.h"
#include "common/fs.h"
#include "workspace/blob_chunks.h"
#include "workspace/diff.h"
#include "workspace/hash.h"
#include "workspace/manifest_delta.h"
#include "workspace/scan.h"

namespace tidepool::agent {

namespace {

constexpr uint64_t kFetchBytes = 16u << 20;   // asked for per BlobFetch
constexpr size_t kFetchBlobs = 4096;          // blobs named per BlobFetch
constexpr uint64_t kPutBytes = 16u << 20;     // sent per round before asking what is still missing
constexpr int kRoundsWithoutProgress = 5;

double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// A root's entries as a hash would see them (to tell whether two are the same).
std::string RootBytes(const v1::WorkspaceRoot& root) {
  v1::WorkspaceManifest m;
  *m.add_roots() = root;
  std::string bytes;
  workspace::ManifestHash(m, &bytes);
  return bytes;
}

}  // namespace

TaskWorkspace::TaskWorkspace(std::string task_id, std::string owner, v1::WorkspaceStart start, int64_t uid,
                             int64_t gid, WorkspaceShared* shared, Send send)
    : task_id_(std::move(task_id)),
      owner_(std::move(owner)),
      start_(std::move(start)),
      uid_(uid),
      gid_(gid),
      shared_(shared),
      send_(std::move(send)) {}

void TaskWorkspace::Fail(const Status& s) {
  Phase was = phase_;
  phase_ = Phase::kDone;
  request_ = 0;
  if (was == Phase::kCollecting) {
    Done(s);
  } else if (ready_) {
    pending_ = [ready = ready_, s] { ready(s); };
  }
}

void TaskWorkspace::Done(Result<std::string> r) {
  if (done_) pending_ = [done = done_, r = std::move(r)] { done(r); };
}

void TaskWorkspace::AsOwner(const std::function<void()>& work) {
  {
    AsUser as(uid_, gid_);
    if (as.ok()) {
      work();
    } else {
      Fail(Internal(fmt::format("the agent could not take the filesystem rights of uid {} for the workspace", uid_)));
    }
  }
  // The callback with the agent's own rights (it starts the command, reports the exit); it may
  // end this object's life, so nothing of it is touched after.
  if (pending_) {
    std::function<void()> p = std::move(pending_);
    pending_ = nullptr;
    p();
  }
}

// Owner `uid_`'s store in the agent's cache is theirs: the agent makes it (the cache is root's),
// then hands it over, and works in it with the owner's rights alone. The cache's folder and those
// above it must be crossable (0711: crossed, not listed); the cache's own is made so.
Status TaskWorkspace::OwnCache(const std::string& dir) {
  struct stat st;
  for (std::string p = shared_->cache_dir; !p.empty() && p != "/"; p = p.substr(0, p.rfind('/'))) {
    if (::stat(p.c_str(), &st) != 0 || (st.st_mode & S_IXOTH)) continue;
    if (p == shared_->cache_dir && ::chmod(p.c_str(), (st.st_mode & 07777) | 0111) == 0) continue;
    return FailedPrecondition(fmt::format(
        "the agent's cache cannot be reached by the task's user: {} is mode {:04o}; give it o+x (0711)", p,
        st.st_mode & 07777));
  }
  if (::lstat(dir.c_str(), &st) != 0) return Internal(fmt::format("the agent's cache {}: {}", dir, std::strerror(errno)));
  if (st.st_uid == static_cast<uid_t>(uid_) && st.st_gid == static_cast<gid_t>(gid_)) return Status::Ok();
  auto chown = [&](const std::string& p) {
    if (::lchown(p.c_str(), static_cast<uid_t>(uid_), static_cast<gid_t>(gid_)) != 0) {
      return Internal(fmt::format("the agent's cache: cannot give {} to uid {}: {}", p, uid_, std::strerror(errno)));
    }
    return Status::Ok();
  };
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    if (Status s = chown(it->path().string()); !s.ok()) return s;
  }
  return chown(dir);
}

void TaskWorkspace::Prepare(std::function<void(Status)> ready) {
  ready_ = std::move(ready);
  began_ = std::chrono::steady_clock::now();
  phase_ = Phase::kFetching;
  const std::string dir = shared_->cache_dir + "/" + workspace::OwnerStoreName(owner_);
  if (uid_ >= 0) (void)MakeDirs(shared_->cache_dir, 0711);  // crossable by task users (OwnCache)
  auto c = workspace::BlobDir::Open(dir);
  Status owned = c.ok() && uid_ >= 0 ? OwnCache(dir) : Status::Ok();
  AsOwner([&] {
    if (!c.ok()) return Fail(Status(c.status().code(), fmt::format("the agent's cache: {}", c.status().message())));
    if (!owned.ok()) return Fail(owned);
    cache_.emplace(std::move(*c));
    FetchMissing();
  });
}

void TaskWorkspace::FetchMissing() {
  v1::AgentMessage m;
  v1::BlobFetch* f = m.mutable_blob_fetch();
  if (!manifest_) {
    if (shared_->parsed && shared_->parsed_owner == owner_ && shared_->parsed_hash == start_.manifest()) {
      manifest_ = shared_->parsed;
    } else if (cache_->Has(start_.manifest())) {
      auto parsed = workspace::ReadManifest(*cache_, start_.manifest());
      if (!parsed.ok()) {
        return Fail(Internal(fmt::format("workspace manifest {} cannot be read from the cache", start_.manifest())));
      }
      manifest_ = std::make_shared<v1::WorkspaceManifest>(std::move(*parsed));
      shared_->parsed_owner = owner_;
      shared_->parsed_hash = start_.manifest();
      shared_->parsed = manifest_;
    } else {
      v1::BlobState* w = f->add_wants();
      w->set_hash(start_.manifest());
      w->set_have(cache_->PartialSize(start_.manifest()));
      // The manifest this agent has parsed: the server may send the new one as its delta from it.
      if (shared_->parsed && shared_->parsed_owner == owner_ && !whole_manifest_) {
        f->set_manifest_base(shared_->parsed_hash);
      }
    }
  }
  if (manifest_) {
    if (!planned_) {
      manifest_ms_ = MsSince(began_);
      if (!Plan()) return;
      plan_ms_ = MsSince(began_);
    }
    size_t named = 0;
    for (const std::string& h : needed_) {
      if (cache_->Has(h)) continue;
      v1::BlobState* w = f->add_wants();
      w->set_hash(h);
      w->set_have(cache_->PartialSize(h));
      if (++named >= kFetchBlobs) break;
    }
    if (named == 0) return Materialize();
    fetched_ = true;
  }
  request_ = shared_->next_id++;
  f->set_id(request_);
  f->set_task_id(task_id_);
  f->set_max_bytes(kFetchBytes);
  send_(std::move(m));  // not connected: Reconnected() asks again
}

bool TaskWorkspace::OnBlobData(const v1::BlobData& d) {
  if (request_ == 0 || d.id() != request_) return false;
  AsOwner([&] { HandleBlobData(d); });
  return true;
}

// The task's manifest as its delta from the one this agent has parsed (named in the fetch): made
// from that one, and checked against its name (re-serialized and hashed: the bytes of neither are
// at hand, nor stored; a later task that finds it parsed no longer fetches it whole).
Status TaskWorkspace::TakeDelta(const v1::ManifestDelta& delta) {
  if (delta.hash() != start_.manifest() || !shared_->parsed || shared_->parsed_owner != owner_ ||
      shared_->parsed_hash != delta.base()) {
    return Internal("workspace: the server sent a manifest delta this agent did not ask for");
  }
  auto made = workspace::ApplyDelta(*shared_->parsed, delta);
  if (!made.ok()) return Internal(fmt::format("workspace: the server's manifest delta: {}", made.status().message()));
  if (workspace::ManifestHash(*made) != delta.hash()) {
    return Internal(fmt::format("workspace: the server's manifest delta does not make {}", delta.hash()));
  }
  // Small files it carries: into the cache now, not fetched after.
  for (const v1::BlobChunk& c : delta.content()) {
    if (cache_->Has(c.hash())) continue;
    if (c.offset() != 0 || !c.last()) return Internal("workspace: a file inside the server's manifest delta is not whole");
    if (Status s = cache_->Put(c.hash(), c.data()); !s.ok()) return Status(s.code(), fmt::format("workspace: {}", s.message()));
    shared_->unevicted[owner_] += c.data().size();
  }
  delta_base_ = shared_->parsed;
  delta_.emplace();  // its roots alone: the content is in the cache now
  delta_->set_base(delta.base());
  delta_->set_hash(delta.hash());
  *delta_->mutable_roots() = delta.roots();
  manifest_ = std::make_shared<v1::WorkspaceManifest>(std::move(*made));
  shared_->parsed_hash = delta.hash();
  shared_->parsed = manifest_;
  return Status::Ok();
}

void TaskWorkspace::HandleBlobData(const v1::BlobData& d) {
  if (d.has_delta() && !manifest_) {
    if (Status s = TakeDelta(d.delta()); !s.ok()) {
      // Not the end of the task: the whole manifest is asked for next.
      spdlog::warn("task {}: {}; fetching the whole manifest", task_id_, s.message());
      whole_manifest_ = true;
    }
  }
  if (d.has_chunk()) {
    const v1::BlobChunk& c = d.chunk();
    if (!workspace::IsHash(c.hash())) {
      Fail(Internal("the server sent a blob that is not named by a hash"));
      return;
    }
    if (!cache_->Has(c.hash())) {
      shared_->unevicted[owner_] += c.data().size();
      if (Status s = cache_->Append(c.hash(), c.offset(), c.data(), c.last()); !s.ok()) {
        Fail(Status(s.code(), fmt::format("workspace: {}", s.message())));
        return;
      }
    }
  }
  if (d.done()) {
    request_ = 0;
    if (!d.error().empty()) {
      Fail(FailedPrecondition(fmt::format("workspace: {}", d.error())));
    } else if (phase_ == Phase::kFetching) {
      FetchMissing();
    }
  }
}

Result<workspace::ScanResult> TaskWorkspace::ScanRoot(const std::string& path, const v1::WorkspaceRoot* known) {
  auto watch = workspace::RootWatch::Start(path);
  if (watch.ok()) {
    new_watches_[path] = std::move(*watch);
  } else {
    new_watches_.erase(path);
    spdlog::debug("task {}: {}; the root is scanned each time", task_id_, watch.status().message());
  }
  v1::WorkspaceManifest known_m;
  if (known) *known_m.add_roots() = *known;
  workspace::ScanOptions o;
  o.gitignore = start_.gitignore();
  o.known = &known_m;
  auto r = workspace::Scan({path}, o);
  if (!r.ok()) new_watches_.erase(path);
  return r;
}

bool TaskWorkspace::Plan() {
  planned_ = true;
  // What this machine has at each root now: as the agent left it (its watch says nothing else
  // changed), else scanned; nothing for a root not made here yet.
  v1::WorkspaceManifest scanned;
  std::vector<const v1::WorkspaceRoot*> current(manifest_->roots_size(), nullptr);
  std::vector<int> scanned_index(manifest_->roots_size(), -1);
  for (int i = 0; i < manifest_->roots_size(); ++i) {
    const std::string& path = manifest_->roots(i).path();
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      shared_->roots.erase(path);
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      Fail(FailedPrecondition(fmt::format("workspace root {} is not a directory on this worker", path)));
      return false;
    }
    auto r = shared_->roots.find(path);
    if (r != shared_->roots.end() && r->second.watch && r->second.gitignore == start_.gitignore()) {
      workspace::RootWatch& w = *r->second.watch;
      w.Drain();
      if (!w.lost() && workspace::StillMatches(path, r->second.state(), w.dirty())) {
        w.Clear();
        current[i] = &r->second.state();
        continue;
      }
    }
    auto res = ScanRoot(path, r == shared_->roots.end() ? nullptr : &r->second.state());
    if (!res.ok()) {
      Fail(Status(res.status().code(), fmt::format("workspace on this worker: {}", res.status().message())));
      return false;
    }
    scanned_index[i] = scanned.roots_size();
    *scanned.add_roots() = std::move(*res->manifest.mutable_roots(0));
  }
  changes_.clear();
  for (int i = 0; i < manifest_->roots_size(); ++i) {
    const std::string& path = manifest_->roots(i).path();
    const v1::WorkspaceRoot* before = scanned_index[i] >= 0 ? &scanned.roots(scanned_index[i]) : current[i];
    auto r = shared_->roots.find(path);
    if (before && scanned_index[i] < 0 && r->second.manifest == manifest_ && r->second.index == i) continue;  // as it is
    // A root as the delta's base left it: only the paths the delta names can differ.
    if (before && scanned_index[i] < 0 && delta_ && r->second.manifest == delta_base_ && DiffByDelta(path, *before, i)) {
      continue;
    }
    workspace::DiffRoot(path, before, &manifest_->roots(i), &changes_);
  }
  for (const workspace::Change& c : changes_) {
    if (c.after && c.after->kind() == v1::WorkspaceEntry::FILE) needed_.insert(c.after->hash());
  }
  return true;
}

bool TaskWorkspace::DiffByDelta(const std::string& path, const v1::WorkspaceRoot& before, int i) {
  const v1::RootDelta* rd = nullptr;
  for (const v1::RootDelta& d : delta_->roots()) {
    if (d.path() == path) rd = &d;
  }
  if (!rd || rd->whole()) return false;
  // The entries of both sides at those paths alone, in path order: DiffRoot of them is DiffRoot
  // of the whole roots (every path that differs is among them).
  std::set<std::string> paths(rd->removed().begin(), rd->removed().end());
  for (const auto& e : rd->put()) paths.insert(e.path());
  v1::WorkspaceRoot was, now;
  for (const std::string& p : paths) {
    if (const auto* e = workspace::FindEntry(before, p)) *was.add_entries() = *e;
    if (const auto* e = workspace::FindEntry(manifest_->roots(i), p)) *now.add_entries() = *e;
  }
  workspace::DiffRoot(path, &was, &now, &changes_);
  return true;
}

void TaskWorkspace::Materialize() {
  const double content_ms = MsSince(began_);
  workspace::ApplyOptions o;
  o.check_current = false;
  o.on_conflict = workspace::OnConflict::kTheirs;
  o.uid = uid_;
  o.gid = gid_;
  workspace::ApplyResult applied;
  if (!changes_.empty()) {
    auto a = workspace::Apply(changes_, *cache_, o);
    if (!a.ok()) {
      for (const auto& root : manifest_->roots()) shared_->roots.erase(root.path());  // scanned when next used
      return Fail(Status(a.status().code(), fmt::format("workspace on this worker: {}", a.status().message())));
    }
    applied = *a;
  }
  for (int i = 0; i < manifest_->roots_size(); ++i) {
    const std::string& path = manifest_->roots(i).path();
    WorkspaceShared::Root& r = shared_->roots[path];
    if (auto w = new_watches_.find(path); w != new_watches_.end()) r.watch = std::move(w->second);
    r.manifest = manifest_;
    r.index = i;
    r.gitignore = start_.gitignore();
    if (!r.watch) {
      // A root made here just now: watched from now on, and scanned once so that what the watch
      // vouches for is what is there (not what the agent meant to write).
      auto scanned = ScanRoot(path, &manifest_->roots(i));
      if (auto w = new_watches_.find(path); scanned.ok() && w != new_watches_.end()) {
        r.watch = std::move(w->second);
        if (RootBytes(scanned->manifest.roots(0)) != RootBytes(manifest_->roots(i))) {
          auto m = std::make_shared<v1::WorkspaceManifest>(std::move(scanned->manifest));
          r.manifest = m;
          r.index = 0;
        }
      }
    }
  }
  new_watches_.clear();
  for (const auto& root : manifest_->roots()) shared_->roots[root.path()].used = ++shared_->clock;
  while (shared_->roots.size() > WorkspaceShared::kMaxRoots) {
    auto oldest = shared_->roots.begin();
    for (auto it = shared_->roots.begin(); it != shared_->roots.end(); ++it) {
      if (it->second.used < oldest->second.used) oldest = it;
    }
    shared_->roots.erase(oldest);  // scanned again when next used
  }
  // The cache is trimmed to cache_bytes when what came in since it last was is over a sixteenth of
  // that (a trim walks the whole cache: not for every file), and the first time an owner's is used.
  if (start_.cache_bytes() > 0 &&
      (shared_->trimmed.insert(owner_).second || shared_->unevicted[owner_] > start_.cache_bytes() / 16)) {
    shared_->unevicted[owner_] = 0;
    std::vector<std::string> keep;
    for (const auto& root : manifest_->roots()) {
      for (const auto& e : root.entries()) {
        if (e.kind() == v1::WorkspaceEntry::FILE) keep.push_back(e.hash());
      }
    }
    cache_->Evict(start_.cache_bytes(), keep);
  }
  changes_.clear();
  spdlog::info("task {}: workspace ready in {:.1f} ms (manifest at {:.1f}{}, planned at {:.1f}, content at {:.1f}; {} "
               "written, {} deleted{})",
               task_id_, MsSince(began_), manifest_ms_, delta_ ? " by its delta" : "", plan_ms_, content_ms,
               applied.written, applied.deleted, fetched_ ? "" : ", nothing fetched");
  phase_ = Phase::kReady;
  if (ready_) pending_ = [ready = ready_] { ready(Status::Ok()); };
}

bool TaskWorkspace::Unchanged(int i) {
  auto r = shared_->roots.find(manifest_->roots(i).path());
  if (r == shared_->roots.end() || !r->second.watch || r->second.manifest != manifest_ || r->second.index != i) {
    return false;
  }
  workspace::RootWatch& w = *r->second.watch;
  w.Drain();
  if (w.lost() || !workspace::StillMatches(r->first, r->second.state(), w.dirty())) return false;
  w.Clear();
  return true;
}

std::optional<v1::WorkspaceRoot> TaskWorkspace::Rescan(int i) {
  const v1::WorkspaceRoot& was = manifest_->roots(i);
  auto r = shared_->roots.find(was.path());
  if (r == shared_->roots.end() || !r->second.watch || r->second.watch->lost() || r->second.manifest != manifest_ ||
      r->second.index != i) {
    return std::nullopt;
  }
  workspace::ScanOptions o;
  o.gitignore = start_.gitignore();
  auto res = workspace::Rescan(was.path(), was, r->second.watch->dirty(), o);
  if (!res.ok()) {
    spdlog::debug("task {}: {}; scanning {} whole", task_id_, res.status().message(), was.path());
    return std::nullopt;
  }
  r->second.watch->Clear();
  return std::move(*res->manifest.mutable_roots(0));
}

void TaskWorkspace::Collect(std::function<void(Result<std::string>)> done) {
  done_ = std::move(done);
  AsOwner([&] { CollectAsOwner(); });
}

void TaskWorkspace::CollectAsOwner() {
  phase_ = Phase::kCollecting;
  began_ = std::chrono::steady_clock::now();
  const int n = manifest_->roots_size();
  std::vector<bool> unchanged(n);
  bool all = true;
  for (int i = 0; i < n; ++i) {
    unchanged[i] = Unchanged(i);
    all = all && unchanged[i];
  }
  if (all) {
    // Nothing changed: the result is the manifest the server gave (already in its store).
    spdlog::info("task {}: workspace unchanged (by its watch, {:.1f} ms)", task_id_, MsSince(began_));
    phase_ = Phase::kDone;
    return Done(start_.manifest());
  }
  auto result = std::make_shared<v1::WorkspaceManifest>();
  std::vector<bool> kept_watch(unchanged);
  for (int i = 0; i < n; ++i) {
    const v1::WorkspaceRoot& was = manifest_->roots(i);
    if (unchanged[i]) {
      *result->add_roots() = was;
      continue;
    }
    struct stat st;
    if (::lstat(was.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      result->add_roots()->set_path(was.path());  // the task removed it
      shared_->roots.erase(was.path());
      continue;
    }
    if (auto rescanned = Rescan(i); rescanned) {
      // Its watch knows what changed: only that is looked at again.
      kept_watch[i] = true;
      *result->add_roots() = std::move(*rescanned);
      continue;
    }
    auto r = ScanRoot(was.path(), &was);
    if (!r.ok()) return Fail(r.status());
    *result->add_roots() = std::move(*r->manifest.mutable_roots(0));
  }
  std::set<std::string> before;
  for (const auto& root : manifest_->roots()) {
    for (const auto& e : root.entries()) {
      if (e.kind() == v1::WorkspaceEntry::FILE) before.insert(e.hash());
    }
  }
  to_send_.clear();
  const std::map<std::string, std::string> sources = workspace::SourcesOf(*result);
  for (const auto& root : result->roots()) {
    for (const auto& e : root.entries()) {
      if (e.kind() != v1::WorkspaceEntry::FILE || before.count(e.hash())) continue;
      if (!cache_->Has(e.hash())) {
        auto src = sources.find(e.hash());
        if (src == sources.end()) return Fail(Internal(fmt::format("no file holds content {}", e.hash())));
        if (Status s = cache_->PutFile(e.hash(), src->second); !s.ok()) return Fail(s);
      }
      to_send_.insert(e.hash());
    }
  }
  std::string bytes;
  result_hash_ = workspace::ManifestHash(*result, &bytes);
  spdlog::info("task {}: workspace after the command: {:.1f} ms ({} new files)", task_id_, MsSince(began_),
               to_send_.size());
  if (!cache_->Has(result_hash_)) {
    if (Status s = cache_->Append(result_hash_, 0, bytes, true); !s.ok()) return Fail(s);
  }
  for (int i = 0; i < n; ++i) {
    const std::string& path = result->roots(i).path();
    if (!unchanged[i] && result->roots(i).entries_size() == 0) continue;  // removed
    WorkspaceShared::Root& r = shared_->roots[path];
    if (auto w = new_watches_.find(path); w != new_watches_.end()) r.watch = std::move(w->second);
    else if (!kept_watch[i]) r.watch.reset();
    r.manifest = result;
    r.index = i;
    r.gitignore = start_.gitignore();
  }
  new_watches_.clear();
  if (result_hash_ == start_.manifest()) {
    phase_ = Phase::kDone;
    return Done(result_hash_);
  }
  to_send_.insert(result_hash_);
  Query();
}

void TaskWorkspace::Query() {
  v1::AgentMessage m;
  v1::BlobQuery* q = m.mutable_blob_query();
  request_ = shared_->next_id++;
  q->set_id(request_);
  q->set_task_id(task_id_);
  for (const std::string& h : to_send_) q->add_hashes(h);
  send_(std::move(m));
}

bool TaskWorkspace::OnBlobAnswer(const v1::BlobQueryAnswer& a) {
  if (request_ == 0 || a.id() != request_) return false;
  AsOwner([&] { HandleBlobAnswer(a); });
  return true;
}

void TaskWorkspace::HandleBlobAnswer(const v1::BlobQueryAnswer& a) {
  request_ = 0;
  if (!a.error().empty()) {
    Fail(FailedPrecondition(fmt::format("the server took no workspace result: {}", a.error())));
    return;
  }
  if (a.missing().empty()) {
    phase_ = Phase::kDone;
    return Done(result_hash_);
  }
  if (static_cast<size_t>(a.missing_size()) >= last_missing_ && ++rounds_without_progress_ > kRoundsWithoutProgress) {
    Fail(Unavailable(fmt::format("the server did not take {} files of the task's workspace", a.missing_size())));
    return;
  }
  if (static_cast<size_t>(a.missing_size()) < last_missing_) rounds_without_progress_ = 0;
  last_missing_ = static_cast<size_t>(a.missing_size());
  uint64_t budget = kPutBytes;
  for (const v1::BlobState& want : a.missing()) {
    if (budget == 0) break;
    auto sent = workspace::SendBlobChunks(*cache_, want.hash(), want.have(), budget, [&](v1::BlobChunk&& c) {
      v1::AgentMessage m;
      m.mutable_blob_put()->set_task_id(task_id_);
      *m.mutable_blob_put()->mutable_chunk() = std::move(c);
      return send_(std::move(m));
    });
    if (!sent.ok()) {
      Fail(sent.status().code() == StatusCode::kNotFound
               ? Internal(fmt::format("content {} left the agent's cache", want.hash()))
               : sent.status());
      return;
    }
    if (sent->stopped) {
      request_ = shared_->next_id++;  // not connected: Reconnected() asks again
      return;
    }
    budget -= std::min(budget, sent->bytes);
  }
  Query();
}

void TaskWorkspace::Reconnected() {
  if (request_ == 0) return;
  request_ = 0;
  AsOwner([&] {
    if (phase_ == Phase::kFetching) FetchMissing();
    else if (phase_ == Phase::kCollecting) Query();
  });
}

}  // namespace tidepool::agent
