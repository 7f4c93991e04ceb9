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

using namespace make;

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

const Message* Workspace() {
  static const Message m{"workspace",
                         {Enum("mode", {{"sync", 1, {}}, {"shared", 2, {}}, {"none", 3, {}}}), StrList("extra"),
                          Bool("gitignore"), Str("max_bytes"), Str("cache_bytes")}};
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
                             Msg("workspace", Workspace),
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

const Message* Root() {
  static const Message m{"", {Msg("server", Server), MsgList("agent_pools", Pool)}};
  return &m;
}

}  // namespace tidepool::config::schema
