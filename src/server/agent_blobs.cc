// An agent's blob requests, answered on its link (services.h, ServeAgentBlobs).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "server/services.h"
#include "workspace/blob_chunks.h"
#include "workspace/hash.h"

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

// The first want as the delta that makes it from the manifest the agent has, when that is how this
// server made it (PutManifest): one changed file then moves one entry, not the whole manifest.
bool SentAsDelta(Core* core, const workspace::BlobDir& store, AgentLink* link, const v1::BlobFetch& f) {
  if (f.manifest_base().empty() || f.wants().empty() || f.wants(0).have() != 0) return false;
  auto made = core->workspace_store().FindMade(store, f.wants(0).hash());
  if (!made || !made->delta || made->delta->base() != f.manifest_base()) return false;
  v1::ServerMessage out;
  out.mutable_blob_data()->set_id(f.id());
  *out.mutable_blob_data()->mutable_delta() = *made->delta;
  core->CountWorkspaceBytes("sent", "agent", made->delta->ByteSizeLong());
  return link->Send(std::move(out));
}

void Fetch(Core* core, workspace::BlobDir* store, AgentLink* link, const v1::BlobFetch& f) {
  uint64_t budget = f.max_bytes() == 0 ? kMaxFetchBytes : std::min<uint64_t>(f.max_bytes(), kMaxFetchBytes);
  const bool delta = SentAsDelta(core, *store, link, f);
  for (const v1::BlobState& want : f.wants()) {
    if (!workspace::IsHash(want.hash())) return FetchDone(link, f.id(), "a blob name is not a SHA-256 hash");
    if (delta && &want == &f.wants(0)) continue;
    auto sent = workspace::SendBlobChunks(*store, want.hash(), want.have(), budget, [&](v1::BlobChunk&& c) {
      v1::ServerMessage out;
      out.mutable_blob_data()->set_id(f.id());
      core->CountWorkspaceBytes("sent", "agent", c.data().size());
      *out.mutable_blob_data()->mutable_chunk() = std::move(c);
      return link->Send(std::move(out));
    });
    if (!sent.ok()) {
      return FetchDone(link, f.id(),
                       sent.status().code() == StatusCode::kNotFound
                           ? fmt::format("blob {} is not in the owner's workspace store", want.hash())
                           : sent.status().message());
    }
    if (sent->stopped) return;
    budget -= std::min(budget, sent->bytes);
    if (!sent->complete) return FetchDone(link, f.id(), "");  // the budget is spent: the agent asks again for the rest
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
      const auto& hashes = m.blob_query().hashes();
      if (std::all_of(hashes.begin(), hashes.end(), [](const std::string& h) { return workspace::IsHash(h); })) {
        workspace::AddMissing(**store, hashes, a->mutable_missing());
      } else {
        a->set_error("a blob name is not a SHA-256 hash");
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
