// Every YAML example of Velda's pool backend reference loads unchanged (config.md).
// The fixtures under tests/data/config/velda/ are verbatim copies of the reference's examples.
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/config.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::Env;
using testing::ErrorStrings;
using testing::Fixture;

LoadResult LoadExample(const std::string& name, const EnvLookup& env = Env()) {
  return LoadConfigPath(Fixture("velda/" + name + ".yaml"), env);
}

const BackendConfig& OnlyBackend(const LoadResult& r) {
  static const BackendConfig kNone;
  if (!r.config || r.config->pools.size() != 1 || !r.config->pools[0].auto_scaler) return kNone;
  return r.config->pools[0].auto_scaler->backend;
}

class VeldaExampleTest : public ::testing::TestWithParam<const char*> {};

TEST_P(VeldaExampleTest, LoadsWithoutErrorsInAnEmptyEnvironment) {
  LoadResult r = LoadExample(GetParam());
  EXPECT_THAT(ErrorStrings(r), IsEmpty());
  ASSERT_TRUE(r.config);
  ASSERT_EQ(r.config->pools.size(), 1u);
  EXPECT_EQ(OnlyBackend(r).type, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Reference, VeldaExampleTest,
                         ::testing::Values("aws_launch_template", "gce_instance_group",
                                           "nebius_launch_template", "mithril_spot_bid",
                                           "digitalocean_droplet", "command"));

TEST(VeldaExamples, Aws) {
  LoadResult r = LoadExample("aws_launch_template");
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const PoolConfig& p = r.config->pools[0];
  EXPECT_EQ(p.name, "gpu-pool-aws");
  EXPECT_EQ(p.auto_scaler->max_agents, 10);
  EXPECT_EQ(p.auto_scaler->min_idle_agents, 1);
  const nlohmann::json& f = p.auto_scaler->backend.fields;
  EXPECT_EQ(f["region"], "us-west-2");
  EXPECT_EQ(f["security_group_ids"], nlohmann::json::array({"sg-xyz789"}));
  EXPECT_EQ(f["tags"]["ManagedBy"], "velda");
  EXPECT_EQ(f["agent_config"]["sandbox_config"]["max_time"], 12 * 3600 * 1000);
}

TEST(VeldaExamples, Gce) {
  LoadResult r = LoadExample("gce_instance_group");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(OnlyBackend(r).fields["instance_group"], "velda-gpu-workers");
  EXPECT_EQ(r.config->pools[0].auto_scaler->min_idle_agents, 2);
}

TEST(VeldaExamples, NebiusTailscaleKeyIsASecret) {
  LoadResult r = LoadExample("nebius_launch_template");
  ASSERT_TRUE(r.config);
  const BackendConfig& b = OnlyBackend(r);
  EXPECT_EQ(b.fields["boot_disk_size_gb"], 100);
  EXPECT_EQ(b.fields["preemptible"], false);
  EXPECT_EQ(r.config->pools[0].auto_scaler->max_idle_agents, 1);
  EXPECT_THAT(b.secret_paths, ElementsAre("tailscale_config.pre_auth_key"));
  EXPECT_EQ(b.Redacted()["tailscale_config"]["pre_auth_key"], "<redacted>");
  EXPECT_THAT(b.Redacted().dump(), Not(HasSubstr("tskey-auth")));
  EXPECT_THAT(Summarize(*r.config), Not(HasSubstr("tskey-auth")));
}

TEST(VeldaExamples, MithrilTokenComesFromTheEnvironmentAndIsRedacted) {
  LoadResult r = LoadExample("mithril_spot_bid", Env({{"MITHRIL_API_TOKEN", "mt-secret-42"}}));
  ASSERT_TRUE(r.config);
  const BackendConfig& b = OnlyBackend(r);
  EXPECT_EQ(b.fields["api_token"], "mt-secret-42");
  EXPECT_DOUBLE_EQ(b.fields["limit_price"].get<double>(), 4.5);
  EXPECT_EQ(b.fields["memory_gb"], 640);
  EXPECT_THAT(b.secret_paths, ElementsAre("api_token"));
  EXPECT_EQ(b.Redacted()["api_token"], "<redacted>");
  EXPECT_THAT(b.Redacted().dump(), Not(HasSubstr("mt-secret-42")));
  EXPECT_THAT(Summarize(*r.config), Not(HasSubstr("mt-secret-42")));
}

TEST(VeldaExamples, UnsetProviderTokenLeavesTheFieldEmptyForTheBackendsFallback) {
  LoadResult r = LoadExample("mithril_spot_bid");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(OnlyBackend(r).fields["api_token"], "");
}

TEST(VeldaExamples, DigitalOcean) {
  LoadResult r =
      LoadExample("digitalocean_droplet", Env({{"DIGITALOCEAN_API_TOKEN", "do-secret-7"}}));
  ASSERT_TRUE(r.config);
  const BackendConfig& b = OnlyBackend(r);
  EXPECT_EQ(b.fields["ssh_key_ids"], nlohmann::json::array({12345678}));
  EXPECT_EQ(b.fields["monitoring"], true);
  EXPECT_EQ(b.Redacted()["api_token"], "<redacted>");
  EXPECT_THAT(Summarize(*r.config), Not(HasSubstr("do-secret-7")));
}

TEST(VeldaExamples, CommandScriptsAreKeptAsWritten) {
  LoadResult r = LoadExample("command", Env({{"WORKER_NAME", "should-not-appear"}}));
  ASSERT_TRUE(r.config);
  const BackendConfig& b = OnlyBackend(r);
  EXPECT_EQ(b.fields["stop"], "/usr/local/bin/velda-provision-worker.sh stop ${WORKER_NAME}");
  EXPECT_EQ(b.fields["timeout"], 300000);  // Tidepool's default: 5m
  EXPECT_EQ(r.config->pools[0].auto_scaler->min_idle_agents, 2);
}

TEST(VeldaExamples, AllExamplesLoadTogetherAsADirectory) {
  LoadResult r = LoadConfigPath(Fixture("velda"), Env());
  EXPECT_THAT(ErrorStrings(r), IsEmpty());
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->pools.size(), 6u);  // fragments/ is a subdirectory: not read
}

TEST(VeldaExamples, TailscaleFragmentLoadsInsideABackend) {
  std::ifstream in(Fixture("velda/fragments/tailscale_config.yaml"));
  std::stringstream fragment;
  fragment << in.rdbuf();
  std::string yaml =
      "agent_pools:\n  - name: ts\n    auto_scaler:\n      backend:\n"
      "        digitalocean_droplet:\n";
  std::string line;
  while (std::getline(fragment, line)) yaml += "          " + line + "\n";
  LoadResult r = LoadConfigString(yaml, "ts.yaml", Env());
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  const BackendConfig& b = OnlyBackend(r);
  EXPECT_EQ(b.fields["tailscale_config"]["server"], "https://controlplane.tailscale.com");
  EXPECT_THAT(b.secret_paths, ElementsAre("tailscale_config.pre_auth_key"));
  EXPECT_THAT(b.Redacted().dump(), Not(HasSubstr("kABCDEF123")));
}

}  // namespace
}  // namespace tidepool::config
