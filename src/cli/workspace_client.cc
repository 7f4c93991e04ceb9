#include "cli/workspace_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "cli/unanswered.h"
#include "cli/workspace_daemon.h"
#include "cli/workspace_transfer.h"
#include "common/fs.h"
#include "common/strings.h"
#include "workspace/blob_dir.h"
#include "workspace/hash.h"
#include "workspace/manifest_delta.h"
#include "workspace/protocol.h"
#include "workspace/scan.h"

namespace tidepool::cli {

Trace::Trace() : on_(std::getenv("TIDEPOOL_CLIENT_TRACE") && std::strcmp(std::getenv("TIDEPOOL_CLIENT_TRACE"), "0") != 0) {}

void Trace::Step(const char* what) {
  if (!on_) return;
  auto now = std::chrono::steady_clock::now();
  fmt::print(stderr, "tidepool-client: workspace: {} {:.1f} ms\n", what, std::chrono::duration<double, std::milli>(now - last_).count());
  last_ = now;
}

std::string CacheHome() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return std::string(xdg) + "/tidepool";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/tidepool";
}

namespace {

using workspace_transfer::FromGrpc;
using workspace_transfer::Retry;
using workspace_transfer::Retryable;

// 1203 -> "1,203".
std::string Thousands(uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

std::string Megabytes(uint64_t n) {
  if (n < 1000 * 1000) return fmt::format("{} kB", (n + 999) / 1000);
  return fmt::format("{:.0f} MB", static_cast<double>(n) / 1e6);
}

Result<std::vector<v1::BlobState>> Missing(Client& client, const std::vector<std::string>& hashes, Retry* retry = nullptr) {
  v1::MissingRequest req;
  for (const auto& h : hashes) req.add_hashes(h);
  for (;;) {
    v1::MissingResponse resp;
    auto ctx = client.Context();
    if (retry) retry->Prepare(ctx.get());
    grpc::Status st = client.workspace().Missing(ctx.get(), req, &resp);
    if (st.ok()) return std::vector<v1::BlobState>(resp.missing().begin(), resp.missing().end());
    if (!retry || !retry->Again(st)) return FromGrpc(st, "workspace");
  }
}

// Sends `missing` (manifest bytes from memory, files from their paths), each from its `have`.
grpc::Status SendBlobs(Client& client, const std::vector<v1::BlobState>& missing,
                       const std::map<std::string, std::string>& sources, const std::string& manifest_hash,
                       const std::string& manifest_bytes, const Retry& retry) {
  v1::UploadResponse resp;
  auto ctx = client.Context();
  retry.Prepare(ctx.get());
  auto writer = client.workspace().Upload(ctx.get(), &resp);
  std::string buf(kBlobChunkBytes, '\0');
  for (const v1::BlobState& m : missing) {
    uint64_t off = m.have();
    if (m.hash() == manifest_hash) {
      do {
        v1::BlobChunk c;
        c.set_hash(m.hash());
        c.set_offset(off);
        size_t n = std::min<size_t>(kBlobChunkBytes, manifest_bytes.size() - std::min<size_t>(off, manifest_bytes.size()));
        c.set_data(manifest_bytes.substr(off, n));
        off += n;
        c.set_last(off >= manifest_bytes.size());
        if (!writer->Write(c)) return writer->Finish();
      } while (off < manifest_bytes.size());
      continue;
    }
    auto src = sources.find(m.hash());
    if (src == sources.end()) return grpc::Status(grpc::StatusCode::INTERNAL, "no file holds content " + m.hash());
    int fd = ::open(src->second.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          fmt::format("{}: {} (it was there when the workspace was read)", src->second, std::strerror(errno)));
    }
    bool last = false;
    while (!last) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0) {
        ::close(fd);
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, fmt::format("{}: {}", src->second, std::strerror(errno)));
      }
      v1::BlobChunk c;
      c.set_hash(m.hash());
      c.set_offset(off);
      c.set_data(buf.data(), static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
      last = static_cast<size_t>(n) < buf.size();
      if (!last) {
        // A full chunk: the next read says whether the file ends here.
        char probe;
        last = ::pread(fd, &probe, 1, static_cast<off_t>(off)) <= 0;
      }
      c.set_last(last);
      if (!writer->Write(c)) {
        ::close(fd);
        return writer->Finish();
      }
    }
    ::close(fd);
  }
  writer->WritesDone();
  return writer->Finish();
}


// Sends what of `hashes` the server lacks (files from `sources`, the manifest `manifest_hash`
// from `manifest_bytes`), asking again after a cut-off transfer until it has them all; the
// progress line (unless `quiet`) names what is sent.
Status SendLacking(Client& client, const std::vector<std::string>& hashes, std::map<std::string, uint64_t> sizes,
                   const std::map<std::string, std::string>& sources, const std::string& manifest_hash,
                   const std::string& manifest_bytes, bool quiet, const Say& say) {
  bool shown = false;
  Retry retry;
  for (;;) {
    auto lacking = Missing(client, hashes, &retry);
    if (!lacking.ok()) return lacking.status();
    if (lacking->empty()) return Status::Ok();
    // Files first, the manifest last: a manifest on the server means its files are there.
    std::stable_partition(lacking->begin(), lacking->end(), [&](const v1::BlobState& b) { return b.hash() != manifest_hash; });
    if (!shown && !quiet) {
      uint64_t to_send = 0;
      for (const auto& b : *lacking) to_send += sizes[b.hash()] - std::min(sizes[b.hash()], b.have());
      say(fmt::format("syncing workspace: {} file{}, {} to send", Thousands(lacking->size()),
                      lacking->size() == 1 ? "" : "s", Megabytes(to_send)));
      shown = true;
    }
    grpc::Status st = SendBlobs(client, *lacking, sources, manifest_hash, manifest_bytes, retry);
    if (st.ok()) continue;  // the next Missing confirms
    if (!retry.Again(st)) {
      return Status(static_cast<StatusCode>(st.error_code()), fmt::format("workspace upload: {}", st.error_message()));
    }
    if (!quiet) say(fmt::format("syncing workspace: cut off ({}); going on from what the server has", st.error_message()));
  }
}

std::map<std::string, uint64_t> FileSizes(const v1::WorkspaceManifest& m) {
  std::map<std::string, uint64_t> sizes;
  for (const auto& r : m.roots()) {
    for (const auto& e : r.entries()) {
      if (e.kind() == v1::WorkspaceEntry::FILE) sizes.emplace(e.hash(), e.size());
    }
  }
  return sizes;
}

// The manifest this client last had the server keep for a set of roots (CACHE/manifest-KEY: its
// hash, a newline, its bytes), the base the next one is sent against. Not parsed: the delta is
// made from the two serializations (a damaged file makes a delta the server refuses).
struct LastManifest {
  std::string hash;
  std::string_view bytes;  // in `file`
  std::optional<MappedFile> file;
};

std::optional<LastManifest> LoadLast(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return std::nullopt;
  std::string_view data = file->data();
  if (data.size() < 65 || data[64] != '\n' || !workspace::IsHash(std::string(data.substr(0, 64)))) return std::nullopt;
  LastManifest last;
  last.hash = std::string(data.substr(0, 64));
  last.bytes = data.substr(65);
  last.file.emplace(std::move(*file));
  return last;
}

// Largest delta sent as one: beyond it the manifest goes whole, in chunks.
constexpr size_t kMaxDeltaBytes = 4u << 20;
// New files inside a delta (ManifestDelta.content): at most this many, this large in all.
constexpr uint64_t kInlineBytes = 256u << 10;
constexpr size_t kInlineFiles = 64;

// Sends the manifest as its difference from `last` (its new files first). False: the server
// cannot take it so (it lacks the base, or predates PutManifest): it goes whole.
Result<bool> SendAsDelta(Client& client, const std::string& base_hash, std::string_view base_bytes,
                         const std::string& hash, const std::string& bytes, const v1::ManifestDelta* known,
                         bool quiet, const Say& say, Trace& trace) {
  Result<v1::ManifestDelta> made = v1::ManifestDelta();
  if (!known) {
    made = workspace::MakeDelta(base_hash, base_bytes, hash, bytes);
    if (!made.ok()) return false;
  }
  const v1::ManifestDelta& delta = known ? *known : *made;
  if (delta.ByteSizeLong() > kMaxDeltaBytes) return false;
  // The files it names that the base did not: their sizes and where they are, from the delta alone
  // (not from the 10,000 entries of the whole).
  std::map<std::string, uint64_t> sizes;
  std::map<std::string, std::string> sources;
  for (const v1::RootDelta& rd : delta.roots()) {
    for (const v1::WorkspaceEntry& e : rd.put()) {
      if (e.kind() != v1::WorkspaceEntry::FILE || sizes.count(e.hash())) continue;
      sizes.emplace(e.hash(), e.size());
      sources.emplace(e.hash(), workspace::AbsolutePath(rd.path(), e.path()));
    }
  }
  std::vector<std::string> hashes;
  for (const auto& [h, size] : sizes) hashes.push_back(h);
  trace.Step("delta made");
  // Those the server lacks go inside it when they are few and small (one call more in all, and an
  // agent sent the delta has them too); others first, by Upload.
  v1::ManifestDelta with_content;
  const v1::ManifestDelta* to_send = &delta;
  if (!hashes.empty() && hashes.size() <= kInlineFiles) {
    auto lacking = Missing(client, hashes);
    if (!lacking.ok()) return lacking.status();
    uint64_t total = 0;
    for (const v1::BlobState& b : *lacking) total += sizes[b.hash()];
    if (total <= kInlineBytes) {
      with_content = delta;
      for (const v1::BlobState& b : *lacking) {
        auto data = ReadFile(sources[b.hash()]);
        if (!data.ok() || workspace::Sha256Hex(*data) != b.hash()) break;  // changed since: Upload says what went wrong
        v1::BlobChunk* c = with_content.add_content();
        c->set_hash(b.hash());
        c->set_data(std::move(*data));
        c->set_last(true);
      }
      if (with_content.content_size() == static_cast<int>(lacking->size())) {
        to_send = &with_content;
        if (!quiet && !lacking->empty()) {
          say(fmt::format("syncing workspace: {} file{}, {} to send", Thousands(lacking->size()),
                          lacking->size() == 1 ? "" : "s", Megabytes(total)));
        }
        hashes.clear();
      }
    }
  }
  if (!hashes.empty()) {
    if (Status s = SendLacking(client, hashes, sizes, sources, "", "", quiet, say); !s.ok()) return s;
  }
  trace.Step("its files sent");
  Retry retry;
  for (;;) {
    v1::UploadResponse resp;
    auto ctx = client.Context();
    retry.Prepare(ctx.get());
    grpc::Status st = client.workspace().PutManifest(ctx.get(), *to_send, &resp);
    if (st.ok()) return true;
    // Anything but a cut-off call (no such base, a server without PutManifest, a damaged base
    // file): the manifest goes whole, which every server takes.
    if (!Retryable(st) || !retry.Again(st)) return false;
  }
}

// Saves what the next run wants (the stat cache, the manifest the server now has) on a thread of
// its own, so the command need not wait for it; joined when the process ends.
class Saver {
 public:
  ~Saver() {
    for (std::thread& t : threads_) t.join();
  }
  void Run(std::function<void()> f) { threads_.emplace_back(std::move(f)); }

 private:
  std::vector<std::thread> threads_;
};

Saver& Background() {
  static Saver saver;
  return saver;
}

}  // namespace

void SayOnStderr(const std::string& line) { fmt::print(stderr, "{}\n", line); }

std::vector<std::string> WorkspaceRoots(const std::string& cwd, const v1::WorkspaceSettings& settings) {
  const std::string root = workspace::WorkspaceRootFor(cwd);
  if (root == "/") return {};
  std::vector<std::string> roots{root};
  for (const std::string& e : settings.extra()) {
    bool inside = e == root || e.rfind(root + "/", 0) == 0;
    if (!inside) roots.push_back(e);
  }
  return roots;
}

std::string RootsKey(const std::vector<std::string>& roots) { return workspace::Sha256Hex(Join(roots, "\n")).substr(0, 16); }

workspace::StatCache LoadStatCache(const std::vector<std::string>& roots) {
  return workspace::StatCache::Load(CacheHome() + "/stat-" + RootsKey(roots));
}

Result<workspace::ScanResult> ScanCallersTree(const std::vector<std::string>& roots, bool gitignore, uint64_t max_bytes,
                                              workspace::StatCache* stat_cache) {
  workspace::ScanOptions o;
  o.gitignore = gitignore;
  o.max_bytes = max_bytes;
  o.stat_cache = stat_cache;
  o.threads = 2;
  auto scanned = workspace::Scan(roots, o);
  if (!scanned.ok()) return Status(scanned.status().code(), fmt::format("workspace: {}", scanned.status().message()));
  return scanned;
}

Result<bool> PutOnServer(Client& client, const Upload& u, bool quiet, const Say& say) {
  Trace trace;
  const bool known = u.delta && u.delta->base() == u.base_hash && u.delta->hash() == u.hash && u.base_hash != u.hash;
  if (!known) {
    // The server has this manifest: it has every file it names (they go before it).
    auto missing = Missing(client, {u.hash});
    if (!missing.ok()) return missing.status();
    if (missing->empty()) return false;
  }
  if (!u.base_hash.empty() && u.base_hash != u.hash) {
    auto d = SendAsDelta(client, u.base_hash, u.base_bytes, u.hash, u.bytes, known ? u.delta : nullptr, quiet, say, trace);
    if (!d.ok()) return d.status();
    trace.Step(*d ? "sent as a delta" : "no base on the server");
    if (*d) return true;
  }
  // As a delta from nothing (every entry put): the server keeps what it made in memory, so the
  // next delta need not read this one back. Too large for one message, or an older server: by Upload.
  if (u.bytes.size() <= kMaxDeltaBytes) {
    auto d = SendAsDelta(client, "", "", u.hash, u.bytes, nullptr, quiet, say, trace);
    if (!d.ok()) return d.status();
    trace.Step(*d ? "sent whole as a delta" : "the server takes no delta from nothing");
    if (*d) return true;
  }
  std::map<std::string, uint64_t> sizes = FileSizes(u.manifest);
  std::vector<std::string> all;
  for (const auto& [h, size] : sizes) all.push_back(h);
  all.push_back(u.hash);
  sizes[u.hash] = u.bytes.size();
  if (Status s = SendLacking(client, all, sizes, workspace::SourcesOf(u.manifest), u.hash, u.bytes, quiet, say); !s.ok()) {
    return s;
  }
  return true;
}

Result<v1::WorkspaceSettings> AskSettings(Client& client, const v1::TaskSpec& spec) {
  v1::SettingsRequest req;
  req.set_pool(spec.pool());
  req.set_batch(spec.kind() == v1::TASK_KIND_BATCH);
  v1::WorkspaceSettings settings;
  auto ctx = client.Context();
  grpc::Status st = client.workspace().Settings(ctx.get(), req, &settings);
  if (!st.ok()) return FromGrpc(st, "workspace");
  return settings;
}

Status PrepareWorkspace(Client& client, v1::TaskSpec* spec, bool quiet, v1::WorkspaceManifest* base) {
  if (spec->workspace().none()) return Status::Ok();  // working in /: nothing to bring
  Trace trace;
  Result<v1::WorkspaceSettings> settings = Unavailable("");
  {
    // The first call of the command: a frozen server is waited for, as the submission would be.
    UnansweredNote note(client.address());
    settings = AskSettings(client, *spec);
    note.Answered();
  }
  // A server without workspaces (UNIMPLEMENTED), or anything else (not reachable, no such pool,
  // not allowed): the submission says it, in the words every client uses.
  if (!settings.ok()) return Status::Ok();
  trace.Step("settings");
  if (!settings->sync()) return Status::Ok();
  const std::vector<std::string> roots = WorkspaceRoots(spec->cwd(), *settings);
  if (roots.empty()) {
    // Not a project: nothing to bring (the whole machine is no workspace); / is on every worker.
    spec->mutable_workspace()->set_none(true);
    return Status::Ok();
  }
  const std::string key = RootsKey(roots);
  auto cache = std::make_shared<workspace::StatCache>(LoadStatCache(roots));
  auto scanned = ScanCallersTree(roots, settings->gitignore(), settings->max_bytes(), cache.get());
  if (!scanned.ok()) return scanned.status();
  trace.Step("scan");
  auto bytes = std::make_shared<std::string>();
  const std::string hash = workspace::ManifestHash(scanned->manifest, bytes.get());
  trace.Step("manifest hashed");

  const std::string last_path = CacheHome() + "/manifest-" + key;
  auto last = LoadLast(last_path);
  trace.Step("last manifest read");
  Upload u{hash, *bytes, scanned->manifest, last ? last->hash : "", last ? last->bytes : std::string_view()};
  auto sent = PutOnServer(client, u, quiet, SayOnStderr);
  if (!sent.ok()) return sent.status();
  // Kept for the next run: a cache that cannot be saved only costs it a re-read or a whole manifest.
  Background().Run([cache, bytes, hash, last_path, save_last = *sent] {
    (void)cache->Save();
    if (save_last && MakeDirs(CacheHome(), 0700).ok()) (void)WriteFileAtomic(last_path, hash + "\n" + *bytes, 0600, /*sync=*/false);
  });
  trace.Step("server has it");
  // The next run asks the workspace daemon (workspace_daemon.h), which watches the tree instead of
  // walking it; it starts with this tree, scanned once more in the background.
  StartWorkspaceDaemon(client, spec->pool(), spec->cwd());
  v1::WorkspaceRef* ref = spec->mutable_workspace();
  ref->set_manifest(hash);
  ref->set_files(scanned->files);
  ref->set_bytes(scanned->bytes);
  if (base) *base = std::move(scanned->manifest);
  return Status::Ok();
}

}  // namespace tidepool::cli
