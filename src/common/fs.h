// Files and directories.
#pragma once

#include <string>

#include "common/status.h"

namespace tidepool {

Result<std::string> ReadFile(const std::string& path);
// Writes to a temporary file in the same directory, fsyncs, then renames over `path`.
Status WriteFileAtomic(const std::string& path, const std::string& content, int mode = 0644);
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
