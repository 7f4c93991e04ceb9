// LoadConfigString / LoadConfigPath: decode each file, build it, then apply the rules that span
// files (one server section, unique pool names, one default pool).
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "config/build.h"
#include "config/config.h"
#include "config/decode.h"

namespace tidepool::config {

namespace {

class Loader {
 public:
  explicit Loader(const EnvLookup& env) : env_(env) {}

  void AddText(const std::string& text, const std::string& file) {
    files_.push_back(file);
    Document doc = DecodeYaml(text, file, env_, &errors_);
    parts_.push_back(BuildFile(doc, &errors_));
  }

  void AddFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      files_.push_back(path);
      errors_.push_back({{path, 0, 0}, std::string("cannot read: ") + std::strerror(errno)});
      return;
    }
    std::ostringstream text;
    text << in.rdbuf();
    AddText(text.str(), path);
  }

  void AddError(ConfigError e) { errors_.push_back(std::move(e)); }

  LoadResult Finish(const std::string& source) {
    Config config;
    config.source = source;
    std::optional<SourcePos> server_at;
    std::map<std::string, SourcePos> names;
    std::optional<std::pair<std::string, SourcePos>> default_pool;
    for (FileConfig& part : parts_) {
      if (part.server && server_at) {
        errors_.push_back({part.server_pos, "server: already given at " + FormatPos(*server_at) +
                                                "; give the server section in one file only"});
      } else if (part.server) {
        config.server = *part.server;
        server_at = part.server_pos;
      }
      for (size_t i = 0; i < part.pools.size(); ++i) {
        const PoolConfig& pool = part.pools[i];
        if (!pool.name.empty()) {
          auto [it, fresh] = names.emplace(pool.name, part.name_pos[i]);
          if (!fresh) {
            errors_.push_back({part.name_pos[i], "duplicate pool name \"" + pool.name +
                                                     "\" (first defined at " +
                                                     FormatPos(it->second) + ")"});
          }
        }
        if (pool.is_default && default_pool) {
          errors_.push_back({part.default_pos[i], "more than one default pool: \"" + pool.name +
                                                      "\" and \"" + default_pool->first +
                                                      "\" (at " + FormatPos(default_pool->second) +
                                                      ")"});
        } else if (pool.is_default) {
          default_pool = {pool.name, part.default_pos[i]};
        }
        config.pools.push_back(pool);
      }
      config.inactive.insert(config.inactive.end(), part.inactive.begin(), part.inactive.end());
    }
    SortByPosition(&errors_, [](const ConfigError& e) -> const SourcePos& { return e.pos; });
    SortByPosition(&config.inactive,
                   [](const InactiveField& f) -> const SourcePos& { return f.pos; });
    LoadResult result;
    if (errors_.empty()) result.config = std::move(config);
    result.errors = std::move(errors_);
    return result;
  }

 private:
  // File order (as read), then line and column; stable so equal positions keep their order.
  template <typename T, typename PosOf>
  void SortByPosition(std::vector<T>* items, PosOf pos_of) const {
    auto file_rank = [this](const std::string& file) {
      return std::find(files_.begin(), files_.end(), file) - files_.begin();
    };
    std::stable_sort(items->begin(), items->end(), [&](const T& a, const T& b) {
      const SourcePos &pa = pos_of(a), &pb = pos_of(b);
      return std::make_tuple(file_rank(pa.file), pa.line, pa.column) <
             std::make_tuple(file_rank(pb.file), pb.line, pb.column);
    });
  }

  const EnvLookup& env_;
  std::vector<std::string> files_;
  std::vector<FileConfig> parts_;
  std::vector<ConfigError> errors_;
};

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The *.yaml files of `dir` in name order; hidden files (editor leftovers) are skipped.
std::vector<std::string> YamlFiles(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.size() > 5 && name[0] != '.' && name.ends_with(".yaml")) names.push_back(name);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  std::string prefix = dir.ends_with("/") ? dir : dir + "/";
  for (std::string& n : names) n = prefix + n;
  return names;
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

LoadResult LoadConfigString(const std::string& yaml, const std::string& filename,
                            const EnvLookup& env) {
  Loader loader(env);
  loader.AddText(yaml, filename);
  return loader.Finish(filename);
}

LoadResult LoadConfigPath(const std::string& path, const EnvLookup& env) {
  Loader loader(env);
  if (IsDirectory(path)) {
    std::vector<std::string> files = YamlFiles(path);
    if (files.empty()) loader.AddError({{path, 0, 0}, "no *.yaml files in this directory"});
    for (const std::string& f : files) loader.AddFile(f);
  } else {
    loader.AddFile(path);
  }
  return loader.Finish(path);
}

}  // namespace tidepool::config
