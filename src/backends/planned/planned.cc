// Backends whose config blocks Tidepool already loads and validates (Velda's fields) but which are not built yet: each registers its schema and
// checks, no factory, and is reported "not yet active" (config/features.h). When one is built it
// moves to its own folder, src/backends/<name>/, with its class.
#include <fmt/format.h>

#include "backends/registry.h"

namespace tidepool::backends {

namespace {

using config::schema::Field;
using config::schema::Message;
using config::schema::Type;
using config::schema::kNonNegative;
using namespace config::schema::make;

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

const Registrar kAws({.key = "aws_launch_template", .order = 60, .message = Aws, .remote = true}, nullptr);
const Registrar kGce({.key = "gce_instance_group", .order = 70, .message = Gce, .remote = true}, nullptr);
const Registrar kNebius({.key = "nebius_launch_template", .order = 80, .message = Nebius, .remote = true}, nullptr);
const Registrar kMithril({.key = "mithril_spot_bid", .order = 90, .message = Mithril, .remote = true}, nullptr);
const Registrar kDigitalOcean({.key = "digitalocean_droplet", .order = 100, .message = DigitalOcean, .remote = true}, nullptr);
const Registrar kAzure({.key = "azure_vmss",
                        .order = 110,
                        .unsupported = "the azure_vmss backend is Velda's; Tidepool does not support it "
                                       "(use command or another backend)"},
                       nullptr);

}  // namespace

}  // namespace tidepool::backends
