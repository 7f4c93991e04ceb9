// Loading rules that are not errors: spellings, durations, quoted numbers, defaults, ${VAR},
// directories.
#include <unistd.h>

#include <cstdlib>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/config.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::Env;
using testing::ErrorStrings;
using testing::Fixture;
using testing::Load;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// Loads, asserting no errors; the first pool's autoscaler.
AutoscalerConfig LoadAutoscaler(const std::string& yaml, const EnvLookup& env = Env()) {
  LoadResult r = Load(yaml, env);
  EXPECT_THAT(ErrorStrings(r), IsEmpty());
  if (!r.config || r.config->pools.empty() || !r.config->pools[0].auto_scaler) return {};
  return *r.config->pools[0].auto_scaler;
}

TEST(Loader, LowerCamelCaseEverywhere) {
  LoadResult r = Load(R"(agentPools:
  - name: gpu
    selectorPriority: 3
    autoScaler:
      backend:
        command: { batchStart: "./batch.sh $1 $2", start: ./up.sh }
      maxAgents: 7
      minIdleAgents: 2
      maxIdleAgents: 3
      defaultSlotsPerAgent: 4
      idleDecay: 90s
      scaleUpErrorRetryDelay: 2m
      metadata: { description: camel }
)");
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const PoolConfig& p = r.config->pools[0];
  EXPECT_EQ(p.selector_priority, 3);
  EXPECT_EQ(p.description, "camel");
  const AutoscalerConfig& a = *p.auto_scaler;
  EXPECT_EQ(a.max_agents, 7);
  EXPECT_EQ(a.min_idle_agents, 2);
  EXPECT_EQ(a.max_idle_agents, 3);
  EXPECT_EQ(a.default_slots_per_agent, 4);
  EXPECT_EQ(a.idle_decay, seconds(90));
  EXPECT_EQ(a.scale_up_error_retry_delay, minutes(2));
  // Stored in snake_case.
  EXPECT_EQ(a.backend.fields["batch_start"], "./batch.sh $1 $2");
  EXPECT_FALSE(a.backend.fields.contains("batchStart"));
}

TEST(Loader, CamelCaseInsideVeldaAgentConfig) {
  AutoscalerConfig a = LoadAutoscaler(R"(agent_pools:
  - name: aws
    auto_scaler:
      backend:
        awsLaunchTemplate:
          useInstanceIdAsName: true
          maxInstanceLifetime: 24h
          agentConfig:
            sandboxConfig: { maxTime: 1h, hostMounts: [{ source: /a, target: /b, readWrite: true }] }
            daemonConfig: { network: { networkMode: NETWORK_MODE_BRIDGE, privateCidrRange: 10.0.0.0/24 } }
)");
  const nlohmann::json& f = a.backend.fields;
  EXPECT_EQ(f["use_instance_id_as_name"], true);
  EXPECT_EQ(f["max_instance_lifetime"], 24 * 3600 * 1000);
  EXPECT_EQ(f["agent_config"]["sandbox_config"]["max_time"], 3600 * 1000);
  EXPECT_EQ(f["agent_config"]["sandbox_config"]["host_mounts"][0]["read_write"], true);
  EXPECT_EQ(f["agent_config"]["daemon_config"]["network"]["network_mode"], "NETWORK_MODE_BRIDGE");
}

TEST(Loader, DurationsInProtobufAndHumanStyle) {
  AutoscalerConfig a = LoadAutoscaler(R"(agent_pools:
  - name: a
    auto_scaler:
      backend: { command: { timeout: 250ms } }
      idle_decay: "300s"
      sync_loop_interval: "0.5s"
      kill_unknown_after: 1h30m
      register_timeout: 12h
      initial_delay: 0
)");
  EXPECT_EQ(a.idle_decay, minutes(5));
  EXPECT_EQ(a.sync_loop_interval, milliseconds(500));
  EXPECT_EQ(a.kill_unknown_after, minutes(90));
  EXPECT_EQ(a.register_timeout, hours(12));
  EXPECT_EQ(a.initial_delay, milliseconds(0));
  EXPECT_EQ(a.backend.fields["timeout"], 250);  // integer milliseconds in fields
}

TEST(Loader, QuotedIntegersAreAccepted) {
  AutoscalerConfig a = LoadAutoscaler(R"(agent_pools:
  - name: a
    auto_scaler:
      backend: { nebius_launch_template: { boot_disk_size_gb: "200" } }
      max_agents: "12"
      min_agents: '1'
)");
  EXPECT_EQ(a.max_agents, 12);
  EXPECT_EQ(a.min_agents, 1);
  EXPECT_EQ(a.backend.fields["boot_disk_size_gb"], 200);
}

TEST(Loader, Defaults) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
                      "  - name: s\n");
  ASSERT_TRUE(r.config);
  const PoolConfig& p = r.config->pools[0];
  EXPECT_FALSE(p.is_default);
  EXPECT_TRUE(p.accepts_interactive);
  EXPECT_TRUE(p.accepts_batch);
  const AutoscalerConfig& a = *p.auto_scaler;
  EXPECT_EQ(a.max_agents, 0);
  EXPECT_EQ(a.min_agents, 0);
  EXPECT_EQ(a.min_idle_agents, 0);
  EXPECT_EQ(a.max_idle_agents, 0);
  EXPECT_EQ(a.default_slots_per_agent, 1);
  EXPECT_EQ(a.idle_decay, seconds(0));
  EXPECT_EQ(a.sync_loop_interval, seconds(60));
  EXPECT_EQ(a.kill_unknown_after, seconds(0));
  EXPECT_EQ(a.register_timeout, minutes(10));
  EXPECT_EQ(a.scale_up_error_retry_delay, seconds(60));
  EXPECT_EQ(a.allocation_error_reset_after, seconds(90));
  EXPECT_EQ(a.mode, PoolMode::kStandard);
  EXPECT_EQ(a.max_concurrent_creates, 10);
  EXPECT_DOUBLE_EQ(a.create_rate_per_second, 2.0);
  EXPECT_EQ(a.backend.fields, nlohmann::json({{"boot_delay", 0}, {"api_delay", 0}}));
  EXPECT_TRUE(r.config->pools[1].is_static());
  EXPECT_EQ(r.config->pools[1].backend(), nullptr);
  EXPECT_TRUE(r.config->inactive.empty());  // nothing beyond what is built
}

TEST(Loader, ZeroSlotsMeansOneAsInVelda) {
  AutoscalerConfig a = LoadAutoscaler(
      "agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
      "      default_slots_per_agent: 0\n");
  EXPECT_EQ(a.default_slots_per_agent, 1);
}

TEST(Loader, AllocationResetFollowsTheRetryDelayAsInVelda) {
  AutoscalerConfig a = LoadAutoscaler(
      "agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
      "      scale_up_error_retry_delay: 2m\n");
  EXPECT_EQ(a.allocation_error_reset_after, seconds(150));
}

TEST(Loader, ModesAndRates) {
  for (const auto& [text, mode] : {std::pair{"MODE_BATCH", PoolMode::kBatch},
                                   {"batch", PoolMode::kBatch},
                                   {"2", PoolMode::kBatch},
                                   {"MODE_STANDARD", PoolMode::kStandard},
                                   {"standard", PoolMode::kStandard},
                                   {"MODE_UNSPECIFIED", PoolMode::kStandard}}) {
    SCOPED_TRACE(text);
    AutoscalerConfig a = LoadAutoscaler(
        std::string("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
                    "      mode: ") + text + "\n");
    EXPECT_EQ(a.mode, mode);
  }
  for (const auto& [text, rate] : {std::pair{"\"2/s\"", 2.0},
                                   {"\"30/m\"", 0.5},
                                   {"100/h", 100.0 / 3600},
                                   {"5", 5.0},
                                   {"0.25", 0.25}}) {
    SCOPED_TRACE(text);
    AutoscalerConfig a = LoadAutoscaler(
        std::string("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
                    "      create_rate: ") + text + "\n");
    EXPECT_DOUBLE_EQ(a.create_rate_per_second, rate);
  }
}

TEST(Loader, KindsAndSchedules) {
  LoadResult r = Load(R"(agent_pools:
  - name: a
    kinds: [batch]
    auto_scaler:
      backend: { local: {} }
      max_agents: 10
      schedule:
        - { days: [weekends, fri-mon], hours: "22:00-24:00", tz: UTC, max_agents: 2 }
        - { hours: "00:00-06:00" }
)");
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const PoolConfig& p = r.config->pools[0];
  EXPECT_FALSE(p.accepts_interactive);
  EXPECT_TRUE(p.accepts_batch);
  const auto& s = p.auto_scaler->schedule;
  ASSERT_EQ(s.size(), 2u);
  EXPECT_THAT(s[0].days, ElementsAre(0, 1, 5, 6));
  EXPECT_EQ(s[0].start_minute, 22 * 60);
  EXPECT_EQ(s[0].end_minute, 24 * 60);
  EXPECT_EQ(s[0].max_agents, 2);
  EXPECT_FALSE(s[0].min_agents);
  EXPECT_TRUE(s[1].days.empty());  // every day
  EXPECT_EQ(s[1].pos.line, 9);
}

TEST(Loader, EnvExpansion) {
  LoadResult r = Load(R"(server:
  data_dir: "${ROOT}/state"
  db: "sqlite:${DB_DIR:-/var/db}/t.db"
  listen: "${HOST:-127.0.0.1}:${PORT}"
agent_pools:
  - name: a
    description: "costs $5 a day, ${CURRENCY:-USD}"
    auto_scaler:
      backend:
        command:
          start: "up ${WORKER_NAME} ${ROOT}"
          stop: "down ${WORKER_NAME:-x}"
          list: "ls $1"
          batch_start: "batch ${ROOT}"
      max_agents: ${MAX}
)",
                      Env({{"ROOT", "/srv"}, {"PORT", "7800"}, {"MAX", "9"}, {"HOST", ""}}));
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const Config& c = *r.config;
  EXPECT_EQ(c.server.data_dir, "/srv/state");
  EXPECT_EQ(c.server.db, "sqlite:/var/db/t.db");
  EXPECT_EQ(c.server.listen, "127.0.0.1:7800");  // set but empty takes the default, as in sh
  EXPECT_EQ(c.pools[0].description, "costs $5 a day, USD");
  const AutoscalerConfig& a = *c.pools[0].auto_scaler;
  EXPECT_EQ(a.max_agents, 9);
  EXPECT_EQ(a.backend.fields["start"], "up ${WORKER_NAME} ${ROOT}");
  EXPECT_EQ(a.backend.fields["stop"], "down ${WORKER_NAME:-x}");
  EXPECT_EQ(a.backend.fields["batch_start"], "batch ${ROOT}");
}

TEST(Loader, EnvExpansionInFreeFormPodTemplate) {
  AutoscalerConfig a = LoadAutoscaler(R"(agent_pools:
  - name: k
    auto_scaler:
      backend:
        kubernetes:
          namespace: ${NS}
          pod_template:
            apiVersion: v1
            kind: Pod
            spec:
              containers:
                - name: agent
                  image: "repo/agent:${TAG}"
                  ports: [{ containerPort: 8080 }]
                  tty: true
)",
                                      Env({{"NS", "ml"}, {"TAG", "1.2"}}));
  const nlohmann::json& f = a.backend.fields;
  EXPECT_EQ(f["namespace"], "ml");
  const nlohmann::json& c = f["pod_template"]["spec"]["containers"][0];
  EXPECT_EQ(c["image"], "repo/agent:1.2");
  EXPECT_EQ(c["ports"][0]["containerPort"], 8080);  // manifest keys are kept as written
  EXPECT_EQ(c["tty"], true);
}

TEST(Loader, UnsetVariableInAFreeFormTemplateIsAnError) {
  LoadResult r = Load(R"(agent_pools:
  - name: k
    auto_scaler:
      backend: { kubernetes: { pod_template: { metadata: { name: "${POD}" }, spec: { containers: [{ image: i }] } } } }
)");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].pos.line, 4);
  EXPECT_EQ(r.errors[0].pos.column, 66);
  EXPECT_THAT(r.errors[0].message, HasSubstr("POD is not set"));
}

TEST(Loader, EmptyFileIsAConfigWithoutPools) {
  LoadResult r = Load("# nothing yet\n");
  ASSERT_TRUE(r.config);
  EXPECT_TRUE(r.config->pools.empty());
  EXPECT_EQ(r.config->source, "t.yaml");
}

TEST(Loader, DirectoryIsMergedInNameOrder) {
  std::string dir = Fixture("dir_ok");
  LoadResult r = LoadConfigPath(dir, Env());
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const Config& c = *r.config;
  EXPECT_EQ(c.source, dir);
  EXPECT_EQ(c.server.listen, "127.0.0.1:7700");
  ASSERT_EQ(c.pools.size(), 3u);
  EXPECT_EQ(c.pools[0].name, "cpu");
  EXPECT_EQ(c.pools[1].name, "lab");
  EXPECT_EQ(c.pools[2].name, "lab-2");
  EXPECT_EQ(c.pools[1].pos.file, dir + "/30-static.yaml");
  EXPECT_EQ(c.DefaultPool(), &c.pools[0]);
  EXPECT_EQ(c.FindPool("lab-2"), &c.pools[2]);
  EXPECT_EQ(c.FindPool("nope"), nullptr);
}

TEST(Loader, ServerSectionInTwoFilesIsAnError) {
  std::string dir = Fixture("dir_two_servers");
  LoadResult r = LoadConfigPath(dir, Env());
  EXPECT_FALSE(r.config);
  EXPECT_THAT(ErrorStrings(r),
              ElementsAre(dir + "/b.yaml:3:1: server: already given at " + dir +
                          "/a.yaml:1:1; give the server section in one file only"));
}

TEST(Loader, DirectoryWithoutYamlFilesIsAnError) {
  char dir[] = "/tmp/tidepool-config-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  LoadResult r = LoadConfigPath(dir, Env());
  ::rmdir(dir);
  EXPECT_FALSE(r.config);
  EXPECT_THAT(ErrorStrings(r),
              ElementsAre(std::string(dir) + ": no *.yaml files in this directory"));
}

}  // namespace
}  // namespace tidepool::config
