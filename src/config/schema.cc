#include "config/schema.h"

namespace tidepool::config::schema {

const Field* Message::Find(std::string_view snake_name) const {
  for (const Field& f : fields) {
    if (f.name == snake_name) return &f;
  }
  return nullptr;
}

std::string CamelCase(std::string_view snake) {
  std::string out;
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
    } else {
      out += upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
      upper = false;
    }
  }
  return out;
}

namespace {

using Json = nlohmann::json;

// Short constructors keep the tables below one line per field.
Field Str(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kString, .flags = flags};
}
Field Bool(std::string_view n) { return {.name = n, .type = Type::kBool}; }
Field Int32(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kInt32, .flags = flags};
}
Field Int64(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kInt64, .flags = flags};
}
Field Double(std::string_view n, unsigned flags = 0) {
  return {.name = n, .type = Type::kDouble, .flags = flags};
}
Field Duration(std::string_view n) { return {.name = n, .type = Type::kDuration}; }
Field StrList(std::string_view n) { return {.name = n, .type = Type::kStringList}; }
Field StrMap(std::string_view n) { return {.name = n, .type = Type::kStringMap}; }
Field Msg(std::string_view n, const Message* (*m)()) {
  return {.name = n, .type = Type::kMessage, .message = m};
}
Field MsgList(std::string_view n, const Message* (*m)()) {
  return {.name = n, .type = Type::kMessageList, .message = m};
}
Field Enum(std::string_view n, std::vector<EnumValue> values) {
  return {.name = n, .type = Type::kEnum, .enum_values = std::move(values)};
}
Field WithDefault(Field f, Json value) {
  f.default_value = std::move(value);
  return f;
}
Field InOneof(Field f, std::string_view group) {
  f.oneof = group;
  return f;
}
Field Secret(std::string_view n, std::string_view fallback_env = {}) {
  return {.name = n, .type = Type::kString, .flags = kSecret, .fallback_env = fallback_env};
}

// ---- velda.agent.AgentConfig (proto/agent/config.proto) ----

const Message* HostMount() {
  static const Message m{"host_mounts", {Str("source"), Str("target"), Bool("read_write")}};
  return &m;
}

const Message* MountedDiskSource() {
  static const Message m{"mounted_disk_source", {Str("local_path")}};
  return &m;
}

const Message* AgentDiskSource() {
  static const Message m{"disk_source",
                         {InOneof(Msg("mounted_disk_source", MountedDiskSource), "source")}};
  return &m;
}

const Message* SandboxConfig() {
  static const Message m{"sandbox_config",
                         {
                             Msg("disk_source", AgentDiskSource),
                             StrList("allowed_host_mount_sources"),
                             MsgList("host_mounts", HostMount),
                             Duration("max_time"),
                             Str("host_local_mount_base_dir"),
                             Bool("allocate_tty"),
                             Str("apparmor_profile"),
                         }};
  return &m;
}

const Message* Network() {
  static const Message m{"network",
                         {
                             InOneof(Str("private_cidr_range"), "agent_ip"),
                             InOneof(Bool("detect_gcp_alias_ip_ranges"), "agent_ip"),
                             Enum("network_mode", {{"NETWORK_MODE_UNSPECIFIED", 0, {}},
                                                   {"NETWORK_MODE_HOST", 1, {}},
                                                   {"NETWORK_MODE_BRIDGE", 2, {}}}),
                             Bool("block_metadata_server"),
                         }};
  return &m;
}

const Message* DaemonConfig() {
  static const Message m{"daemon_config",
                         {Str("work_dir_path"), Int32("max_sessions", kNonNegative),
                          Msg("network", Network)}};
  return &m;
}

const Message* Broker() {
  static const Message m{"broker", {Str("address")}};
  return &m;
}

const Message* AgentConfig() {
  static const Message m{"agent_config",
                         {
                             Msg("broker", Broker),
                             Str("session"),
                             Int64("instance"),
                             Msg("sandbox_config", SandboxConfig),
                             Msg("daemon_config", DaemonConfig),
                             Str("pool"),
                         }};
  return &m;
}

// ---- backends (Velda's proto/config/config.proto, plus Tidepool's own) ----

const Message* Tailscale() {
  static const Message m{"tailscale_config", {Str("server"), Secret("pre_auth_key")}};
  return &m;
}

const Message* Local() {
  // Simulations for benchmarks and tests: boot_delay, a slow boot (the agent starts that long
  // after the create); api_delay, a slow cloud API (the create answers that long after the
  // agent was started, so the agent may connect before its create has returned).
  static const Message m{"local", {WithDefault(Duration("boot_delay"), 0), WithDefault(Duration("api_delay"), 0)}};
  return &m;
}

const Message* Command() {
  static const Message m{"command",
                         {
                             Str("start", kVerbatim),
                             Str("stop", kVerbatim),
                             Str("list", kVerbatim),
                             Str("batch_start", kVerbatim),
                             WithDefault(Duration("timeout"), 300000),  // 5m per call
                         }};
  return &m;
}

const Message* Ssh() {
  static const Message m{"ssh",
                         {
                             StrList("hosts"),
                             Str("user"),
                             Str("identity_file"),
                             WithDefault(Int32("port", kNonNegative), 22),
                             Str("work_dir"),
                         }};
  return &m;
}

const Message* Slurm() {
  static const Message m{"slurm",
                         {Str("partition"), StrList("sbatch_args"), Str("time_limit"),
                          Str("job_name_prefix")}};
  return &m;
}

const Message* Kubernetes() {
  static const Message m{
      "kubernetes",
      {
          Str("kubeconfig"),
          Str("context"),
          InOneof(Str("pod_template_path"), "pod_template"),
          Str("pod_selector"),
          Str("namespace"),
          Str("name_prefix"),
          InOneof(Field{.name = "pod_template", .type = Type::kAny}, "pod_template"),
      }};
  return &m;
}

const Message* Aws() {
  static const Message m{"aws_launch_template",
                         {
                             Str("region"),
                             Str("launch_template_name"),
                             Str("instance_name_prefix"),
                             Bool("use_instance_id_as_name"),
                             Str("instance_type"),
                             Str("agent_config_content"),
                             Msg("agent_config", AgentConfig),
                             Str("zone"),
                             Str("subnet_id"),
                             StrMap("tags"),
                             Str("ami_id"),
                             StrList("security_group_ids"),
                             Int32("max_stopped_instances", kNonNegative),
                             Duration("max_instance_lifetime"),
                             Str("agent_version_override"),
                         }};
  return &m;
}

const Message* Gce() {
  static const Message m{
      "gce_instance_group",
      {Str("project"), Str("zone"), Str("instance_group"), Str("instance_name_prefix")}};
  return &m;
}

const Message* NebiusFilesystem() {
  static const Message m{"filesystems", {Str("filesystem_id"), Str("mount_path")}};
  return &m;
}

const Message* Nebius() {
  static const Message m{
      "nebius_launch_template",
      {
          Str("parent_id"),
          Str("instance_name_prefix"),
          Str("platform"),
          Str("resource_preset"),
          Str("agent_config_content"),
          Msg("agent_config", AgentConfig),
          Str("subnet_id"),
          Int64("boot_disk_size_gb", kNonNegative),
          Bool("preemptible"),
          Bool("use_public_ip"),
          StrMap("labels"),
          Str("admin_ssh_key"),
          Str("agent_version_override"),
          Int32("max_disk_pool_size", kNonNegative),
          Msg("tailscale_config", Tailscale),
          Enum("boot_disk_type", {{"NEBIUS_BOOT_DISK_TYPE_UNSPECIFIED", 0, {}},
                                  {"SSD", 1, {}},
                                  {"SSD_NRD", 2, {}},
                                  {"SSD_IO", 3, {}}}),
          MsgList("filesystems", NebiusFilesystem),
          StrList("additional_runcmds"),
          Str("service_account_id"),
      }};
  return &m;
}

const Message* Mithril() {
  static const Message m{"mithril_spot_bid",
                         {
                             Str("instance_type"),
                             Str("region"),
                             Double("limit_price", kNonNegative),
                             Str("agent_config_content"),
                             Msg("agent_config", AgentConfig),
                             StrMap("labels"),
                             StrList("ssh_key_ids"),
                             Str("agent_version_override"),
                             Str("startup_script"),
                             Str("project_id"),
                             Secret("api_token", "MITHRIL_API_TOKEN"),
                             Str("api_endpoint"),
                             Int32("max_suspended_bids", kNonNegative),
                             Msg("tailscale_config", Tailscale),
                             Int32("memory_gb", kNonNegative),
                         }};
  return &m;
}

const Message* DigitalOcean() {
  static const Message m{"digitalocean_droplet",
                         {
                             Str("name"),
                             Str("region"),
                             Str("size"),
                             Str("image"),
                             Field{.name = "ssh_key_ids", .type = Type::kInt32List},
                             Bool("backups"),
                             Bool("ipv6"),
                             Bool("monitoring"),
                             StrList("tags"),
                             Str("vpc_uuid"),
                             Str("agent_config_content"),
                             Msg("agent_config", AgentConfig),
                             StrMap("labels"),
                             Str("agent_version_override"),
                             Secret("api_token", "DIGITALOCEAN_API_TOKEN"),
                             Str("api_endpoint"),
                             Msg("tailscale_config", Tailscale),
                         }};
  return &m;
}

// ---- pools ----

const Message* Metadata() {
  static const Message m{"metadata", {Str("description")}};
  return &m;
}

const Message* ScheduleWindow() {
  static const Message m{"schedule",
                         {StrList("days"), Str("hours"), Str("tz"),
                          Int32("min_agents", kNonNegative),
                          Int32("min_idle_agents", kNonNegative),
                          Int32("max_agents", kNonNegative)}};
  return &m;
}

const Message* ConsolidateWindow() {
  static const Message m{"consolidate", {StrList("days"), Str("hours"), Str("tz")}};
  return &m;
}

const Message* ScaleIn() {
  static const Message m{
      "scale_in",
      {Field{.name = "consolidate", .type = Type::kMessageOrList, .message = ConsolidateWindow}}};
  return &m;
}

const Message* Utilization() {
  static const Message m{"utilization",
                         {
                             Enum("metric", {{"cpu", 0, {}},
                                             {"gpu", 1, {}},
                                             {"memory", 2, {}},
                                             {"slots", 3, {}}}),
                             Double("scale_up_threshold"),
                             Duration("scale_up_for"),
                             Double("scale_down_threshold"),
                             Duration("scale_down_for"),
                             Int32("step", kNonNegative),
                             Duration("cooldown"),
                             Duration("abort_after"),
                         }};
  return &m;
}

const Message* AutoScaler() {
  static const Message m{
      "auto_scaler",
      {
          Msg("backend", Backend),
          Int32("max_agents", kNonNegative),
          Int32("min_agents", kNonNegative),
          Int32("min_idle_agents", kNonNegative),
          Int32("max_idle_agents", kNonNegative),
          Int32("default_slots_per_agent", kNonNegative),
          Duration("idle_decay"),
          Duration("sync_loop_interval"),
          Duration("kill_unknown_after"),
          Duration("register_timeout"),
          Duration("initial_delay"),
          Duration("scale_up_error_retry_delay"),
          Duration("allocation_error_reset_after"),
          Enum("mode", {{"MODE_UNSPECIFIED", 0, {}},
                        {"MODE_STANDARD", 1, {}},
                        {"MODE_BATCH", 2, {}},
                        {"standard", 1, "MODE_STANDARD"},
                        {"batch", 2, "MODE_BATCH"}}),
          Int32("max_concurrent_creates", kNonNegative),
          Field{.name = "create_rate", .type = Type::kRate},
          Msg("metadata", Metadata),
          MsgList("schedule", ScheduleWindow),
          Msg("scale_in", ScaleIn),
          Msg("utilization", Utilization),
      }};
  return &m;
}

const Message* Fixed() {
  static const Message m{"fixed", {Msg("backend", Backend), Int32("count", kNonNegative)}};
  return &m;
}

const Message* Pool() {
  static const Message m{"agent_pools",
                         {
                             Str("name"),
                             Str("description"),
                             Bool("default"),
                             StrList("selectors"),
                             Int32("selector_priority"),
                             StrList("kinds"),
                             StrMap("labels"),
                             Msg("auto_scaler", AutoScaler),
                             Msg("fixed", Fixed),
                         }};
  return &m;
}

const Message* Tls() {
  static const Message m{"tls", {Str("cert"), Str("key"), Str("client_ca")}};
  return &m;
}

const Message* Auth() {
  static const Message m{"auth", {Str("users_file"), Secret("metrics_token")}};
  return &m;
}

const Message* Server() {
  static const Message m{"server",
                         {Str("listen"), Str("metrics_listen"), Str("advertise"), Str("data_dir"),
                          Str("db"), Msg("tls", Tls), Msg("auth", Auth)}};
  return &m;
}

}  // namespace

const Message* Backend() {
  static const Message m{
      "backend",
      {
          Msg("local", Local),
          Msg("command", Command),
          Msg("ssh", Ssh),
          Msg("slurm", Slurm),
          Msg("kubernetes", Kubernetes),
          Msg("aws_launch_template", Aws),
          Msg("gce_instance_group", Gce),
          Msg("nebius_launch_template", Nebius),
          Msg("mithril_spot_bid", Mithril),
          Msg("digitalocean_droplet", DigitalOcean),
          Field{.name = "azure_vmss",
                .type = Type::kUnsupported,
                .unsupported = "the azure_vmss backend is Velda's; Tidepool does not support it "
                               "(use command or another backend)"},
      },
      /*exactly_one=*/true};
  return &m;
}

const Message* Root() {
  static const Message m{"", {Msg("server", Server), MsgList("agent_pools", Pool)}};
  return &m;
}

}  // namespace tidepool::config::schema
