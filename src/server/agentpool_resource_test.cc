// The AgentPool resource read as a pool and written as a status, on a fixed clock.
#include "server/agentpool_resource.h"

#include <gtest/gtest.h>

namespace tidepool::server {
namespace {

using nlohmann::json;

config::EnvLookup Env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (name == "POD_NAMESPACE") return std::string("ml");
    return std::nullopt;
  };
}

json Resource(const json& spec, int64_t generation = 3) {
  return {{"apiVersion", "tidepool.dev/v1"},
          {"kind", "AgentPool"},
          {"metadata", {{"name", "gpu"}, {"namespace", "ml"}, {"uid", "u-1"}, {"generation", generation}}},
          {"spec", spec}};
}

TEST(AgentPoolResource, ASpecIsAPoolEntryNamedByTheResource) {
  DeclaredPool d = ReadAgentPool(
      Resource({{"selectors", {"gpu"}},
                {"auto_scaler",
                 {{"max_agents", 4},
                  {"idle_decay", "2m"},
                  {"backend", {{"kubernetes", {{"namespace", "${POD_NAMESPACE}"},
                                               {"pod_template", {{"spec", {{"containers", {{{"image", "t:1"}}}}}}}}}}}}}}}),
      Env());
  ASSERT_EQ(d.error, "");
  ASSERT_TRUE(d.config);
  EXPECT_EQ(d.name, "gpu");
  EXPECT_EQ(d.config->name, "gpu");
  EXPECT_EQ(d.generation, 3);
  EXPECT_EQ(d.uid, "u-1");
  EXPECT_FALSE(d.deleting);
  ASSERT_TRUE(d.config->auto_scaler);
  EXPECT_EQ(d.config->auto_scaler->max_agents, 4);
  EXPECT_EQ(d.config->auto_scaler->idle_decay.count(), 120000);
  ASSERT_NE(d.config->backend(), nullptr);
  EXPECT_EQ(d.config->backend()->fields["namespace"], "ml");  // ${VAR} as in a config file
}

TEST(AgentPoolResource, AnInvalidSpecNamesTheFieldAsTheOperatorWroteIt) {
  DeclaredPool d = ReadAgentPool(Resource({{"auto_scaler", {{"max_agents", "many"}, {"backend", {{"local", json::object()}}}}}}),
                                 Env());
  EXPECT_FALSE(d.config);
  EXPECT_NE(d.error.find("spec.auto_scaler.max_agents"), std::string::npos) << d.error;
  EXPECT_EQ(d.error.find("agent_pools"), std::string::npos) << d.error;

  d = ReadAgentPool(Resource({{"auto_scaler", {{"backend", {{"kubernetes", {{"pod_template", {{"spec", json::object()}}}}}}}}}}),
                    Env());
  EXPECT_NE(d.error.find("spec.auto_scaler.backend.kubernetes.pod_template"), std::string::npos) << d.error;
  EXPECT_NE(d.error.find("a pod needs at least one container"), std::string::npos) << d.error;

  d = ReadAgentPool(Resource({{"name", "cpu"}}), Env());
  EXPECT_NE(d.error.find("spec.name: \"cpu\" is not the resource's name \"gpu\""), std::string::npos) << d.error;
  json no_spec = Resource(json::object());
  no_spec.erase("spec");
  EXPECT_NE(ReadAgentPool(no_spec, Env()).error.find("spec: missing"), std::string::npos);
  json deleting = Resource({{"auto_scaler", {{"backend", {{"local", json::object()}}}}}});
  deleting["metadata"]["deletionTimestamp"] = "2026-12-07T01:00:00Z";
  EXPECT_TRUE(ReadAgentPool(deleting, Env()).deleting);
}

v1::Pool Snapshot(int idle, int starting, int queued, const std::string& status, const std::string& error) {
  v1::Pool p;
  p.set_name("gpu");
  for (const char* s : {"requested", "starting", "idle", "busy", "draining", "deleting", "lost", "unknown"}) {
    (*p.mutable_workers())[s] = 0;
  }
  (*p.mutable_workers())["idle"] = idle;
  (*p.mutable_workers())["starting"] = starting;
  p.set_queued(queued);
  p.set_status(status);
  p.set_last_error(error);
  return p;
}

const json& Cond(const json& status, const std::string& type) {
  for (const json& c : status["conditions"]) {
    if (c["type"] == type) return c;
  }
  static const json none;
  return none;
}

constexpr int64_t kT0 = 1765069200000;  // 2025-12-07T01:00:00Z

TEST(AgentPoolResource, TheStatusCountsWorkersAndSaysReadyScalingUpAndDegraded) {
  DeclaredPool d = ReadAgentPool(Resource({{"auto_scaler", {{"backend", {{"local", json::object()}}}}}}), Env());
  v1::Pool p = Snapshot(2, 1, 5, "scaling", "");
  json st = AgentPoolStatus(d, &p, json(), kT0);
  EXPECT_EQ(st["observedGeneration"], 3);
  EXPECT_EQ(st["workers"]["idle"], 2);
  EXPECT_EQ(st["workers"]["starting"], 1);
  EXPECT_EQ(st["workers"]["busy"], 0);
  EXPECT_EQ(st["queued"], 5);
  EXPECT_EQ(st["lastError"], "");
  EXPECT_FALSE(st.contains("lastErrorTime"));
  EXPECT_EQ(Cond(st, "Ready")["status"], "True");
  EXPECT_EQ(Cond(st, "ScalingUp")["status"], "True");
  EXPECT_EQ(Cond(st, "ScalingUp")["message"], "1 worker starting");
  EXPECT_EQ(Cond(st, "Degraded")["status"], "False");
  EXPECT_EQ(Cond(st, "Ready")["lastTransitionTime"], "2025-12-07T01:00:00Z");

  // A failed create: cooling down, degraded with the pool's words; Ready's transition is now,
  // ScalingUp's (still True? no: nothing starting) changes too, and the error's time is kept
  // while the error stays the same.
  v1::Pool failing = Snapshot(2, 0, 5, "cooldown", "create gpu-x: exceeded quota [quota]");
  json st2 = AgentPoolStatus(d, &failing, st, kT0 + 60000);
  EXPECT_EQ(Cond(st2, "Ready")["status"], "False");
  EXPECT_EQ(Cond(st2, "Ready")["reason"], "CoolingDown");
  EXPECT_EQ(Cond(st2, "Ready")["lastTransitionTime"], "2025-12-07T01:01:00Z");
  EXPECT_EQ(Cond(st2, "Degraded")["status"], "True");
  EXPECT_EQ(Cond(st2, "Degraded")["message"], "create gpu-x: exceeded quota [quota]");
  EXPECT_EQ(st2["lastError"], "create gpu-x: exceeded quota [quota]");
  EXPECT_EQ(st2["lastErrorTime"], "2025-12-07T01:01:00Z");
  json st3 = AgentPoolStatus(d, &failing, st2, kT0 + 120000);
  EXPECT_EQ(st3["lastErrorTime"], "2025-12-07T01:01:00Z");
  EXPECT_EQ(Cond(st3, "Ready")["lastTransitionTime"], "2025-12-07T01:01:00Z");  // unchanged status, unchanged time
  EXPECT_EQ(Cond(st3, "Degraded")["lastTransitionTime"], "2025-12-07T01:01:00Z");
}

TEST(AgentPoolResource, AnInvalidSpecIsNotReadyAndDegradedNamingTheField) {
  DeclaredPool d = ReadAgentPool(Resource({{"auto_scaler", {{"max_agents", -1}, {"backend", {{"local", json::object()}}}}}}),
                                 Env());
  ASSERT_FALSE(d.error.empty());
  json st = AgentPoolStatus(d, nullptr, json(), kT0);
  EXPECT_EQ(Cond(st, "Ready")["status"], "False");
  EXPECT_EQ(Cond(st, "Ready")["reason"], "InvalidSpec");
  EXPECT_EQ(Cond(st, "Degraded")["reason"], "InvalidSpec");
  EXPECT_NE(st["lastError"].get<std::string>().find("spec.auto_scaler.max_agents"), std::string::npos) << st.dump();
  EXPECT_EQ(st["workers"]["idle"], 0);
}

}  // namespace
}  // namespace tidepool::server
