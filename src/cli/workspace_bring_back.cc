// The client bringing a task's changes back into the caller's tree (workspace_client.h: BringBack,
// BringBackAll, the conflict report).
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/workspace_client.h"
#include "cli/workspace_transfer.h"
#include "common/strings.h"
#include "workspace/blob_dir.h"
#include "workspace/hash.h"

namespace tidepool::cli {
namespace {

using workspace_transfer::FromGrpc;
using workspace_transfer::Retry;

// Fetches manifests into memory.
Result<v1::WorkspaceManifest> FetchManifest(Client& client, const std::string& hash) {
  v1::DownloadRequest req;
  req.add_hashes(hash);
  auto ctx = client.Context();
  auto reader = client.workspace().Download(ctx.get(), req);
  std::string bytes;
  v1::BlobChunk c;
  while (reader->Read(&c)) bytes += c.data();
  grpc::Status st = reader->Finish();
  if (!st.ok()) return FromGrpc(st, "workspace");
  if (workspace::Sha256Hex(bytes) != hash) return Internal(fmt::format("workspace manifest {} arrived damaged", hash));
  v1::WorkspaceManifest m;
  if (!m.ParseFromString(bytes)) return Internal(fmt::format("workspace manifest {} cannot be read", hash));
  return m;
}

// Fetches into `local` every file content the changes need that it lacks, resuming cut-off ones.
Status FetchContent(Client& client, const std::vector<workspace::Change>& changes, workspace::BlobDir& local) {
  Retry retry;
  for (;;) {
    v1::DownloadRequest req;
    std::set<std::string> named;
    for (const auto& ch : changes) {
      if (!ch.after || ch.after->kind() != v1::WorkspaceEntry::FILE) continue;
      const std::string& h = ch.after->hash();
      if (local.Has(h) || !named.insert(h).second) continue;
      req.add_hashes(h);
      req.add_offsets(local.PartialSize(h));
    }
    if (req.hashes_size() == 0) return Status::Ok();
    auto ctx = client.Context();
    retry.Prepare(ctx.get());
    auto reader = client.workspace().Download(ctx.get(), req);
    v1::BlobChunk c;
    Status wrote;
    while (wrote.ok() && reader->Read(&c)) wrote = local.Append(c.hash(), c.offset(), c.data(), c.last());
    if (!wrote.ok()) {
      ctx->TryCancel();
      reader->Finish();
      return wrote;
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) continue;  // every blob named is complete now: the loop checks
    if (!retry.Again(st)) return FromGrpc(st, "workspace");
  }
}

Result<BroughtBack> ApplyChanges(Client& client, const std::vector<workspace::Change>& changes,
                                 workspace::OnConflict on_conflict, std::vector<std::string> conflicts) {
  BroughtBack out;
  out.conflicts = std::move(conflicts);
  if (changes.empty()) return out;
  auto local = workspace::BlobDir::Open(CacheHome() + "/blobs");
  if (!local.ok()) return local.status();
  if (Status s = FetchContent(client, changes, *local); !s.ok()) return s;
  workspace::ApplyOptions o;
  o.on_conflict = on_conflict;
  auto applied = workspace::Apply(changes, *local, o);
  if (!applied.ok()) return applied.status();
  out.written = applied->written;
  out.deleted = applied->deleted;
  out.conflicts.insert(out.conflicts.end(), applied->conflicts.begin(), applied->conflicts.end());
  return out;
}

}  // namespace

Result<BroughtBack> BringBack(Client& client, const std::string& base, const std::string& result,
                              workspace::OnConflict on_conflict, const v1::WorkspaceManifest* base_known) {
  if (result == base) return BroughtBack{};  // the task changed nothing
  v1::WorkspaceManifest fetched;
  if (!base_known) {
    auto b = FetchManifest(client, base);
    if (!b.ok()) return b.status();
    fetched = std::move(*b);
    base_known = &fetched;
  }
  auto after = FetchManifest(client, result);
  if (!after.ok()) return after.status();
  return ApplyChanges(client, workspace::Diff(*base_known, *after), on_conflict, {});
}

Result<BroughtBack> BringBackAll(Client& client, const std::string& base, const std::vector<std::string>& results,
                                 workspace::OnConflict on_conflict) {
  auto before = FetchManifest(client, base);
  if (!before.ok()) return before.status();
  // Every change of every result, in order; a path two of them change differently is dropped.
  std::vector<workspace::Change> merged;
  std::map<std::string, size_t> at;  // ROOT/PATH -> index in merged
  std::set<std::string> clashes;
  for (const std::string& r : results) {
    auto after = FetchManifest(client, r);
    if (!after.ok()) return after.status();
    for (auto& ch : workspace::Diff(*before, *after)) {
      std::string key = ch.root + "/" + ch.path;
      auto it = at.find(key);
      if (it == at.end()) {
        at[key] = merged.size();
        merged.push_back(std::move(ch));
        continue;
      }
      const auto& seen = merged[it->second].after;
      bool same = seen.has_value() == ch.after.has_value() &&
                  (!seen || (seen->kind() == ch.after->kind() && seen->hash() == ch.after->hash() &&
                             seen->target() == ch.after->target() && seen->mode() == ch.after->mode()));
      if (!same) clashes.insert(key);
    }
  }
  std::vector<workspace::Change> apply;
  for (auto& ch : merged) {
    if (!clashes.count(ch.root + "/" + ch.path)) apply.push_back(std::move(ch));
  }
  std::vector<std::string> conflicts;
  for (const auto& k : clashes) conflicts.push_back(k + " (changed by two shards)");
  return ApplyChanges(client, apply, on_conflict, std::move(conflicts));
}

std::string ConflictReport(const BroughtBack& b, const std::string& task_id) {
  if (b.conflicts.empty()) return "";
  std::vector<std::string> shown(b.conflicts.begin(), b.conflicts.begin() + std::min<size_t>(b.conflicts.size(), 20));
  std::string more = b.conflicts.size() > shown.size() ? fmt::format(" and {} more", b.conflicts.size() - shown.size()) : "";
  return fmt::format(
      "tidepool: workspace: {} file{} not brought back, changed here since task {} started: {}{}\n"
      "tidepool: `tidepool task sync {} --theirs` takes the task's versions, `--ours` keeps yours",
      b.conflicts.size(), b.conflicts.size() == 1 ? "" : "s", task_id, Join(shown, ", "), more, task_id);
}

void ReportConflicts(const BroughtBack& b, const std::string& task_id) {
  std::string report = ConflictReport(b, task_id);
  if (!report.empty()) fmt::print(stderr, "{}\n", report);
}

}  // namespace tidepool::cli
