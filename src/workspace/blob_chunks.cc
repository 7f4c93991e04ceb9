#include "workspace/blob_chunks.h"

#include <algorithm>

#include <fmt/format.h>

#include "workspace/protocol.h"

namespace tidepool::workspace {

Result<ChunksSent> SendBlobChunks(const BlobDir& store, const std::string& hash, uint64_t offset, uint64_t budget,
                                  const std::function<bool(v1::BlobChunk&& chunk)>& emit) {
  auto size = store.SizeOf(hash);
  if (!size.ok()) return NotFound(fmt::format("blob {} is not in the store", hash));
  if (offset > *size) return InvalidArgument(fmt::format("blob {} has {} bytes, not {}", hash, *size, offset));
  ChunksSent sent;
  sent.offset = offset;
  do {
    if (budget == 0) return sent;
    auto data = store.Read(hash, sent.offset, std::min<uint64_t>(budget, kBlobChunkBytes));
    if (!data.ok()) return data.status();
    if (data->empty() && sent.offset < *size) return Unavailable(fmt::format("blob {} shrank while it was read", hash));
    v1::BlobChunk c;
    c.set_hash(hash);
    c.set_offset(sent.offset);
    sent.offset += data->size();
    sent.bytes += data->size();
    budget -= std::min<uint64_t>(budget, data->size());
    c.set_last(sent.offset >= *size);
    c.set_data(std::move(*data));
    if (!emit(std::move(c))) {
      sent.stopped = true;
      return sent;
    }
  } while (sent.offset < *size);
  sent.complete = true;
  store.Touch(hash);
  return sent;
}

void AddMissing(const BlobDir& store, const google::protobuf::RepeatedPtrField<std::string>& hashes,
                google::protobuf::RepeatedPtrField<v1::BlobState>* missing) {
  for (const std::string& h : hashes) {
    if (store.Has(h)) {
      store.Touch(h);
      continue;
    }
    v1::BlobState* m = missing->Add();
    m->set_hash(h);
    m->set_have(store.PartialSize(h));
  }
}

}  // namespace tidepool::workspace
