// A blob of a content store sent as chunks (v1::BlobChunk), the one way every sender does it:
// the server to clients (WorkspaceService.Download) and to agents (BlobFetch), agents to the
// server (BlobPut).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "tidepool/v1/workspace.pb.h"
#include "workspace/blob_dir.h"

namespace tidepool::workspace {

struct ChunksSent {
  uint64_t offset = 0;     // where the next chunk would start
  uint64_t bytes = 0;      // data bytes handed to `emit`
  bool complete = false;   // the chunk marked `last` went
  bool stopped = false;    // `emit` said stop (the peer went away)
};

// Sends `hash` from `offset` in chunks of at most kBlobChunkBytes, stopping once `budget` bytes
// went (the receiver asks again for the rest). Errors (each names the blob): not in the store,
// `offset` beyond its size, a read error, the blob shrank while it was read.
Result<ChunksSent> SendBlobChunks(const BlobDir& store, const std::string& hash, uint64_t offset, uint64_t budget,
                                  const std::function<bool(v1::BlobChunk&& chunk)>& emit);

// The blobs of `hashes` that `store` lacks, each with the bytes of it the store has (a cut-off
// transfer resumes there), appended to `missing`; those it has are marked used. The hashes must
// have been checked (IsHash).
void AddMissing(const BlobDir& store, const google::protobuf::RepeatedPtrField<std::string>& hashes,
                google::protobuf::RepeatedPtrField<v1::BlobState>* missing);

}  // namespace tidepool::workspace
