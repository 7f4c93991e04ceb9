// The parts of a TaskSpec that vrun and vbatch build the same way: exact argv, working
// directory, and the caller's environment minus what describes the local terminal/session.
#pragma once

#include <string>
#include <vector>

#include "cli/client_env.h"
#include "common/status.h"
#include "tidepool/v1/common.pb.h"

namespace tidepool::cli {

struct CommonSpec {
  std::vector<std::string> command;
  std::string cwd;                   // -C; "" = current directory; relative = against it
  std::vector<std::string> env;      // -e K=V or -e K
  std::string pool;
  std::string name;
  int priority = 0;
  std::string timeout;               // a duration, "" = none
};

// Fills argv, cwd, env, pool, name, priority, timeout. Errors name the bad flag.
Status FillSpec(const CommonSpec& c, v1::TaskSpec* spec);

}  // namespace tidepool::cli
