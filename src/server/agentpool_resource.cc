// The AgentPool resource read as a pool and written as a status (agentpool_resource.h).
#include "server/agentpool_resource.h"

#include <fmt/format.h>

#include "common/time.h"

namespace tidepool::server {

namespace {

using nlohmann::json;

// "agent_pools[0].auto_scaler.max_agents: ..." -> "spec.auto_scaler.max_agents: ...".
std::string AsSpecPath(std::string message) {
  for (const char* p : {"agent_pools[0].", "agent_pools[0]"}) {
    for (size_t at; (at = message.find(p)) != std::string::npos;) {
      message.replace(at, std::string(p).size(), std::string(p).back() == '.' ? "spec." : "spec");
    }
  }
  return message;
}

// metav1.Time: RFC 3339 to the second.
std::string MetaTime(int64_t ms) {
  std::string t = FormatRfc3339(ms - ms % 1000);
  if (auto dot = t.find('.'); dot != std::string::npos) t = t.substr(0, dot) + "Z";
  return t;
}

const json* PreviousCondition(const json& previous, const std::string& type) {
  if (!previous.is_object() || !previous.contains("conditions") || !previous["conditions"].is_array()) return nullptr;
  for (const json& c : previous["conditions"]) {
    if (c.is_object() && c.value("type", "") == type) return &c;
  }
  return nullptr;
}

}  // namespace

DeclaredPool ReadAgentPool(const json& object, const config::EnvLookup& env) {
  DeclaredPool d;
  const json meta = object.value("metadata", json::object());
  d.name = meta.value("name", "");
  d.uid = meta.value("uid", "");
  d.generation = meta.value("generation", int64_t{0});
  d.deleting = meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null();
  if (!object.contains("spec") || !object["spec"].is_object()) {
    d.error = "spec: missing (an AgentPool's spec is a pool entry as under agent_pools in the config file)";
    return d;
  }
  json entry = object["spec"];
  if (entry.contains("name") && entry["name"] != d.name) {
    d.error = fmt::format("spec.name: {} is not the resource's name \"{}\" (leave it out: the pool is named by "
                          "metadata.name)",
                          entry["name"].dump(), d.name);
    return d;
  }
  entry["name"] = d.name;
  // JSON is YAML: the entry goes through the config file's own loader and checks.
  config::LoadResult loaded = config::LoadConfigString("agent_pools:\n  - " + entry.dump() + "\n",
                                                       "AgentPool " + d.name, env);
  if (!loaded.config) {
    std::string all;
    for (const config::ConfigError& e : loaded.errors) all += (all.empty() ? "" : "; ") + AsSpecPath(e.message);
    d.error = all.empty() ? "spec: not a valid pool entry" : all;
    return d;
  }
  if (loaded.config->pools.size() != 1) {
    d.error = "spec: not one pool entry";
    return d;
  }
  d.config = loaded.config->pools.front();
  return d;
}

json AgentPoolStatus(const DeclaredPool& d, const v1::Pool* pool, const json& previous, int64_t now_ms) {
  json st = json::object();
  st["observedGeneration"] = d.generation;
  json workers = json::object();
  for (const char* s : {"requested", "starting", "idle", "busy", "draining", "deleting", "lost", "unknown"}) workers[s] = 0;
  if (pool) {
    for (const auto& [state, n] : pool->workers()) workers[state] = n;
  }
  st["workers"] = workers;
  st["queued"] = pool ? pool->queued() : 0;
  const std::string error = !d.error.empty() ? d.error : pool ? pool->last_error() : "";
  st["lastError"] = error;
  if (!error.empty()) {
    bool same = previous.is_object() && previous.value("lastError", "") == error && previous.contains("lastErrorTime");
    st["lastErrorTime"] = same ? previous["lastErrorTime"] : json(MetaTime(now_ms));
  }

  struct Cond {
    const char* type;
    bool status;
    std::string reason, message;
  };
  std::vector<Cond> conds;
  if (!d.error.empty()) {
    conds.push_back({"Ready", false, "InvalidSpec", d.error});
  } else if (!pool) {
    conds.push_back({"Ready", false, "NotStarted", "the pool is not running yet"});
  } else if (pool->status() == "cooldown") {
    conds.push_back({"Ready", false, "CoolingDown", pool->last_error()});
  } else if (pool->status() == "held") {
    conds.push_back({"Ready", false, "Held", "the pool creates no workers now"});
  } else {
    conds.push_back({"Ready", true, "PoolReady", ""});
  }
  int starting = workers["requested"].get<int>() + workers["starting"].get<int>();
  if (starting > 0) {
    conds.push_back({"ScalingUp", true, "WorkersStarting",
                     fmt::format("{} worker{} starting", starting, starting == 1 ? "" : "s")});
  } else {
    conds.push_back({"ScalingUp", false, "Steady", ""});
  }
  if (!error.empty()) {
    conds.push_back({"Degraded", true, d.error.empty() ? "PoolError" : "InvalidSpec", error});
  } else {
    conds.push_back({"Degraded", false, "NoErrors", ""});
  }
  json out = json::array();
  for (const Cond& c : conds) {
    const std::string status = c.status ? "True" : "False";
    const json* before = PreviousCondition(previous, c.type);
    bool unchanged = before && before->value("status", "") == status && before->contains("lastTransitionTime");
    out.push_back({{"type", c.type},
                   {"status", status},
                   {"reason", c.reason},
                   {"message", c.message},
                   {"observedGeneration", d.generation},
                   {"lastTransitionTime", unchanged ? (*before)["lastTransitionTime"] : json(MetaTime(now_ms))}});
  }
  st["conditions"] = out;
  return st;
}

}  // namespace tidepool::server
