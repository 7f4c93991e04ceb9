// Expansion, value checks, backends' redaction and fingerprint, the built-in default, the
// summary, and the feature table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/checks.h"
#include "config/config.h"
#include "config/expand.h"
#include "config/features.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::Env;
using testing::ErrorStrings;
using testing::Load;

TEST(ExpandEnv, Forms) {
  EnvLookup env = Env({{"A", "1"}, {"EMPTY", ""}});
  EXPECT_EQ(*ExpandEnv("x${A}y", env), "x1y");
  EXPECT_EQ(*ExpandEnv("${B:-dflt}", env), "dflt");
  EXPECT_EQ(*ExpandEnv("${EMPTY:-dflt}", env), "dflt");
  EXPECT_EQ(*ExpandEnv("${EMPTY}", env), "");
  EXPECT_EQ(*ExpandEnv("${B:-}", env), "");
  EXPECT_EQ(*ExpandEnv("$A $ {A} $$ 100$", env), "$A $ {A} $$ 100$");  // `$` without `{`
  EXPECT_EQ(*ExpandEnv("${A:-x}${A}", env), "11");
}

TEST(ExpandEnv, Errors) {
  EnvLookup env = Env();
  EXPECT_EQ(ExpandEnv("${NOPE}", env).status().message(),
            "environment variable NOPE is not set (use ${NOPE:-default} to give a default)");
  EXPECT_THAT(ExpandEnv("${X}${Y}", env).status().message(),
              HasSubstr("environment variables X, Y are not set"));
  EXPECT_THAT(ExpandEnv("${1X}", env).status().message(), HasSubstr("invalid variable name"));
  EXPECT_THAT(ExpandEnv("${X", env).status().message(), HasSubstr("unterminated"));
  EXPECT_EQ(*ExpandEnv("${TOKEN}", env, "TOKEN"), "");
}

TEST(Checks, PoolNames) {
  EXPECT_TRUE(CheckPoolName("a").ok());
  EXPECT_TRUE(CheckPoolName("gpu-a100").ok());
  EXPECT_FALSE(CheckPoolName("").ok());
  EXPECT_FALSE(CheckPoolName("-a").ok());
  EXPECT_FALSE(CheckPoolName("a.b").ok());
  EXPECT_FALSE(CheckPoolName("Gpu").ok());
}

TEST(Checks, DaysAndHours) {
  EXPECT_THAT(*ParseDays("Mon-Fri"), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(*ParseDays("sat-sun"), ElementsAre(6, 0));
  EXPECT_THAT(*ParseDays("weekends"), ElementsAre(0, 6));
  EXPECT_THAT(*ParseDays("wed"), ElementsAre(3));
  EXPECT_FALSE(ParseDays("mon-").ok());
  EXPECT_FALSE(ParseDays("monday").ok());
  EXPECT_EQ(*ParseHours("00:00-24:00"), std::make_pair(0, 1440));
  EXPECT_EQ(*ParseHours("08:30-09:15"), std::make_pair(510, 555));
  for (const char* bad : {"8:00-9:00", "08:00", "08:60-09:00", "24:00-24:00", "10:00-10:00",
                          "08:00-25:00", "aa:bb-cc:dd"}) {
    EXPECT_FALSE(ParseHours(bad).ok()) << bad;
  }
}

TEST(Checks, ZonesAddressesUrlsAndSlurm) {
  EXPECT_TRUE(CheckTimeZone("UTC").ok());
  EXPECT_TRUE(CheckTimeZone("Europe/Berlin").ok());
  EXPECT_FALSE(CheckTimeZone("../etc/passwd").ok());
  EXPECT_FALSE(CheckTimeZone("Europe").ok());  // a directory, not a zone
  EXPECT_TRUE(CheckHostPort("0.0.0.0:0").ok());
  EXPECT_TRUE(CheckHostPort("[::1]:7700").ok());
  EXPECT_FALSE(CheckHostPort("::1:7700").ok());
  EXPECT_FALSE(CheckHostPort("host:99999").ok());
  EXPECT_TRUE(CheckDbUrl("postgres://u@h/db").ok());
  EXPECT_FALSE(CheckDbUrl("sqlite:").ok());
  EXPECT_THAT(CheckDbUrl("mysql://u:pw@h").message(), Not(HasSubstr("pw")));
}

BackendConfig LoadBackend(const std::string& backend_yaml) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: " +
                      backend_yaml + "\n");
  EXPECT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  return r.config ? r.config->pools[0].auto_scaler->backend : BackendConfig{};
}

TEST(Backend, RedactedHidesEverySecretAndOnlySecrets) {
  BackendConfig b = LoadBackend(
      "{ digitalocean_droplet: { region: atl1, api_token: do-xyz, "
      "tailscale_config: { server: https://ts, pre_auth_key: tskey-abc } } }");
  EXPECT_THAT(b.secret_paths, ElementsAre("api_token", "tailscale_config.pre_auth_key"));
  nlohmann::json r = b.Redacted();
  EXPECT_EQ(r["api_token"], "<redacted>");
  EXPECT_EQ(r["tailscale_config"]["pre_auth_key"], "<redacted>");
  EXPECT_EQ(r["tailscale_config"]["server"], "https://ts");
  EXPECT_EQ(r["region"], "atl1");
  EXPECT_EQ(b.fields["api_token"], "do-xyz");  // the real value stays usable
}

TEST(Backend, EmptySecretIsShownAsEmpty) {
  BackendConfig b = LoadBackend("{ mithril_spot_bid: { api_token: \"\" } }");
  EXPECT_EQ(b.Redacted()["api_token"], "");
}

TEST(SecretValues, EverySecretFieldSetAndNothingElse) {
  LoadResult r = Load(
      "server:\n  auth: { users_file: /u.yaml, metrics_token: \"${PROM_TOKEN}\" }\n"
      "agent_pools:\n"
      "  - name: a\n    auto_scaler:\n      backend: { digitalocean_droplet: { region: atl1, api_token: do-xyz,"
      " tailscale_config: { server: https://ts, pre_auth_key: tskey-abc } } }\n"
      "  - name: b\n    auto_scaler:\n      backend: { mithril_spot_bid: { api_token: \"\" } }\n"
      "  - name: c\n",
      Env({{"PROM_TOKEN", "prometheus-scrape-0123"}}));
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  EXPECT_EQ(r.config->server.metrics_token, "prometheus-scrape-0123");
  EXPECT_THAT(SecretValues(*r.config), ElementsAre("prometheus-scrape-0123", "do-xyz", "tskey-abc"));
  EXPECT_THAT(Summarize(*r.config), Not(HasSubstr("prometheus-scrape-0123")));
}

TEST(SecretValues, AShortMetricsTokenIsRefusedWithoutEchoingIt) {
  LoadResult r = Load("server:\n  auth: { users_file: /u.yaml, metrics_token: short-tok }\n");
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].ToString(), HasSubstr("server.auth.metrics_token: use at least 16 characters"));
  EXPECT_THAT(r.errors[0].ToString(), Not(HasSubstr("short-tok")));
}

TEST(Backend, FingerprintFollowsTheTemplate) {
  BackendConfig a = LoadBackend("{ aws_launch_template: { region: us-west-2, ami_id: ami-1 } }");
  BackendConfig same = LoadBackend("{ awsLaunchTemplate: { amiId: ami-1, region: us-west-2 } }");
  BackendConfig other = LoadBackend("{ aws_launch_template: { region: us-west-2, ami_id: ami-2 } }");
  BackendConfig gce = LoadBackend("{ gce_instance_group: { zone: z } }");
  EXPECT_EQ(a.Fingerprint(), same.Fingerprint());
  EXPECT_NE(a.Fingerprint(), other.Fingerprint());
  EXPECT_NE(a.Fingerprint(), gce.Fingerprint());
  EXPECT_EQ(a.Fingerprint().size(), 16u);
  BackendConfig nested = a;
  nested.fields["agent_config"]["sandbox_config"]["max_time"] = 1000;
  EXPECT_NE(a.Fingerprint(), nested.Fingerprint());
}

TEST(DefaultConfig, OneLocalDefaultPool) {
  Config c = DefaultConfig(6);
  EXPECT_EQ(c.source, "<built-in default>");
  ASSERT_EQ(c.pools.size(), 1u);
  const PoolConfig& p = c.pools[0];
  EXPECT_EQ(p.name, "local");
  EXPECT_TRUE(p.is_default);
  EXPECT_EQ(c.DefaultPool(), &p);
  ASSERT_TRUE(p.auto_scaler);
  const AutoscalerConfig& a = *p.auto_scaler;
  EXPECT_EQ(a.backend.type, "local");
  EXPECT_EQ(a.max_agents, 6);
  EXPECT_EQ(a.min_agents, 0);
  EXPECT_EQ(a.min_idle_agents, 0);
  EXPECT_EQ(a.max_idle_agents, 6);
  EXPECT_EQ(a.idle_decay, std::chrono::seconds(60));
  EXPECT_TRUE(c.inactive.empty());
  EXPECT_EQ(DefaultConfig(0).pools[0].auto_scaler->max_agents, 1);
}

TEST(Summarize, PoolsThenInactiveFields) {
  LoadResult r = Load(R"(server:
  db: "postgresql://admin:pw-123@db/tidepool"
agent_pools:
  - name: gpu
    default: true
    selectors: [train]
    labels: { zone: a }
    auto_scaler:
      backend: { mithril_spot_bid: { api_token: mt-SECRET } }
      max_agents: 4
      min_idle_agents: 1
      idle_decay: 90s
  - name: lab
  - name: fixed
    fixed: { backend: { local: {} }, count: 3 }
)");
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  std::string s = Summarize(*r.config);
  EXPECT_EQ(s,
            "t.yaml: 3 pools\n"
            "server: db=postgresql\n"
            "  gpu  backend=mithril_spot_bid  agents=0..4  idle=1..0  slots=1  idle_decay=1m30s"
            "  default  selectors=train\n"
            "  lab  static\n"
            "  fixed  fixed backend=local  count=3\n"
            "not yet active:\n"
            "  t.yaml:2:3: server.db (PostgreSQL store)\n"
            "  t.yaml:7:5: pool gpu: labels (resource-group labels)\n"
            "  t.yaml:9:18: pool gpu: auto_scaler.backend.mithril_spot_bid "
            "(mithril_spot_bid backend)\n");
  EXPECT_THAT(s, Not(HasSubstr("SECRET")));
  EXPECT_THAT(s, Not(HasSubstr("pw-123")));
}

TEST(Summarize, DefaultConfig) {
  EXPECT_EQ(Summarize(DefaultConfig(2)),
            "<built-in default>: 1 pool\n"
            "  local  backend=local  agents=0..2  idle=0..2  slots=1  idle_decay=1m  default\n");
}

TEST(Features, Table) {
  EXPECT_TRUE(IsFeatureActive("backend.local"));
  EXPECT_FALSE(IsFeatureActive("schedule"));
  EXPECT_FALSE(IsFeatureActive("no-such-feature"));
  for (const char* id : {"metrics_listen", "tls", "auth", "postgres", "selectors", "kinds",
                         "labels", "fixed", "batch_mode", "schedule", "scale_in", "utilization",
                         "drift_sync", "error_backoff", "create_limits", "backend.command",
                         "backend.ssh", "backend.slurm", "backend.kubernetes",
                         "backend.aws_launch_template", "backend.gce_instance_group",
                         "backend.nebius_launch_template", "backend.mithril_spot_bid",
                         "backend.digitalocean_droplet"}) {
    ASSERT_NE(FindFeature(id), nullptr) << id;
  }
  EXPECT_STREQ(FindFeature("create_limits")->description, "create rate limits");
}

TEST(Features, BatchModeIsReportedIffInactive) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
                      "      mode: batch\n");
  ASSERT_TRUE(r.config);
  if (IsFeatureActive("batch_mode")) {
    EXPECT_TRUE(r.config->inactive.empty());
    return;
  }
  ASSERT_EQ(r.config->inactive.size(), 1u);
  const InactiveField& f = r.config->inactive[0];
  EXPECT_EQ(f.pool, "a");
  EXPECT_EQ(f.field, "auto_scaler.mode");
  EXPECT_EQ(f.feature, "batch mode");
  EXPECT_EQ(f.pos.line, 5);
  EXPECT_EQ(f.pos.column, 7);
}

TEST(Features, ScheduleIsReportedWithItsPosition) {
  // `schedule` (time-window pre-scaling) is not built yet.
  ASSERT_FALSE(IsFeatureActive("schedule"));
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: { local: {} }\n"
                      "      max_agents: 2\n      schedule:\n        - { days: [mon-fri], hours: \"08:00-19:00\", min_agents: 1 }\n");
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  ASSERT_EQ(r.config->inactive.size(), 1u);
  EXPECT_EQ(r.config->inactive[0].field, "auto_scaler.schedule");
  EXPECT_EQ(r.config->inactive[0].feature, "time-window pre-scaling");
  EXPECT_EQ(r.config->inactive[0].pos.line, 6);
}

}  // namespace
}  // namespace tidepool::config
