// The `slurm` block: its schema, its checks, and its registration by config key.
#include <fmt/format.h>

#include "backends/registry.h"
#include "backends/slurm/slurm_backend.h"
#include "backends/slurm/slurm_time.h"
#include "config/schema.h"

namespace tidepool::backends {

namespace {

using config::schema::Field;
using config::schema::Message;
using config::schema::kNonNegative;
using namespace config::schema::make;

const Message* Login() {
  static const Message m{"login",
                         {Str("host"), Int32("port", kNonNegative), Str("user"), Str("identity_file"),
                          Str("known_hosts"), Str("proxy_jump")}};
  return &m;
}

const Message* SlurmSchema() {
  static const Message m{"slurm",
                         {
                             Str("partition"),
                             Str("account"),
                             Str("qos"),
                             Str("time_limit"),
                             Int32("cpus_per_task", kNonNegative),
                             Str("mem"),
                             Str("gres"),
                             StrList("sbatch_args"),
                             Str("job_name_prefix"),
                             WithDefault(Duration("drain_before"), 600000),
                             Msg("login", Login),
                             Str("agent_path"),
                             Str("output_dir"),
                         }};
  return &m;
}

bool NameChars(const std::string& s) {
  return !s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                           std::string::npos;
}

void CheckSlurm(const nlohmann::json& fields, const config::BackendErrorReport& report) {
  if (auto limit = fields.find("time_limit"); limit != fields.end() && limit->is_string()) {
    if (auto arg = SlurmTimeArg(limit->get<std::string>()); !arg.ok()) {
      report("time_limit", arg.status().message(), false);
    } else if (auto secs = SlurmTimeSeconds(limit->get<std::string>()); secs) {
      // A worker drained as it starts would be replaced by another drained as it starts.
      auto before = fields.find("drain_before");
      int64_t before_ms = before != fields.end() && before->is_number_integer() ? before->get<int64_t>() : 600000;
      if (before_ms >= *secs * 1000) {
        report("drain_before", fmt::format("drain_before ({}s) must be shorter than time_limit ({}s): a worker would "
                                           "take no task at all",
                                           before_ms / 1000, *secs),
               false);
      }
    }
  }
  if (auto p = fields.find("job_name_prefix"); p != fields.end() && p->is_string()) {
    std::string prefix = p->get<std::string>();
    if (!NameChars(prefix) || prefix.size() > 200) {
      report("job_name_prefix", "job_name_prefix must be 1-200 of A-Z a-z 0-9 . _ - (it starts worker names)", false);
    }
  }
  if (auto args = fields.find("sbatch_args"); args != fields.end() && args->is_array()) {
    for (size_t i = 0; i < args->size(); ++i) {
      const auto& a = (*args)[i];
      if (!a.is_string()) continue;
      std::string s = a.get<std::string>();
      for (const char* ours : {"--job-name", "-J", "--export", "--wrap", "--parsable", "--output", "-o"}) {
        std::string o = ours;
        if (s == o || s.rfind(o + "=", 0) == 0) {
          report("sbatch_args", fmt::format("sbatch_args[{}]: {} is set by Tidepool (the worker's name, its "
                                            "environment, its script)", i, o), false);
        }
      }
    }
  }
  if (auto login = fields.find("login"); login != fields.end() && login->is_object()) {
    auto host = login->find("host");
    if (host == login->end() || !host->is_string() || host->get<std::string>().empty()) {
      report("login", "login needs a host", false);
    }
    if (auto port = login->find("port"); port != login->end() && port->is_number_integer() &&
                                         (port->get<int>() < 1 || port->get<int>() > 65535)) {
      report("login", "login.port must be 1-65535", false);
    }
  }
}

const Registrar kRegistrar({.key = "slurm", .order = 40, .message = SlurmSchema, .active = true, .check = CheckSlurm, .remote = true},
                           &slurm::SlurmBackend::Make);

}  // namespace

}  // namespace tidepool::backends
