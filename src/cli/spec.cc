#include "cli/spec.h"

#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

#include "common/duration.h"
#include "common/process.h"

namespace tidepool::cli {

Status FillSpec(const CommonSpec& c, v1::TaskSpec* spec) {
  for (const auto& a : c.command) spec->add_argv(a);
  char buf[4096];
  std::string here = getcwd(buf, sizeof(buf)) ? buf : "/";
  std::string cwd = c.cwd.empty() ? here : (c.cwd[0] == '/' ? c.cwd : here + "/" + c.cwd);
  spec->set_cwd(cwd);
  // Working in /: not a project; there is nothing to bring (workspace_client.h).
  if (cwd == "/") spec->mutable_workspace()->set_none(true);
  auto& env = *spec->mutable_env();
  for (const std::string& kv : CurrentEnvironment()) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string key = kv.substr(0, eq);
    if (!IsLocalOnlyVariable(key)) env[key] = kv.substr(eq + 1);
  }
  env["PWD"] = cwd;
  for (const std::string& e : c.env) {
    auto eq = e.find('=');
    if (eq == 0 || e.empty()) return InvalidArgument(fmt::format("-e {}: expected K=V or K", e));
    if (eq == std::string::npos) {
      if (const char* v = std::getenv(e.c_str())) env[e] = v;
    } else {
      env[e.substr(0, eq)] = e.substr(eq + 1);
    }
  }
  // Inside a task, what we submit is its child (tasks.md, "Ids and names").
  if (const char* parent = std::getenv("TIDEPOOL_TASK_ID"); parent && *parent) spec->set_parent(parent);
  spec->set_pool(c.pool);
  spec->set_name(c.name);
  spec->set_priority(c.priority);
  if (!c.timeout.empty()) {
    auto d = ParseDuration(c.timeout);
    if (!d.ok()) return InvalidArgument(fmt::format("--timeout: {}", d.status().message()));
    spec->set_timeout_ms(d->count());
  }
  return Status::Ok();
}

}  // namespace tidepool::cli
