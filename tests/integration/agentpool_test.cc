// Pools declared as AgentPool resources, as a cluster operator would: Debian's kubectl applies
// the CRD (deploy/kubernetes/crd.yaml) and AgentPools to the FAKE Kubernetes API server
// (tests/fakes/kube), `tidepool server --k8s-pools default` reconciles them, vrun runs on the
// pods, `kubectl get ap` shows the status the server writes, an invalid spec gets a condition
// naming the field, a changed spec changes the pool, and a deleted AgentPool drains its pool and
// deletes its pods before it goes (its finalizer).
#include <gtest/gtest.h>

#include <filesystem>

#include "fake_kube.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

class AgentPools : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agentpool-it-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ProcResult k = RunProcess({SourceDir() + "/tests/fakes/kube/debian_kubectl.sh"},
                              {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}}, dir_);
    kubectl_ = Lines(k.out).empty() ? "" : Lines(k.out).back();
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  ProcResult Kubectl(const FakeKube& fake, const std::vector<std::string>& args, const std::string& stdin_data = "") {
    std::vector<std::string> argv = {kubectl_, "--kubeconfig", fake.Kubeconfig(), "--cache-dir", dir_ + "/kube-cache"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, {{"PATH", "/usr/bin:/bin"}, {"HOME", dir_}}, dir_, stdin_data);
  }
  nlohmann::json Resource(const FakeKube& fake, const std::string& name) {
    ProcResult r = Kubectl(fake, {"get", "ap", name, "-o", "json"});
    return r.exit_code == 0 ? nlohmann::json::parse(r.out, nullptr, false) : nlohmann::json();
  }
  std::string dir_, kubectl_;
};

std::string AgentPoolYaml(const FakeKube& fake, const std::string& name, int max_agents, const std::string& image) {
  return "apiVersion: tidepool.dev/v1\nkind: AgentPool\nmetadata:\n  name: " + name +
         "\nspec:\n  workspace: {mode: shared}\n  auto_scaler:\n    max_agents: " + std::to_string(max_agents) +
         "\n    idle_decay: 1s\n    backend:\n      kubernetes:\n        kubeconfig: \"" + fake.Kubeconfig() +
         "\"\n        namespace: default\n        pod_template:\n          spec:\n            containers:" +
         (image.empty() ? std::string(" []\n")  // not a pod
                        : "\n            - {name: tidepool-agent, image: \"" + image + "\", command: [\"" + BinDir() +
                              "/tidepool\", agent]}\n");
}

std::string ConditionOf(const nlohmann::json& resource, const std::string& type, const std::string& field) {
  if (!resource.is_object() || !resource.contains("status")) return "";
  for (const auto& c : resource["status"].value("conditions", nlohmann::json::array())) {
    if (c.value("type", "") == type) return c.value(field, "");
  }
  return "";
}

TEST_F(AgentPools, KubectlAppliedAgentPoolsArePoolsWithAStatusAndDeletingOneDrainsIt) {
  ASSERT_FALSE(kubectl_.empty()) << "Debian's kubectl is not available";
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  ProcResult crd = Kubectl(fake, {"apply", "-f", SourceDir() + "/deploy/kubernetes/crd.yaml"});
  ASSERT_EQ(crd.exit_code, 0) << crd.err;
  Server server(OnePool("local", 1), {"--k8s-pools", "default"}, "", {{"KUBECONFIG", fake.Kubeconfig()}});

  ProcResult applied = Kubectl(fake, {"apply", "-f", "-"}, AgentPoolYaml(fake, "kube", 2, "tidepool:test"));
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(WaitFor([&] { return server.Tidepool({"pool", "get", "kube"}).exit_code == 0; }, 30s))
      << server.ServerLog();
  ProcResult r = server.Vrun({"-P", "kube", "sh", "-c", "echo $TIDEPOOL_POOL"});
  ASSERT_EQ(r.exit_code, 0) << r.err << server.ServerLog();
  EXPECT_EQ(Lines(r.out), std::vector<std::string>{"kube"});

  // The status, as `kubectl get ap` reads it: one worker idle (until it decays), Ready.
  EXPECT_TRUE(WaitFor([&] {
    nlohmann::json ap = Resource(fake, "kube");
    return ConditionOf(ap, "Ready", "status") == "True" && ap["status"]["observedGeneration"] == 1;
  }, 30s)) << Resource(fake, "kube").dump();
  ProcResult table = Kubectl(fake, {"get", "ap"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("READY"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("kube"), std::string::npos) << table.out;
  EXPECT_NE(Resource(fake, "kube")["metadata"]["finalizers"].dump().find("tidepool.dev/drain"), std::string::npos);

  // A changed spec changes the pool.
  ProcResult changed = Kubectl(fake, {"apply", "-f", "-"}, AgentPoolYaml(fake, "kube", 3, "tidepool:test"));
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_TRUE(WaitFor([&] { return server.Pool("kube").value("max_agents", 0) == 3; }, 30s)) << server.Pool("kube").dump();
  EXPECT_TRUE(WaitFor([&] { return Resource(fake, "kube")["status"]["observedGeneration"] == 2; }, 30s));

  // An invalid spec is a condition naming the field; the server goes on.
  ProcResult bad = Kubectl(fake, {"apply", "-f", "-"}, AgentPoolYaml(fake, "bad", 1, ""));
  ASSERT_EQ(bad.exit_code, 0) << bad.err;
  EXPECT_TRUE(WaitFor([&] { return ConditionOf(Resource(fake, "bad"), "Ready", "reason") == "InvalidSpec"; }, 30s))
      << Resource(fake, "bad").dump();
  std::string why = ConditionOf(Resource(fake, "bad"), "Degraded", "message");
  EXPECT_NE(why.find("spec.auto_scaler.backend.kubernetes"), std::string::npos) << why;
  EXPECT_NE(server.Tidepool({"pool", "get", "bad"}).exit_code, 0);
  // An AgentPool named like a pool of the config file is refused, and deleting it leaves that
  // pool alone (and does not hang on the finalizer).
  ProcResult clash = Kubectl(fake, {"apply", "-f", "-"}, AgentPoolYaml(fake, "local", 1, "tidepool:test"));
  ASSERT_EQ(clash.exit_code, 0) << clash.err;
  EXPECT_TRUE(WaitFor([&] {
    return ConditionOf(Resource(fake, "local"), "Degraded", "message").find("defined in the server's config file") !=
           std::string::npos;
  }, 30s)) << Resource(fake, "local").dump();
  ProcResult unclash = Kubectl(fake, {"delete", "ap", "local", "--timeout=60s"});
  EXPECT_EQ(unclash.exit_code, 0) << unclash.err;
  EXPECT_EQ(server.Pool("local").value("status", ""), "ready");

  // A worker busy when its AgentPool is deleted: the pool drains (the task finishes), its pods
  // go, then the resource goes.
  const std::string go = dir_ + "/go";
  Background busy = server.VrunBackground(
      {"-P", "kube", "sh", "-c", "echo started; while [ ! -e " + go + " ]; do sleep 0.05; done; echo finished"});
  ASSERT_TRUE(WaitFor([&] { return busy.Stdout().find("started") != std::string::npos; }, 60s)) << busy.Stderr();
  Background deleting({kubectl_, "--kubeconfig", fake.Kubeconfig(), "--cache-dir", dir_ + "/kube-cache", "delete", "ap",
                       "kube", "--timeout=120s"},
                      {{"PATH", "/usr/bin:/bin"}, {"HOME", dir_}}, dir_);
  EXPECT_TRUE(WaitFor([&] { return server.Pool("kube").value("status", "") == "retired"; }, 30s)) << server.Pool("kube").dump();
  EXPECT_TRUE(Resource(fake, "kube").is_object()) << "the AgentPool went before its pool was drained";
  EXPECT_NE(server.Vrun({"-P", "kube", "true"}).exit_code, 0);  // a removed pool takes nothing new
  WriteAll(go, "");
  ProcResult finished = busy.Wait();
  EXPECT_EQ(finished.exit_code, 0) << finished.err;
  EXPECT_NE(finished.out.find("finished"), std::string::npos);
  ProcResult del = deleting.Wait(150s);
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_TRUE(fake.Pods("default", "tidepool.dev/pool=kube").empty());
  for (const auto& p : fake.Admin("GET", "/fake/pods-ever")) EXPECT_TRUE(p.value("deleted", false)) << p.dump();
  EXPECT_EQ(Kubectl(fake, {"get", "ap", "kube"}).exit_code, 1);
}

// The server is killed and started again: the AgentPool's pool comes back with the same worker
// (its record was held until the AgentPool declared the pool again), nothing new is made, and
// a worker whose pool's AgentPool is gone meanwhile is forgotten, not left half-known.
TEST_F(AgentPools, AfterAServerCrashTheDeclaredPoolKeepsItsWorker) {
  ASSERT_FALSE(kubectl_.empty()) << "Debian's kubectl is not available";
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  ASSERT_EQ(Kubectl(fake, {"apply", "-f", SourceDir() + "/deploy/kubernetes/crd.yaml"}).exit_code, 0);
  std::string yaml = AgentPoolYaml(fake, "kube", 2, "tidepool:test");
  yaml.replace(yaml.find("idle_decay: 1s"), std::string("idle_decay: 1s").size(), "min_agents: 1");
  ASSERT_EQ(Kubectl(fake, {"apply", "-f", "-"}, yaml).exit_code, 0);
  Server server(OnePool("local", 1), {"--k8s-pools", "default"}, "", {{"KUBECONFIG", fake.Kubeconfig()}});
  auto idle = [&] {
    std::vector<std::string> names;
    for (auto& w : server.Json({"worker", "list", "-P", "kube"})) {
      if (w.value("state", "") == "idle") names.push_back(w.value("name", ""));
    }
    return names;
  };
  std::vector<std::string> before;
  ASSERT_TRUE(WaitFor([&] { return (before = idle()).size() == 1; }, 60s)) << server.ServerLog();
  server.Kill();
  server.Start();
  std::vector<std::string> after;
  ASSERT_TRUE(WaitFor([&] { return (after = idle()).size() == 1; }, 60s)) << server.ServerLog();
  EXPECT_EQ(after, before);
  EXPECT_EQ(fake.Admin("GET", "/fake/pods-ever").size(), 1u);  // the same pod; none made again
  ProcResult r = server.Vrun({"-P", "kube", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME"});
  EXPECT_EQ(Lines(r.out), before) << r.err;
}

// The API server refuses the pool's pods (RBAC): its words, with their class, in the AgentPool's
// status as `kubectl get ap` reads it, and the pool backs off.
TEST_F(AgentPools, TheApiServersRefusalIsInTheAgentPoolsStatus) {
  ASSERT_FALSE(kubectl_.empty()) << "Debian's kubectl is not available";
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  ASSERT_EQ(Kubectl(fake, {"apply", "-f", SourceDir() + "/deploy/kubernetes/crd.yaml"}).exit_code, 0);
  fake.Admin("POST", "/fake/forbid", {{"verb", "create"}, {"resource", "pods"}, {"namespace", "default"}});
  std::string yaml = AgentPoolYaml(fake, "kube", 2, "tidepool:test");
  yaml.replace(yaml.find("idle_decay: 1s"), std::string("idle_decay: 1s").size(), "min_agents: 1");
  ASSERT_EQ(Kubectl(fake, {"apply", "-f", "-"}, yaml).exit_code, 0);
  Server server(OnePool("local", 1), {"--k8s-pools", "default"}, "", {{"KUBECONFIG", fake.Kubeconfig()}});
  nlohmann::json ap;
  EXPECT_TRUE(WaitFor([&] {
    ap = Resource(fake, "kube");
    return ConditionOf(ap, "Degraded", "status") == "True";
  }, 60s)) << ap.dump();
  std::string error = ap["status"].value("lastError", "");
  EXPECT_NE(error.find("cannot create resource \"pods\" in API group \"\" in the namespace \"default\""), std::string::npos)
      << error;
  EXPECT_NE(error.find("[auth]"), std::string::npos) << error;
  EXPECT_EQ(ConditionOf(ap, "Ready", "status"), "False");
  EXPECT_EQ(ConditionOf(ap, "Ready", "reason"), "CoolingDown");
  EXPECT_EQ(ConditionOf(ap, "Degraded", "reason"), "PoolError");
  EXPECT_FALSE(ap["status"].value("lastErrorTime", "").empty());
  EXPECT_TRUE(fake.Admin("GET", "/fake/pods-ever").empty());
}

}  // namespace
}  // namespace tidepool::testing
