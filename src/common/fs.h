// Files and directories.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace tidepool {

Result<std::string> ReadFile(const std::string& path);

// A file's bytes mapped read-only (all its pages at once: one call, not a page fault for each
// page as a copy into fresh memory costs), for reading a large file once. An empty file is an
// empty view.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path);
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; }
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;
  ~MappedFile();
  std::string_view data() const { return {static_cast<const char*>(data_), size_}; }

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void* data_;
  size_t size_;
};

// Writes to a temporary file in the same directory, fsyncs (unless !sync: a cache that may be lost
// in a crash), then renames over `path`.
Status WriteFileAtomic(const std::string& path, const std::string& content, int mode = 0644, bool sync = true);
// Creates `path` and its parents; a directory it creates gets `mode`, an existing one is left as it is.
Status MakeDirs(const std::string& path, int mode = 0755);
bool PathExists(const std::string& path);
// $XDG_DATA_HOME/tidepool, else ~/.local/share/tidepool.
std::string DefaultDataDir();
// The absolute path of the running executable.
std::string SelfExe();
// The program `name` in the directory of the executable `exe`, if it is there and executable;
// else "". (How `tidepool` finds `tidepool-agent` installed beside it.)
std::string ProgramBeside(const std::string& exe, const std::string& name);

}  // namespace tidepool
