// The backends' config blocks come from the backends themselves (backend_schemas.h).
//
// This binary refers to no symbol of any backend: that `local`, `command` and the planned ones
// are known here at all proves that their registrars are linked in (--whole-archive,
// `tidepool_backends_all` in src/CMakeLists.txt).
#include "config/backend_schemas.h"

#include <algorithm>

#include <gtest/gtest.h>

#include "config/features.h"
#include "config/test_util.h"

namespace tidepool::config {
namespace {

using testing::ErrorStrings;
using testing::Load;

TEST(BackendRegistry, EveryBackendRegisteredItselfInItsOrder) {
  std::vector<std::string> keys;
  for (const BackendSchema* s : BackendSchemas()) keys.push_back(s->key);
  std::vector<std::string> want = {"local",
                                   "command",
                                   "ssh",
                                   "slurm",
                                   "kubernetes",
                                   "aws_launch_template",
                                   "gce_instance_group",
                                   "nebius_launch_template",
                                   "mithril_spot_bid",
                                   "digitalocean_droplet",
                                   "azure_vmss"};
  EXPECT_EQ(keys, want);
}

TEST(BackendRegistry, EachBackendSaysWhetherItIsBuilt) {
  const Feature* local = FindFeature("backend.local");
  ASSERT_NE(local, nullptr);
  EXPECT_TRUE(local->active);
  EXPECT_TRUE(IsFeatureActive("backend.command"));
  EXPECT_TRUE(IsFeatureActive("backend.ssh"));
  EXPECT_TRUE(IsFeatureActive("backend.slurm"));
  EXPECT_TRUE(IsFeatureActive("backend.kubernetes"));
  const Feature* aws = FindFeature("backend.aws_launch_template");
  ASSERT_NE(aws, nullptr);
  EXPECT_FALSE(aws->active);
  EXPECT_STREQ(aws->description, "aws_launch_template backend");
  EXPECT_EQ(FindFeature("backend.nope"), nullptr);
}

// A backend of the test's own, registered the way a backend folder does: no shared file names
// it, yet its block is decoded, defaulted, checked and reported with FILE:LINE:COL.
const schema::Message* ProbeSchema() {
  using namespace schema::make;
  static const schema::Message m{"zz_probe", {Str("region"), WithDefault(Int32("size", schema::kNonNegative), 1)}};
  return &m;
}

class ProbeBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    RegisterBackendSchema({.key = "zz_probe",
                           .order = 1000,
                           .message = ProbeSchema,
                           .active = true,
                           .check = [](const nlohmann::json& f, const BackendErrorReport& report) {
                             if (!f.contains("region")) report("", "zz_probe needs a region", true);
                             if (f.value("size", 1) > 8) report("size", "size must be at most 8", false);
                           }});
  }
  void TearDown() override { UnregisterBackendSchema("zz_probe"); }
};

TEST_F(ProbeBackend, ItsBlockIsDecodedDefaultedAndChecked) {
  LoadResult ok = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n        zz_probe: { region: eu }\n");
  ASSERT_TRUE(ok.errors.empty()) << ErrorStrings(ok)[0];
  const BackendConfig* b = ok.config->pools[0].backend();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, "zz_probe");
  EXPECT_EQ(b->fields["size"], 1);

  LoadResult bad = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n        zz_probe: { size: 9 }\n");
  std::vector<std::string> errors = ErrorStrings(bad);
  ASSERT_EQ(errors.size(), 2u) << ::testing::PrintToString(errors);
  EXPECT_EQ(errors[0], "t.yaml:5:9: agent_pools[0].auto_scaler.backend.zz_probe: zz_probe needs a region");
  EXPECT_EQ(errors[1], "t.yaml:5:27: agent_pools[0].auto_scaler.backend.zz_probe.size: size must be at most 8");

  LoadResult typo = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n        zz_probe: { regoin: eu }\n");
  std::vector<std::string> typos = ErrorStrings(typo);
  EXPECT_NE(std::find(typos.begin(), typos.end(),
                      "t.yaml:5:21: agent_pools[0].auto_scaler.backend.zz_probe: unknown field \"regoin\" (did you mean "
                      "\"region\"?)"),
            typos.end())
      << ::testing::PrintToString(typos);
}

TEST_F(ProbeBackend, ItIsListedAmongTheKnownBackends) {
  LoadResult r = Load("agent_pools:\n  - name: a\n    auto_scaler:\n      backend:\n        ec2: {}\n");
  ASSERT_FALSE(r.errors.empty());
  std::string e = ErrorStrings(r)[0];
  EXPECT_NE(e.find("digitalocean_droplet, zz_probe"), std::string::npos) << e;
}

}  // namespace
}  // namespace tidepool::config
