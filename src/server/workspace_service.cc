// WorkspaceService: the caller's files into and out of its owner's store (workspace.proto).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "common/fs.h"
#include "server/services.h"
#include "workspace/blob_chunks.h"
#include "workspace/hash.h"
#include "workspace/manifest_delta.h"
#include "workspace/scan.h"

namespace tidepool::server {

namespace {

constexpr int kMaxHashesPerCall = 200000;

Status CheckHashes(const google::protobuf::RepeatedPtrField<std::string>& hashes) {
  if (hashes.size() > kMaxHashesPerCall) {
    return InvalidArgument(fmt::format("{} hashes in one call; at most {}", hashes.size(), kMaxHashesPerCall));
  }
  for (const std::string& h : hashes) {
    if (!workspace::IsHash(h)) return InvalidArgument("a blob name is not a SHA-256 hash (64 lowercase hex digits)");
  }
  return Status::Ok();
}

}  // namespace

Result<workspace::BlobDir*> WorkspaceService::StoreOf(grpc::ServerContext* ctx, Core** core) {
  *core = core_->load();
  if (!*core) return ServerStarting();
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) return caller.status();
  // A task token acts as its task's owner, whose store it uses.
  std::string owner = caller->tree.empty() ? caller->name : (*core)->TaskOwner(caller->tree);
  return (*core)->workspace_store().For(owner);
}

grpc::Status WorkspaceService::Settings(grpc::ServerContext* ctx, const v1::SettingsRequest* req,
                                        v1::WorkspaceSettings* resp) {
  Core* core = core_->load();
  if (!core) return ToGrpc(ServerStarting());
  auto caller = auth_->Identify(ctx);
  if (!caller.ok()) return ToGrpc(caller.status());
  auto s = core->WorkspaceSettingsFor(*req, *caller);
  if (!s.ok()) return ToGrpc(s.status());
  *resp = std::move(*s);
  return grpc::Status::OK;
}

grpc::Status WorkspaceService::Missing(grpc::ServerContext* ctx, const v1::MissingRequest* req,
                                       v1::MissingResponse* resp) {
  Core* core = nullptr;
  auto store = StoreOf(ctx, &core);
  if (!store.ok()) return ToGrpc(store.status());
  if (Status s = CheckHashes(req->hashes()); !s.ok()) return ToGrpc(s);
  workspace::AddMissing(**store, req->hashes(), resp->mutable_missing());
  return grpc::Status::OK;
}

grpc::Status WorkspaceService::Upload(grpc::ServerContext* ctx, grpc::ServerReader<v1::BlobChunk>* reader,
                                      v1::UploadResponse* resp) {
  Core* core = nullptr;
  auto store = StoreOf(ctx, &core);
  if (!store.ok()) return ToGrpc(store.status());
  v1::BlobChunk c;
  while (reader->Read(&c)) {
    if (!workspace::IsHash(c.hash())) return ToGrpc(InvalidArgument("a blob name is not a SHA-256 hash"));
    if ((*store)->Has(c.hash())) {  // sent twice (two clients at once): already complete
      if (c.last()) resp->add_stored(c.hash());
      continue;
    }
    if (Status s = (*store)->Append(c.hash(), c.offset(), c.data(), c.last()); !s.ok()) return ToGrpc(s);
    core->CountWorkspaceBytes("received", "client", c.data().size());
    if (c.last()) resp->add_stored(c.hash());
  }
  return grpc::Status::OK;
}

grpc::Status WorkspaceService::Download(grpc::ServerContext* ctx, const v1::DownloadRequest* req,
                                        grpc::ServerWriter<v1::BlobChunk>* writer) {
  Core* core = nullptr;
  auto store = StoreOf(ctx, &core);
  if (!store.ok()) return ToGrpc(store.status());
  if (Status s = CheckHashes(req->hashes()); !s.ok()) return ToGrpc(s);
  for (int i = 0; i < req->hashes_size(); ++i) {
    const std::string& h = req->hashes(i);
    uint64_t off = i < req->offsets_size() ? req->offsets(i) : 0;
    auto sent = workspace::SendBlobChunks(**store, h, off, UINT64_MAX, [&](v1::BlobChunk&& c) {
      core->CountWorkspaceBytes("sent", "client", c.data().size());
      return writer->Write(c);
    });
    if (!sent.ok()) {
      return ToGrpc(sent.status().code() == StatusCode::kNotFound
                        ? NotFound(fmt::format("blob {} is not in your workspace store", h))
                        : sent.status());
    }
    if (sent->stopped) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status::OK;
}

grpc::Status WorkspaceService::PutManifest(grpc::ServerContext* ctx, const v1::ManifestDelta* req,
                                           v1::UploadResponse* resp) {
  Core* core = nullptr;
  auto store = StoreOf(ctx, &core);
  if (!store.ok()) return ToGrpc(store.status());
  const bool from_nothing = req->base().empty();  // every root whole
  if ((!from_nothing && !workspace::IsHash(req->base())) || !workspace::IsHash(req->hash())) {
    return ToGrpc(InvalidArgument("a manifest name is not a SHA-256 hash (64 lowercase hex digits)"));
  }
  workspace::BlobDir& dir = **store;
  if (dir.Has(req->hash())) {
    resp->add_stored(req->hash());
    return grpc::Status::OK;
  }
  // The base as bytes (the one this store was last given, kept in memory, else its file): the
  // delta is spliced into them, not applied to 10,000 parsed entries.
  WorkspaceStore& kept = core->workspace_store();
  std::shared_ptr<const std::string> base = std::make_shared<const std::string>();
  if (!from_nothing) {
    if (!dir.Has(req->base())) return ToGrpc(NotFound(fmt::format("no manifest {} in the store", req->base())));
    if (auto made = kept.FindMade(dir, req->base()); made && made->bytes) {
      base = made->bytes;
    } else {
      auto file = MappedFile::Open(dir.PathOf(req->base()));
      if (!file.ok()) return ToGrpc(InvalidArgument(fmt::format("{} in the store is not a manifest", req->base())));
      base = std::make_shared<const std::string>(file->data());
    }
  }
  const auto began = std::chrono::steady_clock::now();
  auto ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count(); };
  auto made = workspace::ApplyDeltaToBytes(*base, *req);
  const double made_ms = ms();
  if (!made.ok()) return ToGrpc(made.status());
  for (const v1::BlobChunk& c : req->content()) {
    if (c.offset() != 0 || !c.last()) return ToGrpc(InvalidArgument("a file inside a manifest delta is not whole"));
    if (Status s = dir.Put(c.hash(), c.data()); !s.ok()) return ToGrpc(s);
  }
  // Its files go before it: a manifest in a store means the store has what it names.
  for (const std::string& h : workspace::DeltaContent(*req)) {
    if (!workspace::IsHash(h)) return ToGrpc(InvalidArgument("a file's content is not named by a SHA-256 hash"));
    if (!dir.Has(h)) return ToGrpc(FailedPrecondition(fmt::format("content {} is not in the store; send it first", h)));
  }
  // Hashed in memory as it is stored: it is the manifest the delta names, or nothing is kept.
  if (Status s = dir.Put(req->hash(), *made); !s.ok()) {
    if (s.code() != StatusCode::kInvalidArgument) return ToGrpc(s);
    return ToGrpc(InvalidArgument(fmt::format("the manifest made from the delta is not {}: {}", req->hash(), s.message())));
  }
  const std::string& got = req->hash();
  spdlog::debug("manifest {} ({} bytes) from a delta with {} files inside: made at {:.2f} ms, stored at {:.2f}",
                got.substr(0, 12), made->size(), req->content_size(), made_ms, ms());
  kept.KeepMade(dir, {got, std::make_shared<const std::string>(std::move(*made)),
                      from_nothing ? nullptr : std::make_shared<const v1::ManifestDelta>(*req)});
  core->CountWorkspaceBytes("received", "client", req->ByteSizeLong());
  resp->add_stored(got);
  return grpc::Status::OK;
}

}  // namespace tidepool::server
