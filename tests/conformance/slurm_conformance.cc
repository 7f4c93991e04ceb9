// The conformance suite against the `slurm` backend: the real Slurm cluster of tests/slurm (a
// copy of ../shared/bench/slurm: slurmctld, four slurmd, munge), whose jobs run the agent on this
// machine; the server listens on loopback, where the jobs' agents dial it.
#include <stdlib.h>

#include <nlohmann/json.hpp>

#include "../integration/harness.h"
#include "../integration/slurm_cluster.h"
#include "conformance.h"

namespace tidepool::conformance {
namespace {

struct Cluster {
  std::unique_ptr<testing::SlurmCluster> slurm;
  std::string prefix;
  ~Cluster() {
    if (slurm && slurm->error().empty()) slurm->CancelAll(prefix);
  }
};

BackendEnv SlurmEnv() {
  BackendEnv env;
  env.name = "slurm";
  env.world = [](std::string* listen, std::string* skip) -> std::shared_ptr<void> {
    (void)listen;
    auto c = std::make_shared<Cluster>();
    c->slurm = std::make_unique<testing::SlurmCluster>();
    if (!c->slurm->error().empty()) {
      *skip = c->slurm->error();
      return nullptr;
    }
    for (const auto& [k, v] : c->slurm->Env()) ::setenv(k.c_str(), v.c_str(), 1);  // the backend's sbatch reads it
    c->prefix = testing::UniqueSlurmPrefix("tpc");
    return c;
  };
  env.block = [](const Setup& s, Variant v) {
    auto* c = static_cast<Cluster*>(s.world.get());
    nlohmann::json block = {
        // A failing create: sbatch refuses a partition the cluster does not have, in its own words.
        {"partition", v == Variant::kFailing ? "nosuch" : "main"},
        {"job_name_prefix", c->prefix},
        {"time_limit", "30"},
        {"output_dir", s.dir + "/slurm-out"},
    };
    return "slurm: " + block.dump();
  };
  env.stop_from_outside = [](const Setup& s, const std::string& worker) {
    auto* c = static_cast<Cluster*>(s.world.get());
    c->slurm->Sh("scancel --name='" + worker + "'");
  };
  env.failing_message = "Invalid partition name specified";
  env.failing_class = backends::ErrorClass::kBadRequest;
  return env;
}

INSTANTIATE_TEST_SUITE_P(Slurm, Conformance, ::testing::Values(SlurmEnv()), EnvName);

}  // namespace
}  // namespace tidepool::conformance
