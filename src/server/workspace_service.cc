// WorkspaceService: the caller's files into and out of its owner's store (workspace.proto).
#include <fmt/format.h>

#include "server/services.h"
#include "workspace/blob_chunks.h"
#include "workspace/hash.h"

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

}  // namespace tidepool::server
