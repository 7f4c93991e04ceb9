// StatCache (scan.h): its file is "TPSC1\n", a record count, the records, and an FNV-1a checksum
// of everything before it; anything else (missing, truncated, damaged) loads as an empty cache.
#include <cstring>

#include "common/fs.h"
#include "workspace/hash.h"
#include "workspace/scan.h"

namespace tidepool::workspace {
namespace {

constexpr std::string_view kMagic = "TPSC1\n";

uint64_t Fnv1a(std::string_view data) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
bool Get(std::string_view* in, T* v) {
  if (in->size() < sizeof *v) return false;
  std::memcpy(v, in->data(), sizeof *v);
  in->remove_prefix(sizeof *v);
  return true;
}

}  // namespace

StatCache StatCache::Load(const std::string& path) {
  StatCache cache;
  cache.path_ = path;
  Result<MappedFile> content = MappedFile::Open(path);
  if (!content.ok()) return cache;
  std::string_view in = content->data();
  uint64_t sum = 0;
  if (in.size() < kMagic.size() + sizeof sum || in.substr(0, kMagic.size()) != kMagic) return cache;
  std::memcpy(&sum, in.data() + in.size() - sizeof sum, sizeof sum);
  in.remove_suffix(sizeof sum);
  if (Fnv1a(in) != sum) return cache;
  in.remove_prefix(kMagic.size());
  uint64_t count = 0;
  if (!Get(&in, &count)) return cache;
  std::map<std::string, Key> entries;
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    Key k;
    if (!Get(&in, &len) || in.size() < len) return cache;
    std::string p(in.substr(0, len));
    in.remove_prefix(len);
    if (!Get(&in, &k.size) || !Get(&in, &k.mtime_ns) || !Get(&in, &k.ctime_ns) || !Get(&in, &k.ino) || in.size() < 64) {
      return cache;
    }
    k.hash = std::string(in.substr(0, 64));
    in.remove_prefix(64);
    if (!IsHash(k.hash)) return cache;
    entries.emplace_hint(entries.end(), std::move(p), std::move(k));
  }
  if (!in.empty()) return cache;
  cache.entries_ = std::move(entries);
  return cache;
}

Status StatCache::Save() const {
  if (!dirty_ || path_.empty()) return Status::Ok();
  std::string out(kMagic);
  out.reserve(entries_.size() * 120);
  Put<uint64_t>(&out, entries_.size());
  for (const auto& [p, k] : entries_) {
    Put<uint32_t>(&out, static_cast<uint32_t>(p.size()));
    out += p;
    Put(&out, k.size);
    Put(&out, k.mtime_ns);
    Put(&out, k.ctime_ns);
    Put(&out, k.ino);
    out += k.hash;
  }
  Put<uint64_t>(&out, Fnv1a(out));
  auto slash = path_.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    Status s = MakeDirs(path_.substr(0, slash), 0700);
    if (!s.ok()) return s;
  }
  return WriteFileAtomic(path_, out, 0600, /*sync=*/false);  // a cache: a crash only costs a re-read
}

std::string StatCache::Lookup(const std::string& abs_path, uint64_t size, int64_t mtime_ns, int64_t ctime_ns,
                              uint64_t ino) const {
  auto it = entries_.find(abs_path);
  if (it == entries_.end()) return "";
  const Key& k = it->second;
  if (k.size != size || k.mtime_ns != mtime_ns || k.ctime_ns != ctime_ns || k.ino != ino) return "";
  return k.hash;
}

void StatCache::Remember(const std::string& abs_path, uint64_t size, int64_t mtime_ns, int64_t ctime_ns, uint64_t ino,
                         const std::string& hash) {
  Key k{size, mtime_ns, ctime_ns, ino, hash};
  auto [it, inserted] = entries_.try_emplace(abs_path, k);
  if (!inserted) {
    Key& old = it->second;
    if (old.size == size && old.mtime_ns == mtime_ns && old.ctime_ns == ctime_ns && old.ino == ino && old.hash == hash) {
      return;
    }
    old = std::move(k);
  }
  dirty_ = true;
}

}  // namespace tidepool::workspace
