// An agent's blob requests, answered on its link (services.h, ServeAgentBlobs).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "server/services.h"
#include "workspace/hash.h"
#include "workspace/protocol.h"

namespace tidepool::server {

namespace {

// The most one BlobFetch is answered with; the agent asks again for the rest.
constexpr uint64_t kMaxFetchBytes = 16u << 20;

void FetchDone(AgentLink* link, uint64_t id, const std::string& error) {
  v1::ServerMessage out;
  out.mutable_blob_data()->set_id(id);
  out.mutable_blob_data()->set_done(true);
  out.mutable_blob_data()->set_error(error);
  link->Send(std::move(out));
}

void Fetch(Core* core, workspace::BlobDir* store, AgentLink* link, const v1::BlobFetch& f) {
  uint64_t budget = f.max_bytes() == 0 ? kMaxFetchBytes : std::min<uint64_t>(f.max_bytes(), kMaxFetchBytes);
  for (const v1::BlobState& want : f.wants()) {
    if (!workspace::IsHash(want.hash())) return FetchDone(link, f.id(), "a blob name is not a SHA-256 hash");
    auto size = store->SizeOf(want.hash());
    if (!size.ok()) return FetchDone(link, f.id(), fmt::format("blob {} is not in the owner's workspace store", want.hash()));
    uint64_t off = want.have();
    if (off > *size) return FetchDone(link, f.id(), fmt::format("blob {} has {} bytes, not {}", want.hash(), *size, off));
    do {
      if (budget == 0) return FetchDone(link, f.id(), "");  // the agent asks again for the rest
      auto data = store->Read(want.hash(), off, std::min<uint64_t>(budget, kBlobChunkBytes));
      if (!data.ok()) return FetchDone(link, f.id(), std::string(data.status().message()));
      v1::ServerMessage out;
      v1::BlobChunk* c = out.mutable_blob_data()->mutable_chunk();
      out.mutable_blob_data()->set_id(f.id());
      c->set_hash(want.hash());
      c->set_offset(off);
      off += data->size();
      budget -= std::min<uint64_t>(budget, data->size());
      c->set_last(off >= *size);
      bool empty = data->empty();
      core->CountWorkspaceBytes("sent", "agent", data->size());
      c->set_data(std::move(*data));
      if (!link->Send(std::move(out))) return;
      if (empty && off < *size) return FetchDone(link, f.id(), fmt::format("blob {} shrank while it was read", want.hash()));
    } while (off < *size);
    store->Touch(want.hash());
  }
  FetchDone(link, f.id(), "");
}

}  // namespace

void ServeAgentBlobs(Core* core, AgentLink* link, const v1::AgentMessage& m) {
  const std::string& task_id = m.has_blob_fetch() ? m.blob_fetch().task_id()
                               : m.has_blob_query() ? m.blob_query().task_id()
                                                    : m.blob_put().task_id();
  auto owner = core->LinkTaskOwner(link, task_id);
  Result<workspace::BlobDir*> store = owner.ok() ? core->workspace_store().For(*owner) : Result<workspace::BlobDir*>(owner.status());
  if (m.has_blob_fetch()) {
    if (!store.ok()) return FetchDone(link, m.blob_fetch().id(), std::string(store.status().message()));
    return Fetch(core, *store, link, m.blob_fetch());
  }
  if (m.has_blob_query()) {
    v1::ServerMessage out;
    v1::BlobQueryAnswer* a = out.mutable_blob_answer();
    a->set_id(m.blob_query().id());
    if (!store.ok()) {
      a->set_error(std::string(store.status().message()));
    } else {
      for (const std::string& h : m.blob_query().hashes()) {
        if (!workspace::IsHash(h)) {
          a->set_error("a blob name is not a SHA-256 hash");
          break;
        }
        if ((*store)->Has(h)) continue;
        v1::BlobState* s = a->add_missing();
        s->set_hash(h);
        s->set_have((*store)->PartialSize(h));
      }
    }
    link->Send(std::move(out));
    return;
  }
  // BlobPut: nothing is answered; the agent's next BlobQuery shows what arrived.
  if (!store.ok()) return;
  const v1::BlobChunk& c = m.blob_put().chunk();
  if (!workspace::IsHash(c.hash()) || (*store)->Has(c.hash())) return;
  core->CountWorkspaceBytes("received", "agent", c.data().size());
  if (Status s = (*store)->Append(c.hash(), c.offset(), c.data(), c.last()); !s.ok()) {
    spdlog::warn("workspace: a blob from the agent of task {} was not stored: {}", task_id, s.message());
  }
}

}  // namespace tidepool::server
