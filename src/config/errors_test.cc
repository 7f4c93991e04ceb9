// Every kind of configuration error, with the exact FILE:LINE:COL it is reported at.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/strings.h"
#include "config/config.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::Env;
using testing::ErrorStrings;
using testing::Fixture;
using testing::Load;

// Exactly one error, at LINE:COL of t.yaml, whose message contains `text`; and no config.
void ExpectError(const std::string& yaml, int line, int col, const std::string& text,
                 const EnvLookup& env = Env()) {
  LoadResult r = Load(yaml, env);
  ASSERT_EQ(r.errors.size(), 1u) << Join(ErrorStrings(r), "\n");
  const ConfigError& e = r.errors[0];
  EXPECT_EQ(e.pos.file, "t.yaml");
  EXPECT_EQ(e.pos.line, line) << e.ToString();
  EXPECT_EQ(e.pos.column, col) << e.ToString();
  EXPECT_THAT(e.message, HasSubstr(text));
  EXPECT_FALSE(r.config);
}
#define EXPECT_CONFIG_ERROR(...)  \
  do {                            \
    SCOPED_TRACE("");             \
    ExpectError(__VA_ARGS__);     \
  } while (0)

// A one-pool file; `extra` lines go under auto_scaler (6 spaces of indent), starting on line 5.
std::string Pool(const std::string& extra) {
  return "agent_pools:\n"
         "  - name: gpu\n"
         "    auto_scaler:\n"
         "      backend: { local: {} }\n" +
         extra;
}

TEST(ConfigErrors, YamlSyntax) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: [a, b\n  - name: c\n", 3, 9,
                      "YAML syntax error: end of sequence flow not found");
}

TEST(ConfigErrors, ToStringIsFileLineColMessage) {
  LoadResult r = Load(Pool("      max_agents: -3\n"));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(),
            "t.yaml:5:19: agent_pools[0].auto_scaler.max_agents: must not be negative (got -3)");
}

TEST(ConfigErrors, UnknownFieldSuggestsTheClosestName) {
  EXPECT_CONFIG_ERROR(Pool("      max_agent: 4\n"), 5, 7,
                      "unknown field \"max_agent\" (did you mean \"max_agents\"?)");
  EXPECT_CONFIG_ERROR(Pool("      idleDelay: 5m\n"), 5, 7, "did you mean \"idle_decay\"?");
}

TEST(ConfigErrors, UnknownFieldWithoutACloseNameHasNoSuggestion) {
  LoadResult r = Load(Pool("      colour: blue\n"));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].message, "agent_pools[0].auto_scaler: unknown field \"colour\"");
}

TEST(ConfigErrors, FieldAtTheWrongLevelSuggestsWhereItBelongs) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: gpu\n    max_agents: 3\n", 3, 5,
                      "did you mean \"auto_scaler.max_agents\"?");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: gpu\n    auto_scaler:\n      backend:\n"
                      "        start: ./up.sh\n",
                      5, 9, "unknown backend \"start\"");
}

TEST(ConfigErrors, WrongTypes) {
  EXPECT_CONFIG_ERROR(Pool("      max_agents: ten\n"), 5, 19,
                      "expected an integer, got \"ten\"");
  EXPECT_CONFIG_ERROR(Pool("      max_agents: [1]\n"), 5, 19, "expected an integer, got a list");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: gpu\n    default: maybe\n", 3, 14,
                      "expected true or false, got \"maybe\"");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: gpu\n    selectors: gpu\n", 3, 16,
                      "expected a list");
  EXPECT_CONFIG_ERROR("agent_pools:\n  name: gpu\n", 2, 3, "expected a list");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: gpu\n    auto_scaler: 5\n", 3, 18,
                      "expected a mapping");
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 3000000000\n"), 5, 19, "out of range");
}

TEST(ConfigErrors, BadEnumListsTheAllowedNames) {
  EXPECT_CONFIG_ERROR(Pool("      mode: MODE_FAST\n"), 5, 13,
                      "invalid value \"MODE_FAST\"; allowed: MODE_UNSPECIFIED, MODE_STANDARD, "
                      "MODE_BATCH, standard, batch");
}

TEST(ConfigErrors, NegativeCounts) {
  EXPECT_CONFIG_ERROR(Pool("      min_idle_agents: -1\n"), 5, 24, "must not be negative");
  EXPECT_CONFIG_ERROR(Pool("      default_slots_per_agent: -2\n"), 5, 32, "must not be negative");
}

TEST(ConfigErrors, MinAgentsAboveMaxAgents) {
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 2\n      min_agents: 5\n"), 6, 19,
                      "min_agents (5) exceeds max_agents (2)");
}

TEST(ConfigErrors, ScheduleWindowMinAboveMax) {
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 10\n"
                           "      schedule:\n"
                           "        - { days: [mon], min_agents: 8, max_agents: 4 }\n"),
                      7, 38, "in this window min_agents (8) exceeds max_agents (4)");
  // The window's min against the pool's max.
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 3\n"
                           "      schedule:\n"
                           "        - min_agents: 5\n"),
                      7, 23, "min_agents (5) exceeds max_agents (3)");
}

TEST(ConfigErrors, AutoScalerAndFixedAreExclusive) {
  EXPECT_CONFIG_ERROR(Pool("    fixed: { backend: { local: {} }, count: 2 }\n"), 5, 5,
                      "auto_scaler and fixed cannot both be set");
}

TEST(ConfigErrors, BackendBlockNeedsExactlyOneBackend) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend: {}\n", 4, 16,
                      "no backend given; set one of: local, command, ssh, slurm, kubernetes, "
                      "aws_launch_template");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        local: {}\n        ssh: { hosts: [h] }\n",
                      5, 9, "several backends given (local, ssh); set exactly one");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      max_agents: 1\n", 3, 5,
                      "auto_scaler needs a backend");
}

TEST(ConfigErrors, UnknownBackendListsTheKnownOnes) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        ec2: {}\n",
                      5, 9,
                      "unknown backend \"ec2\"; known backends: local, command, ssh, slurm, "
                      "kubernetes, aws_launch_template, gce_instance_group, "
                      "nebius_launch_template, mithril_spot_bid, digitalocean_droplet");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        comand: {}\n",
                      5, 9, "(did you mean \"command\"?)");
}

TEST(ConfigErrors, AzureIsVeldasNotOurs) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        azure_vmss: { subscription_id: x }\n",
                      5, 9, "Tidepool does not support it");
}

TEST(ConfigErrors, PoolNames) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: GPU_2\n", 2, 11, "invalid pool name \"GPU_2\"");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: 9lives\n", 2, 11, "starting with a letter");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: \"\"\n", 2, 11, "invalid pool name");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a" + std::string(63, 'b') + "\n", 2, 11,
                      "1-63 lowercase letters");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - description: nameless\n", 2, 5, "a pool needs a name");
  EXPECT_TRUE(Load("agent_pools:\n  - name: a" + std::string(62, 'b') + "\n").config);
}

TEST(ConfigErrors, DuplicatePoolNames) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n  - name: b\n  - name: a\n", 4, 11,
                      "duplicate pool name \"a\" (first defined at t.yaml:2:11)");
}

TEST(ConfigErrors, MoreThanOneDefaultPool) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - { name: a, default: true }\n"
                      "  - { name: b, default: false }\n  - { name: c, default: true }\n",
                      4, 25, "more than one default pool: \"c\" and \"a\" (at t.yaml:2:25)");
}

TEST(ConfigErrors, UnsetVariableIsNamed) {
  EXPECT_CONFIG_ERROR("server:\n  data_dir: \"${STATE_ROOT}/tidepool\"\n", 2, 13,
                      "environment variable STATE_ROOT is not set");
  EXPECT_CONFIG_ERROR("server:\n  data_dir: \"${STATE_ROOT\"\n", 2, 13, "unterminated");
}

TEST(ConfigErrors, SnakeAndCamelCaseOfTheSameField) {
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 2\n      maxAgents: 3\n"), 6, 7,
                      "field \"max_agents\" is given twice, as \"max_agents\" and as "
                      "\"maxAgents\"");
  EXPECT_CONFIG_ERROR(Pool("      max_agents: 2\n      max_agents: 3\n"), 6, 7,
                      "field \"max_agents\" is given twice");
}

TEST(ConfigErrors, Durations) {
  EXPECT_CONFIG_ERROR(Pool("      idle_decay: 300\n"), 5, 19, "missing or unknown unit");
  EXPECT_CONFIG_ERROR(Pool("      idle_decay: \"5 minutes\"\n"), 5, 19, "invalid duration");
  EXPECT_CONFIG_ERROR(Pool("      idle_decay: 5x\n"), 5, 19, "missing or unknown unit");
  EXPECT_CONFIG_ERROR(Pool("      idle_decay: -5m\n"), 5, 19, "negative duration");
  EXPECT_TRUE(Load(Pool("      idle_decay: 0\n")).config);
}

TEST(ConfigErrors, Kinds) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    kinds: [interactive, gang]\n", 3, 26,
                      "invalid kind \"gang\"; allowed: interactive, batch");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    kinds: []\n", 3, 12, "kinds must name");
}

TEST(ConfigErrors, UtilizationThresholds) {
  EXPECT_CONFIG_ERROR(Pool("      utilization: { scale_up_threshold: 30, scale_down_threshold: 30 }\n"),
                      5, 68, "scale_down_threshold must be below scale_up_threshold");
  EXPECT_CONFIG_ERROR(Pool("      utilization:\n        scale_up_threshold: 120\n"), 6, 29,
                      "between 0 and 100");
  EXPECT_CONFIG_ERROR(Pool("      utilization:\n        scale_down_threshold: -1\n"), 6, 31,
                      "between 0 and 100");
  EXPECT_CONFIG_ERROR(Pool("      utilization: { metric: disk }\n"), 5, 30,
                      "allowed: cpu, gpu, memory, slots");
  EXPECT_CONFIG_ERROR(Pool("      utilization: { step: 0 }\n"), 5, 28, "step must be at least 1");
}

TEST(ConfigErrors, CreateRate) {
  EXPECT_CONFIG_ERROR(Pool("      create_rate: \"2/d\"\n"), 5, 20, "invalid rate \"2/d\"");
  EXPECT_CONFIG_ERROR(Pool("      create_rate: fast\n"), 5, 20, "invalid rate");
  EXPECT_CONFIG_ERROR(Pool("      create_rate: 0\n"), 5, 20, "must be greater than 0");
  EXPECT_CONFIG_ERROR(Pool("      create_rate: \"-1/s\"\n"), 5, 20, "must be greater than 0");
  EXPECT_CONFIG_ERROR(Pool("      max_concurrent_creates: 0\n"), 5, 31, "must be at least 1");
}

TEST(ConfigErrors, ScheduleDaysHoursAndZone) {
  EXPECT_CONFIG_ERROR(Pool("      schedule:\n        - days: [mon, funday]\n"), 6, 23,
                      "invalid day \"funday\"");
  EXPECT_CONFIG_ERROR(Pool("      schedule:\n        - hours: \"8-19\"\n"), 6, 18,
                      "invalid hours \"8-19\": use \"HH:MM-HH:MM\"");
  EXPECT_CONFIG_ERROR(Pool("      schedule:\n        - hours: \"19:00-08:00\"\n"), 6, 18,
                      "the end must be after the start");
  EXPECT_CONFIG_ERROR(Pool("      schedule:\n        - hours: \"24:00-24:00\"\n"), 6, 18,
                      "invalid hours");
  EXPECT_CONFIG_ERROR(Pool("      schedule:\n        - tz: Mars/Olympus_Mons\n"), 6, 15,
                      "unknown time zone \"Mars/Olympus_Mons\"");
  EXPECT_CONFIG_ERROR(Pool("      scale_in:\n        consolidate: { days: [someday] }\n"), 6, 31,
                      "invalid day");
}

TEST(ConfigErrors, Server) {
  EXPECT_CONFIG_ERROR("server:\n  db: mysql://x\n", 2, 7,
                      "db must be \"sqlite:PATH\" or a \"postgresql://\" URL");
  EXPECT_CONFIG_ERROR("server:\n  tls: { cert: c.pem }\n", 2, 3, "tls needs both cert and key");
  EXPECT_CONFIG_ERROR("server:\n  listen: localhost\n", 2, 11, "use HOST:PORT");
  EXPECT_CONFIG_ERROR("server:\n  grpc_address: x\n", 2, 3, "unknown field \"grpc_address\"");
}

TEST(ConfigErrors, BackendFields) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        aws_launch_template: { max_stopped_instances: -1 }\n",
                      5, 55, "must not be negative");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        aws_launch_template: { agent_config: { sandbox_config: "
                      "{ max_time: 12 } } }\n",
                      5, 76, "missing or unknown unit");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        nebius_launch_template: { boot_disk_type: HDD }\n",
                      5, 51, "allowed: NEBIUS_BOOT_DISK_TYPE_UNSPECIFIED, SSD, SSD_NRD, SSD_IO");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        ssh: { user: me }\n",
                      5, 9, "ssh needs at least one entry in hosts");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        slurm: { time_limit: \"1:xx\" }\n",
                      5, 30, "invalid Slurm time limit");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        slurm: { time_limit: \"10\", drain_before: 10m }\n",
                      5, 50, "drain_before (600s) must be shorter than time_limit (600s)");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        slurm: { sbatch_args: [\"--constraint=ib\", \"--export=NONE\"] }\n",
                      5, 31, "sbatch_args[1]: --export is set by Tidepool");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        slurm: { job_name_prefix: \"my jobs\" }\n",
                      5, 35, "job_name_prefix must be 1-200 of");
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        kubernetes: { pod_template_path: p.yaml, pod_template: {} }\n",
                      5, 50, "cannot both be set");
}

TEST(ConfigErrors, PodTemplateMustBeAMapping) {
  EXPECT_CONFIG_ERROR("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        kubernetes: { pod_template: pod.yaml }\n",
                      5, 37, "pod_template: expected a mapping, got \"pod.yaml\"");
}

// Found by fuzz_config: a pool that is a plain string used to throw out of the loader.
TEST(ConfigErrors, APoolThatIsNotAMappingIsAnErrorNotACrash) {
  LoadResult r = Load("agent_pools:\n  - nlab\n  - name: lab-2\n");
  EXPECT_THAT(ErrorStrings(r),
              ElementsAre("t.yaml:2:5: agent_pools[0]: expected a mapping (the fields of agent_pools[0]), got \"nlab\""));
}

// Found by fuzz_config: ",\x02" made yaml-cpp's LoadAll produce documents forever.
TEST(ConfigErrors, ControlCharactersAreRefusedAtTheirPosition) {
  EXPECT_THAT(ErrorStrings(Load(std::string(",\x02"))),
              ElementsAre("t.yaml:1:2: control character 0x02 is not allowed in YAML"));
  EXPECT_THAT(ErrorStrings(Load(std::string("agent_pools:\n  - name: a\x7f\n"))),
              ElementsAre("t.yaml:2:12: control character 0x7f is not allowed in YAML"));
}

TEST(ConfigErrors, ASecondDocumentIsAnError) {
  EXPECT_THAT(ErrorStrings(Load("agent_pools: []\n---\nagent_pools: []\n")),
              ElementsAre(HasSubstr("only one YAML document per file")));
}

TEST(ConfigErrors, EachBadListItemIsReportedAtItsOwnPosition) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    kinds: [[x], gang]\n");
  EXPECT_THAT(ErrorStrings(r),
              ElementsAre("t.yaml:3:13: agent_pools[0].kinds[0]: expected a string, got a list",
                          HasSubstr("t.yaml:3:18: agent_pools[0].kinds[1]: invalid kind")));
}

TEST(ConfigErrors, ASecretIsNeverEchoed) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n"
                      "        mithril_spot_bid: { api_token: [hunter2] }\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_THAT(r.errors[0].message, HasSubstr("expected a string, got a list"));
  EXPECT_THAT(r.errors[0].ToString(), Not(HasSubstr("hunter2")));
}

TEST(ConfigErrors, AllErrorsAreReportedAtOnceInFileOrder) {
  LoadResult r = LoadConfigPath(Fixture("three_errors.yaml"), Env());
  EXPECT_FALSE(r.config);
  std::string f = Fixture("three_errors.yaml");
  EXPECT_THAT(ErrorStrings(r),
              ElementsAre(f + ":5:7: agent_pools[0].auto_scaler: unknown field \"max_agent\" "
                              "(did you mean \"max_agents\"?)",
                          HasSubstr(f + ":6:19: agent_pools[0].auto_scaler.idle_decay: invalid "
                                        "duration \"300\""),
                          HasSubstr(f + ":7:11: agent_pools[1].name: invalid pool name")));
}

TEST(ConfigErrors, UnreadableFile) {
  LoadResult r = LoadConfigPath("/nonexistent/tidepool.yaml", Env());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(),
            "/nonexistent/tidepool.yaml: cannot read: No such file or directory");
}

}  // namespace
}  // namespace tidepool::config
