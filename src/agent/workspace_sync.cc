#include "agent/workspace_sync.h"

#include <sys/stat.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fs.h"
#include "workspace/blob_chunks.h"
#include "workspace/diff.h"
#include "workspace/hash.h"
#include "workspace/scan.h"

namespace tidepool::agent {

namespace {

constexpr uint64_t kFetchBytes = 16u << 20;   // asked for per BlobFetch
constexpr size_t kFetchBlobs = 4096;          // blobs named per BlobFetch
constexpr uint64_t kPutBytes = 16u << 20;     // sent per round before asking what is still missing
constexpr int kRoundsWithoutProgress = 5;

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
    if (done_) done_(s);
  } else if (ready_) {
    ready_(s);
  }
}

void TaskWorkspace::Prepare(std::function<void(Status)> ready) {
  ready_ = std::move(ready);
  phase_ = Phase::kFetching;
  auto c = workspace::BlobDir::Open(shared_->cache_dir + "/" + workspace::OwnerStoreName(owner_));
  if (!c.ok()) return Fail(Status(c.status().code(), fmt::format("the agent's cache: {}", c.status().message())));
  cache_.emplace(std::move(*c));
  FetchMissing();
}

void TaskWorkspace::FetchMissing() {
  v1::AgentMessage m;
  v1::BlobFetch* f = m.mutable_blob_fetch();
  if (!manifest_) {
    if (cache_->Has(start_.manifest())) {
      auto data = ReadFile(cache_->PathOf(start_.manifest()));
      v1::WorkspaceManifest parsed;
      if (!data.ok() || !parsed.ParseFromString(*data)) {
        return Fail(Internal(fmt::format("workspace manifest {} cannot be read from the cache", start_.manifest())));
      }
      manifest_ = std::move(parsed);
    } else {
      v1::BlobState* w = f->add_wants();
      w->set_hash(start_.manifest());
      w->set_have(cache_->PartialSize(start_.manifest()));
    }
  }
  if (manifest_) {
    std::set<std::string> named;
    for (const auto& root : manifest_->roots()) {
      for (const auto& e : root.entries()) {
        if (e.kind() != v1::WorkspaceEntry::FILE || cache_->Has(e.hash()) || !named.insert(e.hash()).second) continue;
        v1::BlobState* w = f->add_wants();
        w->set_hash(e.hash());
        w->set_have(cache_->PartialSize(e.hash()));
        if (named.size() >= kFetchBlobs) break;
      }
      if (named.size() >= kFetchBlobs) break;
    }
    if (named.empty()) return Materialize();
  }
  request_ = shared_->next_id++;
  f->set_id(request_);
  f->set_task_id(task_id_);
  f->set_max_bytes(kFetchBytes);
  send_(std::move(m));  // not connected: Reconnected() asks again
}

bool TaskWorkspace::OnBlobData(const v1::BlobData& d) {
  if (request_ == 0 || d.id() != request_) return false;
  if (d.has_chunk()) {
    const v1::BlobChunk& c = d.chunk();
    if (!workspace::IsHash(c.hash())) {
      Fail(Internal("the server sent a blob that is not named by a hash"));
      return true;
    }
    if (!cache_->Has(c.hash())) {
      if (Status s = cache_->Append(c.hash(), c.offset(), c.data(), c.last()); !s.ok()) {
        Fail(Status(s.code(), fmt::format("workspace: {}", s.message())));
        return true;
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
  return true;
}

void TaskWorkspace::Materialize() {
  // What this machine has at each root now (nothing, for a root not made here yet).
  std::vector<std::string> present;
  v1::WorkspaceManifest known;
  for (const auto& root : manifest_->roots()) {
    struct stat st;
    if (::lstat(root.path().c_str(), &st) != 0) continue;
    if (!S_ISDIR(st.st_mode)) {
      return Fail(FailedPrecondition(fmt::format("workspace root {} is not a directory on this worker", root.path())));
    }
    present.push_back(root.path());
    if (auto it = shared_->applied.find(root.path()); it != shared_->applied.end()) *known.add_roots() = it->second;
  }
  v1::WorkspaceManifest current;
  if (!present.empty()) {
    workspace::ScanOptions o;
    o.gitignore = start_.gitignore();
    o.known = &known;
    auto scanned = workspace::Scan(present, o);
    if (!scanned.ok()) {
      return Fail(Status(scanned.status().code(), fmt::format("workspace on this worker: {}", scanned.status().message())));
    }
    current = std::move(scanned->manifest);
  }
  workspace::ApplyOptions o;
  o.check_current = false;
  o.on_conflict = workspace::OnConflict::kTheirs;
  o.uid = uid_;
  o.gid = gid_;
  auto applied = workspace::Apply(workspace::Diff(current, *manifest_), *cache_, o);
  if (!applied.ok()) {
    return Fail(Status(applied.status().code(), fmt::format("workspace on this worker: {}", applied.status().message())));
  }
  std::vector<std::string> keep;
  for (const auto& root : manifest_->roots()) {
    shared_->applied[root.path()] = root;
    for (const auto& e : root.entries()) {
      if (e.kind() == v1::WorkspaceEntry::FILE) keep.push_back(e.hash());
    }
  }
  if (start_.cache_bytes() > 0) cache_->Evict(start_.cache_bytes(), keep);
  spdlog::info("task {}: workspace ready ({} written, {} deleted)", task_id_, applied->written, applied->deleted);
  phase_ = Phase::kReady;
  if (ready_) ready_(Status::Ok());
}

void TaskWorkspace::Collect(std::function<void(Result<std::string>)> done) {
  done_ = std::move(done);
  phase_ = Phase::kCollecting;
  std::vector<std::string> roots;
  std::vector<int> gone;  // roots the task removed
  for (int i = 0; i < manifest_->roots_size(); ++i) {
    struct stat st;
    if (::lstat(manifest_->roots(i).path().c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      roots.push_back(manifest_->roots(i).path());
    } else {
      gone.push_back(i);
    }
  }
  workspace::ScanOptions o;
  o.gitignore = start_.gitignore();
  o.known = &*manifest_;
  workspace::ScanResult scanned;
  if (!roots.empty()) {
    auto r = workspace::Scan(roots, o);
    if (!r.ok()) return Fail(r.status());
    scanned = std::move(*r);
  }
  v1::WorkspaceManifest result;
  {
    size_t next = 0;
    for (int i = 0; i < manifest_->roots_size(); ++i) {
      if (std::find(gone.begin(), gone.end(), i) != gone.end()) {
        result.add_roots()->set_path(manifest_->roots(i).path());
      } else {
        *result.add_roots() = std::move(*scanned.manifest.mutable_roots(static_cast<int>(next++)));
      }
    }
  }
  std::set<std::string> before;
  for (const auto& root : manifest_->roots()) {
    for (const auto& e : root.entries()) {
      if (e.kind() == v1::WorkspaceEntry::FILE) before.insert(e.hash());
    }
  }
  to_send_.clear();
  for (const auto& root : result.roots()) {
    for (const auto& e : root.entries()) {
      if (e.kind() != v1::WorkspaceEntry::FILE || before.count(e.hash())) continue;
      if (!cache_->Has(e.hash())) {
        auto src = scanned.sources.find(e.hash());
        if (src == scanned.sources.end()) return Fail(Internal(fmt::format("no file holds content {}", e.hash())));
        if (Status s = cache_->PutFile(e.hash(), src->second); !s.ok()) return Fail(s);
      }
      to_send_.insert(e.hash());
    }
  }
  std::string bytes;
  result_hash_ = workspace::ManifestHash(result, &bytes);
  if (!cache_->Has(result_hash_)) {
    if (Status s = cache_->Append(result_hash_, 0, bytes, true); !s.ok()) return Fail(s);
  }
  for (const auto& root : result.roots()) shared_->applied[root.path()] = root;
  if (result_hash_ == start_.manifest()) {
    // Nothing changed: the result is the manifest the server gave (already in its store).
    phase_ = Phase::kDone;
    done_(result_hash_);
    return;
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
  request_ = 0;
  if (!a.error().empty()) {
    Fail(FailedPrecondition(fmt::format("the server took no workspace result: {}", a.error())));
    return true;
  }
  if (a.missing().empty()) {
    phase_ = Phase::kDone;
    done_(result_hash_);
    return true;
  }
  if (static_cast<size_t>(a.missing_size()) >= last_missing_ && ++rounds_without_progress_ > kRoundsWithoutProgress) {
    Fail(Unavailable(fmt::format("the server did not take {} files of the task's workspace", a.missing_size())));
    return true;
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
      return true;
    }
    if (sent->stopped) {
      request_ = shared_->next_id++;  // not connected: Reconnected() asks again
      return true;
    }
    budget -= std::min(budget, sent->bytes);
  }
  Query();
  return true;
}

void TaskWorkspace::Reconnected() {
  if (request_ == 0) return;
  request_ = 0;
  if (phase_ == Phase::kFetching) FetchMissing();
  else if (phase_ == Phase::kCollecting) Query();
}

}  // namespace tidepool::agent
