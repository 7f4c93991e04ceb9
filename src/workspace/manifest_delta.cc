#include "workspace/manifest_delta.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>

#include "workspace/diff.h"
#include "workspace/scan.h"

namespace tidepool::workspace {
namespace {

using v1::WorkspaceEntry;
using v1::WorkspaceRoot;

// A manifest read as spans of its serialization, without parsing its entries.
struct EntrySpan {
  std::string_view path;   // field 1 of WorkspaceEntry ("" when absent: the root itself)
  std::string_view bytes;  // the whole serialized entry
  std::string_view field;  // the same with the root's tag and length before it
};
struct RootSpan {
  std::string_view path;
  std::vector<EntrySpan> entries;
};

bool Varint(std::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    uint8_t b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// The next field: its number, and for a length-delimited one its bytes. False at a malformed one.
bool Field(std::string_view* in, uint32_t* number, std::string_view* value) {
  uint64_t tag = 0, len = 0;
  if (!Varint(in, &tag)) return false;
  *number = static_cast<uint32_t>(tag >> 3);
  *value = {};
  switch (tag & 7) {
    case 0:
      return Varint(in, &len);
    case 1:
    case 5: {
      size_t n = (tag & 7) == 1 ? 8 : 4;
      if (in->size() < n) return false;
      in->remove_prefix(n);
      return true;
    }
    case 2:
      if (!Varint(in, &len) || len > in->size()) return false;
      *value = in->substr(0, len);
      in->remove_prefix(len);
      return true;
    default:
      return false;
  }
}

bool IndexManifest(std::string_view in, std::vector<RootSpan>* out) {
  uint32_t number = 0;
  std::string_view root;
  while (!in.empty()) {
    if (!Field(&in, &number, &root)) return false;
    if (number != 1) continue;
    RootSpan& r = out->emplace_back();
    std::string_view value;
    while (!root.empty()) {
      const char* field = root.data();
      if (!Field(&root, &number, &value)) return false;
      if (number == 1) {
        r.path = value;
      } else if (number == 2) {
        // The path is the entry's first field (a deterministic serialization writes fields in
        // number order); an entry that does not begin with one is the root's (""). Bytes
        // written otherwise make a manifest that does not hash to its name: refused, not wrong.
        EntrySpan e{{}, value, {field, static_cast<size_t>(root.data() - field)}};
        std::string_view entry = value, v;
        if (!entry.empty() && Field(&entry, &number, &v) && number == 1) e.path = v;
        r.entries.push_back(e);
      }
    }
  }
  return true;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// A length-delimited field, as a deterministic serialization writes it.
void PutBytes(std::string* out, uint32_t number, std::string_view value) {
  PutVarint(out, (uint64_t{number} << 3) | 2);
  PutVarint(out, value.size());
  out->append(value);
}

// One root of `delta` checked as ApplyDelta checks it: its entries sorted by path, none twice,
// each a workspace path.
Result<std::vector<const WorkspaceEntry*>> SortedPuts(const v1::RootDelta& rd) {
  std::vector<const WorkspaceEntry*> put;
  put.reserve(rd.put_size());
  for (const auto& e : rd.put()) {
    if (!IsWorkspacePath(e.path())) return InvalidArgument(fmt::format("manifest delta: {:?} is not a workspace path", e.path()));
    put.push_back(&e);
  }
  std::sort(put.begin(), put.end(), [](const WorkspaceEntry* a, const WorkspaceEntry* b) { return a->path() < b->path(); });
  for (size_t i = 1; i < put.size(); ++i) {
    if (put[i]->path() == put[i - 1]->path()) {
      return InvalidArgument(fmt::format("manifest delta: {:?} twice in root {}", put[i]->path(), rd.path()));
    }
  }
  return put;
}

Status RemovesWhatBaseLacks(const v1::RootDelta& rd) {
  return InvalidArgument(fmt::format("manifest delta: root {} removes paths its base lacks", rd.path()));
}

}  // namespace

Result<std::string> ApplyDeltaToBytes(std::string_view base_bytes, const v1::ManifestDelta& delta) {
  std::vector<RootSpan> base;
  if (!IndexManifest(base_bytes, &base)) return InvalidArgument("the base is not a workspace manifest");
  std::map<std::string_view, const RootSpan*> base_roots;
  for (const RootSpan& r : base) base_roots.emplace(r.path, &r);
  std::string out, root, entry;
  out.reserve(base_bytes.size() + delta.ByteSizeLong() + 64);
  std::set<std::string_view> seen;
  for (const v1::RootDelta& rd : delta.roots()) {
    if (!seen.insert(rd.path()).second) return InvalidArgument(fmt::format("manifest delta: root {} twice", rd.path()));
    auto sorted = SortedPuts(rd);
    if (!sorted.ok()) return sorted.status();
    const RootSpan* from = nullptr;
    if (!rd.whole()) {
      auto it = base_roots.find(rd.path());
      if (it == base_roots.end()) return InvalidArgument(fmt::format("manifest delta: the base has no root {}", rd.path()));
      from = it->second;
    }
    root.clear();
    root.reserve(from ? from->entries.size() * 100 : 0);
    if (!rd.path().empty()) PutBytes(&root, 1, rd.path());
    auto put_one = [&](const WorkspaceEntry& e) {
      entry.clear();
      e.SerializeToString(&entry);  // no maps: the default serialization is the deterministic one
      PutBytes(&root, 2, entry);
    };
    const std::unordered_set<std::string_view> removed(rd.removed().begin(), rd.removed().end());
    size_t removed_found = 0;
    auto p = sorted->begin();
    // Base entries kept as they are: copied a run at a time (their fields lie end to end).
    std::string_view run;
    auto flush = [&] {
      root.append(run);
      run = {};
    };
    if (from) {
      for (const EntrySpan& e : from->entries) {
        if (p != sorted->end() && std::string_view((*p)->path()) <= e.path) flush();
        while (p != sorted->end() && std::string_view((*p)->path()) < e.path) put_one(**(p++));
        const bool gone = !removed.empty() && removed.count(e.path);
        if (p != sorted->end() && (*p)->path() == e.path) {
          put_one(**(p++));
          if (gone) ++removed_found;
          continue;
        }
        if (gone) {
          ++removed_found;
          flush();
          continue;
        }
        if (!run.empty() && run.data() + run.size() != e.field.data()) flush();
        run = run.empty() ? e.field : std::string_view(run.data(), run.size() + e.field.size());
      }
      flush();
    }
    while (p != sorted->end()) put_one(**(p++));
    if (removed_found != removed.size()) {
      return RemovesWhatBaseLacks(rd);
    }
    PutBytes(&out, 1, root);
  }
  return out;
}

Status ApplyRootDelta(v1::WorkspaceRoot* root, const v1::RootDelta& rd) {
  auto sorted = SortedPuts(rd);
  if (!sorted.ok()) return sorted.status();
  auto* es = root->mutable_entries();
  auto find = [&](const std::string& p) { return EntryIndex(*root, p); };
  std::vector<bool> drop(es->size(), false);
  const std::set<std::string> removed(rd.removed().begin(), rd.removed().end());
  for (const std::string& p : removed) {
    const int i = find(p);
    if (i < 0) return RemovesWhatBaseLacks(rd);
    drop[i] = true;
  }
  std::vector<const WorkspaceEntry*> inserts;
  for (const WorkspaceEntry* e : *sorted) {
    const int i = find(e->path());
    if (i < 0) {
      inserts.push_back(e);
      continue;
    }
    es->Mutable(i)->CopyFrom(*e);  // put wins over removed
    drop[i] = false;
  }
  if (inserts.empty() && std::find(drop.begin(), drop.end(), true) == drop.end()) return Status::Ok();
  // Entries move by pointer, not by copy.
  const int n = es->size();
  std::vector<WorkspaceEntry*> old(n);
  es->ExtractSubrange(0, n, old.data());
  es->Reserve(n + static_cast<int>(inserts.size()));
  auto in = inserts.begin();
  for (int i = 0; i < n; ++i) {
    for (; in != inserts.end() && (*in)->path() < old[i]->path(); ++in) es->Add()->CopyFrom(**in);
    if (drop[i]) {
      delete old[i];
    } else {
      es->AddAllocated(old[i]);
    }
  }
  for (; in != inserts.end(); ++in) es->Add()->CopyFrom(**in);
  return Status::Ok();
}

Result<v1::ManifestDelta> MakeDelta(const std::string& base_hash, std::string_view base_bytes, const std::string& next_hash,
                                    std::string_view next_bytes) {
  std::vector<RootSpan> base, next;
  if (!IndexManifest(base_bytes, &base)) return InvalidArgument("the base is not a workspace manifest");
  if (!IndexManifest(next_bytes, &next)) return InvalidArgument("not a workspace manifest");
  std::map<std::string_view, const RootSpan*> base_roots;
  for (const RootSpan& r : base) base_roots.emplace(r.path, &r);
  v1::ManifestDelta d;
  d.set_base(base_hash);
  d.set_hash(next_hash);
  auto put = [](v1::RootDelta* rd, std::string_view entry) {
    return rd->add_put()->ParseFromArray(entry.data(), static_cast<int>(entry.size()));
  };
  for (const RootSpan& r : next) {
    v1::RootDelta* rd = d.add_roots();
    rd->set_path(std::string(r.path));
    auto it = base_roots.find(r.path);
    if (it == base_roots.end()) {
      rd->set_whole(true);
      for (const EntrySpan& e : r.entries) {
        if (!put(rd, e.bytes)) return InvalidArgument("not a workspace manifest");
      }
      continue;
    }
    const std::vector<EntrySpan>& b = it->second->entries;
    const std::vector<EntrySpan>& a = r.entries;
    size_t i = 0, j = 0;
    while (i < b.size() || j < a.size()) {
      int cmp = i == b.size() ? 1 : j == a.size() ? -1 : b[i].path.compare(a[j].path);
      bool ok = true;
      if (cmp < 0) {
        rd->add_removed(std::string(b[i++].path));
      } else if (cmp > 0) {
        ok = put(rd, a[j++].bytes);
      } else {
        if (b[i].bytes != a[j].bytes) ok = put(rd, a[j].bytes);
        ++i;
        ++j;
      }
      if (!ok) return InvalidArgument("not a workspace manifest");
    }
  }
  return d;
}

Result<v1::WorkspaceManifest> ApplyDelta(const v1::WorkspaceManifest& base, const v1::ManifestDelta& delta) {
  std::map<std::string, const WorkspaceRoot*> base_roots;
  for (const auto& r : base.roots()) base_roots.emplace(r.path(), &r);
  v1::WorkspaceManifest out;
  std::set<std::string> seen;
  for (const v1::RootDelta& rd : delta.roots()) {
    if (!seen.insert(rd.path()).second) return InvalidArgument(fmt::format("manifest delta: root {} twice", rd.path()));
    auto sorted = SortedPuts(rd);
    if (!sorted.ok()) return sorted.status();
    WorkspaceRoot* root = out.add_roots();
    root->set_path(rd.path());
    const WorkspaceRoot* from = nullptr;
    if (!rd.whole()) {
      auto it = base_roots.find(rd.path());
      if (it == base_roots.end()) {
        return InvalidArgument(fmt::format("manifest delta: the base has no root {}", rd.path()));
      }
      from = it->second;
    }
    std::set<std::string> removed(rd.removed().begin(), rd.removed().end());
    size_t removed_found = 0;
    auto p = sorted->begin();
    if (from) {
      root->mutable_entries()->Reserve(from->entries_size() + rd.put_size());
      for (const auto& e : from->entries()) {
        while (p != sorted->end() && (*p)->path() < e.path()) *root->add_entries() = **(p++);
        if (p != sorted->end() && (*p)->path() == e.path()) {
          *root->add_entries() = **(p++);
          if (removed.count(e.path())) ++removed_found;
          continue;
        }
        if (removed.count(e.path())) {
          ++removed_found;
          continue;
        }
        *root->add_entries() = e;
      }
    }
    while (p != sorted->end()) *root->add_entries() = **(p++);
    if (removed_found != removed.size()) {
      return RemovesWhatBaseLacks(rd);
    }
  }
  return out;
}

std::set<std::string> DeltaContent(const v1::ManifestDelta& delta) {
  std::set<std::string> out;
  for (const auto& rd : delta.roots()) {
    for (const auto& e : rd.put()) {
      if (e.kind() == WorkspaceEntry::FILE) out.insert(e.hash());
    }
  }
  return out;
}

}  // namespace tidepool::workspace
