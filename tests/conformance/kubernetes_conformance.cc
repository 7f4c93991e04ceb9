// The conformance suite against the `kubernetes` backend, through the FAKE Kubernetes API server
// (tests/fakes/kube, checked by kubectl and python3-kubernetes): its pods run as local processes,
// so each pod's agent really dials the server with the name and token the pod was given (the
// token through its Secret).
#include <nlohmann/json.hpp>

#include "../integration/fake_kube.h"
#include "conformance.h"

namespace tidepool::conformance {
namespace {

BackendEnv KubernetesEnv() {
  BackendEnv env;
  env.name = "kubernetes";
  env.world = [](std::string* listen, std::string* skip) -> std::shared_ptr<void> {
    (void)listen;
    char tmpl[] = "/tmp/conf-kube-XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    auto fake = std::make_shared<testing::FakeKube>(dir, testing::FakeKube::Options{.remove_dir = true});
    if (!fake->error().empty()) {
      *skip = fake->error();
      return nullptr;
    }
    return fake;
  };
  env.block = [](const Setup& s, Variant v) {
    auto* fake = static_cast<testing::FakeKube*>(s.world.get());
    // A slow API: the Secret's owner patch, after the pod exists, waits 3 s.
    fake->Admin("DELETE", "/fake/delay");
    if (v == Variant::kSlowCreate) {
      fake->Admin("POST", "/fake/delay", {{"verb", "patch"}, {"resource", "secrets"}, {"seconds", 3}});
    }
    nlohmann::json block = {
        {"kubeconfig", fake->Kubeconfig()},
        // A failing create: a namespace that does not exist, and the API server says so.
        {"namespace", v == Variant::kFailing ? "nope" : "default"},
        {"name_prefix", "conf"},
        {"pod_template",
         {{"spec",
           {{"containers",
             {{{"name", "tidepool-agent"}, {"image", "tidepool:test"}, {"command", {s.agent_binary, "agent"}}}}}}}}},
    };
    return "kubernetes: " + block.dump();
  };
  env.stop_from_outside = [](const Setup& s, const std::string& worker) {
    // The node ran out of memory: the kubelet evicts the pod (it stays, Failed).
    static_cast<testing::FakeKube*>(s.world.get())->Admin("POST", "/fake/pods/default/" + worker + "/evict");
  };
  env.failing_message = "namespaces \"nope\" not found";
  env.failing_class = backends::ErrorClass::kBadRequest;
  return env;
}

INSTANTIATE_TEST_SUITE_P(Kubernetes, Conformance, ::testing::Values(KubernetesEnv()), EnvName);

}  // namespace
}  // namespace tidepool::conformance
