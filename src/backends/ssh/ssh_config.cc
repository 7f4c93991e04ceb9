// The `ssh` block: its schema, its checks, and its registration by config key.
#include "backends/registry.h"
#include "backends/ssh/host_list.h"
#include "backends/ssh/ssh_backend.h"
#include "config/schema.h"

namespace tidepool::backends {

namespace {

using config::schema::Field;
using config::schema::Message;
using config::schema::Type;
using config::schema::kNonNegative;
using namespace config::schema::make;

const Message* SshSchema() {
  static const Message m{"ssh",
                         {
                             // strings ("ops@gpu3:2222") or mappings: checked by CheckSsh
                             Field{.name = "hosts", .type = Type::kAny, .flags = config::schema::kAnyShape},
                             Str("user"),
                             Str("identity_file"),
                             WithDefault(Int32("port", kNonNegative), 22),
                             Str("known_hosts"),
                             Str("proxy_jump"),
                             WithDefault(Int32("workers_per_host", kNonNegative), 1),
                             Str("agent_path"),
                         }};
  return &m;
}

void CheckSsh(const nlohmann::json& fields, const config::BackendErrorReport& report) {
  auto port = fields.find("port");
  int p = port != fields.end() && port->is_number_integer() ? port->get<int>() : 22;
  if (p < 1 || p > 65535) report("port", "port must be 1-65535", false);
  auto per = fields.find("workers_per_host");
  if (per != fields.end() && per->is_number_integer() && per->get<int>() < 1) {
    report("workers_per_host", "workers_per_host must be at least 1", false);
  }
  if (auto jump = fields.find("proxy_jump"); jump != fields.end() && jump->is_string() && !jump->get<std::string>().empty()) {
    if (auto j = ssh::ParseHostString(jump->get<std::string>()); !j.ok()) report("proxy_jump", j.status().message(), false);
  }
  auto list = fields.find("hosts");
  if (list == fields.end() || !list->is_array() || list->empty()) {
    report("", "ssh needs at least one entry in hosts", true);
  } else if (auto hosts = ssh::ParseHosts(fields); !hosts.ok()) {
    const std::string m = hosts.status().message();  // a copy: status() is a temporary
    report("hosts", m.rfind("hosts: ", 0) == 0 ? m.substr(7) : m, false);
  }
}

const Registrar kRegistrar({.key = "ssh", .order = 30, .message = SshSchema, .active = true, .check = CheckSsh, .remote = true},
                           &ssh::SshBackend::Make);

}  // namespace

}  // namespace tidepool::backends
