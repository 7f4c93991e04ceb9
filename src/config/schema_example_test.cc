// config.md's full schema example (as a complete file) and its built-in default load.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/config.h"
#include "config/features.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using testing::Env;
using testing::ErrorStrings;
using testing::Fixture;
using std::chrono::minutes;
using std::chrono::seconds;

class SchemaExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    result_ = LoadConfigPath(Fixture("schema_example.yaml"), Env());
    ASSERT_THAT(ErrorStrings(result_), IsEmpty());
    ASSERT_TRUE(result_.config);
  }
  const Config& config() const { return *result_.config; }
  LoadResult result_;
};

TEST_F(SchemaExampleTest, Server) {
  const ServerConfig& s = config().server;
  EXPECT_EQ(s.listen, "127.0.0.1:7700");
  EXPECT_EQ(s.metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(s.advertise, "10.0.0.5:7700");
  EXPECT_EQ(s.data_dir, "/var/lib/tidepool");
  EXPECT_EQ(s.db, "sqlite:/var/lib/tidepool/tidepool.db");
  ASSERT_TRUE(s.tls);
  EXPECT_EQ(s.tls->client_ca, "/etc/tidepool/ca.pem");
  EXPECT_EQ(s.users_file, "/etc/tidepool/users.yaml");
}

TEST_F(SchemaExampleTest, PoolFields) {
  ASSERT_EQ(config().pools.size(), 2u);
  const PoolConfig& p = config().pools[0];
  EXPECT_EQ(p.name, "gpu-a100");
  EXPECT_EQ(p.description, "8x A100");  // the pool-level one wins over metadata's
  EXPECT_FALSE(p.is_default);
  EXPECT_THAT(p.selectors, ElementsAre("gpu", "train"));
  EXPECT_TRUE(p.accepts_interactive);
  EXPECT_TRUE(p.accepts_batch);
  EXPECT_EQ(p.labels.at("zone"), "us-west-2a");
  EXPECT_EQ(p.pos.line, 13);
  EXPECT_EQ(p.pos.column, 5);
}

TEST_F(SchemaExampleTest, AutoScaler) {
  const AutoscalerConfig& a = *config().pools[0].auto_scaler;
  EXPECT_EQ(a.backend.type, "local");
  EXPECT_EQ(a.max_agents, 20);
  EXPECT_EQ(a.idle_decay, minutes(5));
  EXPECT_EQ(a.sync_loop_interval, seconds(60));
  EXPECT_EQ(a.kill_unknown_after, minutes(10));
  EXPECT_EQ(a.register_timeout, minutes(10));
  EXPECT_EQ(a.initial_delay, seconds(0));
  EXPECT_EQ(a.scale_up_error_retry_delay, seconds(60));
  EXPECT_EQ(a.allocation_error_reset_after, seconds(90));
  EXPECT_EQ(a.mode, PoolMode::kStandard);
  EXPECT_EQ(a.max_concurrent_creates, 10);
  EXPECT_DOUBLE_EQ(a.create_rate_per_second, 2.0);

  ASSERT_EQ(a.schedule.size(), 1u);
  const ScheduleWindow& w = a.schedule[0];
  EXPECT_THAT(w.days, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(w.start_minute, 8 * 60);
  EXPECT_EQ(w.end_minute, 19 * 60);
  EXPECT_EQ(w.tz, "America/Los_Angeles");
  EXPECT_EQ(w.min_agents, 2);
  EXPECT_EQ(w.min_idle_agents, 4);
  EXPECT_EQ(w.max_agents, 40);

  ASSERT_EQ(a.consolidate_windows.size(), 1u);
  EXPECT_THAT(a.consolidate_windows[0].days, ElementsAre(0, 6));
  EXPECT_EQ(a.consolidate_windows[0].end_minute, 24 * 60);

  ASSERT_TRUE(a.utilization);
  EXPECT_EQ(a.utilization->metric, "cpu");
  EXPECT_EQ(a.utilization->scale_down_for, minutes(15));
  EXPECT_EQ(a.utilization->abort_after, minutes(15));
}

TEST_F(SchemaExampleTest, FixedPool) {
  const PoolConfig& p = config().pools[1];
  ASSERT_TRUE(p.fixed);
  EXPECT_FALSE(p.auto_scaler);
  EXPECT_EQ(p.fixed->count, 4);
  EXPECT_EQ(p.fixed->backend.type, "ssh");
  EXPECT_EQ(p.fixed->backend.fields["port"], 22);  // default
  EXPECT_EQ(p.backend(), &p.fixed->backend);
}

TEST_F(SchemaExampleTest, EveryInactiveFeatureIsReported) {
  // Each field of the example with the feature it belongs to: reported iff that feature is not
  // active yet (features.cc is the one table that says so).
  const std::vector<std::pair<std::string, std::string>> field_feature = {
      {":server.metrics_listen", "metrics_listen"},
      {":server.tls", "tls"},
      {":server.auth", "auth"},
      {"gpu-a100:selectors", "selectors"},
      {"gpu-a100:selector_priority", "selectors"},
      {"gpu-a100:kinds", "kinds"},
      {"gpu-a100:labels", "labels"},
      {"gpu-a100:auto_scaler.sync_loop_interval", "drift_sync"},
      {"gpu-a100:auto_scaler.kill_unknown_after", "drift_sync"},
      {"gpu-a100:auto_scaler.register_timeout", "drift_sync"},
      {"gpu-a100:auto_scaler.initial_delay", "drift_sync"},
      {"gpu-a100:auto_scaler.scale_up_error_retry_delay", "error_backoff"},
      {"gpu-a100:auto_scaler.allocation_error_reset_after", "error_backoff"},
      {"gpu-a100:auto_scaler.max_concurrent_creates", "create_limits"},
      {"gpu-a100:auto_scaler.create_rate", "create_limits"},
      {"gpu-a100:auto_scaler.schedule", "schedule"},
      {"gpu-a100:auto_scaler.scale_in", "scale_in"},
      {"gpu-a100:auto_scaler.utilization", "utilization"},
      {"fixed-ssh:fixed", "fixed"},
      {"fixed-ssh:fixed.backend.ssh", "backend.ssh"},
  };
  std::vector<std::string> expected;
  for (const auto& [field, feature] : field_feature) {
    ASSERT_NE(FindFeature(feature), nullptr) << feature;
    if (!IsFeatureActive(feature)) expected.push_back(field);
  }
  std::vector<std::string> fields;
  for (const InactiveField& f : config().inactive) fields.push_back(f.pool + ":" + f.field);
  EXPECT_THAT(fields, ::testing::UnorderedElementsAreArray(expected));
}

TEST_F(SchemaExampleTest, InactiveFieldsCarryPositionAndFeature) {
  const InactiveField* schedule = nullptr;
  for (const InactiveField& f : config().inactive) {
    if (f.field == "auto_scaler.schedule") schedule = &f;
  }
  ASSERT_NE(schedule, nullptr);
  EXPECT_EQ(schedule->pos.line, 38);
  EXPECT_EQ(schedule->pos.column, 7);
  EXPECT_EQ(schedule->feature, "time-window pre-scaling");
  EXPECT_THAT(Summarize(config()),
              HasSubstr("schema_example.yaml:38:7: pool gpu-a100: auto_scaler.schedule "
                        "(time-window pre-scaling)"));
}

TEST(BuiltinDefaultYaml, MatchesDefaultConfigExceptMaxIdle) {
  LoadResult r = LoadConfigPath(Fixture("builtin_default.yaml"), Env());
  ASSERT_TRUE(r.config) << ::testing::PrintToString(ErrorStrings(r));
  Config d = DefaultConfig(8);
  const PoolConfig& a = r.config->pools[0];
  const PoolConfig& b = d.pools[0];
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.is_default, b.is_default);
  EXPECT_EQ(a.auto_scaler->max_agents, b.auto_scaler->max_agents);
  EXPECT_EQ(a.auto_scaler->idle_decay, b.auto_scaler->idle_decay);
  EXPECT_EQ(a.auto_scaler->backend.fields, b.auto_scaler->backend.fields);
  EXPECT_EQ(a.auto_scaler->backend.Fingerprint(), b.auto_scaler->backend.Fingerprint());
  EXPECT_TRUE(r.config->inactive.empty());
}

}  // namespace
}  // namespace tidepool::config
