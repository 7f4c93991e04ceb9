#include "config/backend_schemas.h"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>

namespace tidepool::config {

namespace {

struct Entry {
  BackendSchema schema;
  std::string feature_id, feature_description;
  Feature feature{};
};

struct Table {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries;  // entries never move
  uint64_t version = 0;  // bumped by each registration: schema::Backend() rebuilds on change
};

Table& GlobalTable() {
  static Table* t = new Table();  // never destroyed: registrations run during static init
  return *t;
}

}  // namespace

void RegisterBackendSchema(BackendSchema s) {
  Table& t = GlobalTable();
  std::lock_guard lock(t.mu);
  auto e = std::make_unique<Entry>();
  e->feature_id = "backend." + s.key;
  e->feature_description = s.key + " backend";
  e->feature = Feature{e->feature_id.c_str(), e->feature_description.c_str(), s.active};
  e->schema = std::move(s);
  std::string key = e->schema.key;
  t.entries[key] = std::move(e);
  ++t.version;
}

void UnregisterBackendSchema(std::string_view key) {
  Table& t = GlobalTable();
  std::lock_guard lock(t.mu);
  auto it = t.entries.find(key);
  if (it == t.entries.end()) return;
  // Kept alive (moved aside): a schema table built while it was registered points into it.
  static std::vector<std::unique_ptr<Entry>> retired;
  retired.push_back(std::move(it->second));
  t.entries.erase(it);
  ++t.version;
}

const BackendSchema* FindBackendSchema(std::string_view key) {
  Table& t = GlobalTable();
  std::lock_guard lock(t.mu);
  auto it = t.entries.find(key);
  return it == t.entries.end() ? nullptr : &it->second->schema;
}

std::vector<const BackendSchema*> BackendSchemas() {
  Table& t = GlobalTable();
  std::vector<const BackendSchema*> out;
  {
    std::lock_guard lock(t.mu);
    for (const auto& [key, e] : t.entries) out.push_back(&e->schema);
  }
  std::stable_sort(out.begin(), out.end(), [](const BackendSchema* a, const BackendSchema* b) {
    return a->order < b->order;  // the map already sorted them by key
  });
  return out;
}

const Feature* BackendFeature(std::string_view key) {
  Table& t = GlobalTable();
  std::lock_guard lock(t.mu);
  auto it = t.entries.find(key);
  return it == t.entries.end() ? nullptr : &it->second->feature;
}

namespace schema {

const Message* Backend() {
  static std::mutex mu;
  static uint64_t built_version = ~uint64_t{0};
  // Every table built stays alive: a decode running elsewhere may still hold an older one.
  // Registrations happen before main, so at most one is built after it.
  static std::vector<std::unique_ptr<Message>> built;
  std::lock_guard lock(mu);
  uint64_t version;
  {
    std::lock_guard tl(GlobalTable().mu);
    version = GlobalTable().version;
  }
  if (built.empty() || version != built_version) {
    auto next = std::make_unique<Message>(Message{"backend", {}, /*exactly_one=*/true});
    for (const BackendSchema* s : BackendSchemas()) {
      if (!s->unsupported.empty()) {
        next->fields.push_back(Field{.name = s->key, .type = Type::kUnsupported, .unsupported = s->unsupported});
      } else {
        next->fields.push_back(Field{.name = s->key, .type = Type::kMessage, .message = s->message});
      }
    }
    built.push_back(std::move(next));
    built_version = version;
  }
  return built.back().get();
}

}  // namespace schema

}  // namespace tidepool::config
