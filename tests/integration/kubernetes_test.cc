// Kubernetes pools end to end: a real server with a `kubernetes` pool, the FAKE Kubernetes API
// server (tests/fakes/kube, checked by kubectl and python3-kubernetes) whose pods run the real
// agent as local processes. The scenarios of issue 20: vrun and vbatch on pods, pods evicted and
// deleted by hand (seen through the watch, also after it was dropped or expired), a pod stuck
// Pending (out of capacity: the backup pool serves), the API server unreachable for a while (the
// list error changes nothing), the token rotated, and the API server's refusals in `pool get`.
// Every pod created is connected or deleted in the end, checked against the fake's own record.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <thread>

#include "fake_kube.h"
#include "harness.h"

namespace tidepool::testing {
namespace {

struct KubePoolOptions {
  std::string name = "kube";
  std::string kubeconfig;
  std::string extra_backend;     // more fields of the kubernetes block, ", k: v"
  std::string extra_autoscaler;  // more auto_scaler lines, each "      k: v\n"
  std::string image = "tidepool:test";
  std::string selectors;         // "    selectors: [gpu]\n    selector_priority: 0\n"
};

std::string KubePool(const KubePoolOptions& o) {
  return "  - name: " + o.name + "\n" + o.selectors +
         "    workspace: {mode: shared}\n"
         "    auto_scaler:\n"
         "      backend:\n"
         "        kubernetes: {kubeconfig: \"" + o.kubeconfig + "\", namespace: default" + o.extra_backend +
         ", pod_template: {spec: {containers: [{name: tidepool-agent, image: \"" + o.image + "\", command: [\"" +
         BinDir() + "/tidepool\", agent]}]}}}\n"
         "      max_agents: 3\n" + o.extra_autoscaler;
}

std::string Config(const std::string& pools) { return "agent_pools:\n" + pools; }

std::string LastError(Server& server, const std::string& pool) {
  nlohmann::json e = server.Pool(pool)["last_error"];
  return e.is_string() ? e.get<std::string>() : "";
}

std::string Id(const ProcResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(r.out);
  return lines.empty() ? "" : lines.back();
}

std::set<std::string> ConnectedWorkers(Server& server, const std::string& pool) {
  std::set<std::string> out;
  for (auto& w : server.Json({"worker", "list", "-P", pool})) {
    std::string s = w.value("state", "");
    if (s == "idle" || s == "busy") out.insert(w.value("name", ""));
  }
  return out;
}

// The fake's record: every pod ever created is deleted or is a connected worker now.
void ExpectEveryPodConnectedOrDeleted(Server& server, const FakeKube& fake, const std::string& pool) {
  std::set<std::string> connected;
  ASSERT_TRUE(WaitFor([&] {
    connected = ConnectedWorkers(server, pool);
    for (const auto& p : fake.Admin("GET", "/fake/pods-ever")) {
      if (!p.value("deleted", false) && !connected.count(p.value("name", ""))) return false;
    }
    return true;
  }, 60s)) << fake.Admin("GET", "/fake/pods-ever").dump();
}

[[maybe_unused]] std::string OnePodName(const FakeKube& fake, const std::string& pool = "kube") {
  std::string name;
  WaitFor([&] {
    auto pods = fake.Pods("default", "tidepool.dev/pool=" + pool);
    if (!pods.empty()) name = pods[0]["metadata"]["name"];
    return !name.empty();
  }, 60s);
  return name;
}

class Kubernetes : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kube-it-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);  // else kept for inspection
  }
  std::string dir_;
};

TEST_F(Kubernetes, VrunAndVbatchRunOnPodsWhoseTokenComesFromASecretTheyOwn) {
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  Server server(Config(KubePool({.kubeconfig = fake.Kubeconfig(), .extra_autoscaler = "      idle_decay: 1s\n"})));
  // The task waits for the test's checks (the pods run on this machine, so a file is seen).
  const std::string go = dir_ + "/go";
  Background vrun = server.VrunBackground(
      {"-P", "kube", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME; while [ ! -e " + go + " ]; do sleep 0.05; done; echo done"});
  std::string name;
  ASSERT_TRUE(WaitFor([&] {
    auto l = Lines(vrun.Stdout());
    if (!l.empty()) name = l[0];
    return !name.empty();
  }, 60s)) << vrun.Stderr();
  nlohmann::json pod = fake.Get("/api/v1/namespaces/default/pods/" + name);
  ASSERT_TRUE(pod.is_object());
  EXPECT_EQ(pod["metadata"]["labels"]["tidepool.dev/pool"], "kube");
  EXPECT_EQ(pod["metadata"]["labels"]["tidepool.dev/worker"], name);
  EXPECT_EQ(name.rfind("kube-", 0), 0u);
  // The token is in the Secret, owned by the pod, never a literal in the pod.
  nlohmann::json token_env;
  for (const auto& e : pod["spec"]["containers"][0]["env"]) {
    if (e["name"] == "TIDEPOOL_WORKER_TOKEN") token_env = e;
  }
  ASSERT_TRUE(token_env.is_object()) << pod.dump();
  EXPECT_FALSE(token_env.contains("value"));
  EXPECT_EQ(token_env["valueFrom"]["secretKeyRef"]["name"], name);
  nlohmann::json secret = fake.Get("/api/v1/namespaces/default/secrets/" + name);
  ASSERT_TRUE(secret.is_object());
  EXPECT_EQ(secret["metadata"]["ownerReferences"][0]["uid"], pod["metadata"]["uid"]);
  WriteAll(go, "");
  ProcResult r = vrun.Wait();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), (std::vector<std::string>{name, "done"}));

  std::string id = Id(server.Vbatch({"-P", "kube", "-N", "2", "sh", "-c", "echo shard $TIDEPOOL_SHARD_INDEX"}));
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS");
  // Idle workers decay: their pods go, and their Secrets with them.
  EXPECT_TRUE(WaitFor([&] { return fake.Pods("default", "tidepool.dev/pool=kube").empty(); }, 90s));
  EXPECT_TRUE(WaitFor([&] {
    auto s = fake.Get("/api/v1/namespaces/default/secrets?labelSelector=tidepool.dev%2Fpool%3Dkube");
    return s.is_object() && s["items"].empty();
  }, 30s));
  ExpectEveryPodConnectedOrDeleted(server, fake, "kube");
}

// min_agents 1 and a list only every 10 minutes: only the watch can tell the pool soon that its
// pod was evicted, deleted by hand, or went while the watch was down or expired.
TEST_F(Kubernetes, EvictedAndDeletedPodsAreReplacedThroughTheWatchEvenAfterItDroppedOrExpired) {
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  Server server(Config(KubePool({.kubeconfig = fake.Kubeconfig(),
                                 .extra_autoscaler = "      min_agents: 1\n      sync_loop_interval: 10m\n"})));
  std::string first;
  ASSERT_TRUE(WaitFor([&] {
    auto c = ConnectedWorkers(server, "kube");
    if (c.size() == 1) first = *c.begin();
    return !first.empty();
  }, 60s));
  auto replaced = [&](const std::string& old) {
    std::string now;
    bool ok = WaitFor([&] {
      auto c = ConnectedWorkers(server, "kube");
      if (c.size() == 1 && !c.count(old)) now = *c.begin();
      return !now.empty() && fake.Pods("default", "tidepool.dev/worker=" + old).empty();
    }, 60s);
    EXPECT_TRUE(ok) << old << " was not replaced: " << server.Pool("kube").dump();
    return now;
  };
  // Evicted: the kubelet fails the pod (it stays, Failed); the pool makes another, and the
  // backend deletes the finished pod once it was listed with its reason.
  fake.Admin("POST", "/fake/pods/default/" + first + "/evict");
  std::string second = replaced(first);
  ASSERT_FALSE(second.empty());
  EXPECT_TRUE(WaitFor([&] {
    nlohmann::json pool = server.Pool("kube");
    for (const auto& e : pool["events"]) {
      std::string m = e.value("message", "");
      if (m.find(first) != std::string::npos && m.find("Evicted: The node was low on resource: memory.") != std::string::npos) {
        return true;
      }
    }
    return false;
  }, 30s)) << server.Pool("kube")["events"].dump();
  // Deleted by hand (kubectl delete pod), after the watch was dropped (an API server restart).
  // Resumed from its resourceVersion, the watch still sees what happened while it was down.
  fake.Admin("POST", "/fake/drop-watches");
  ASSERT_TRUE(fake.Api("DELETE", "/api/v1/namespaces/default/pods/" + second).is_object());
  std::string third = replaced(second);
  ASSERT_FALSE(third.empty());
  // The watch's resourceVersion expired (410): it lists again and goes on.
  fake.Admin("POST", "/fake/expire-watch-history");
  fake.Admin("POST", "/fake/drop-watches");
  fake.Admin("POST", "/fake/pods/default/" + third + "/evict");
  EXPECT_FALSE(replaced(third).empty());
  ExpectEveryPodConnectedOrDeleted(server, fake, "kube");
}

// Pods that never start here (the kubelet is manual: they stay Pending, no agent dials) and a
// list every 10 minutes: only the watch can tell the pool that one was deleted by hand or failed,
// including while the watch was down (resumed from its resourceVersion) or after it expired (410:
// listed again).
TEST_F(Kubernetes, PendingPodsDeletedOrFailedAreReplacedThroughTheWatch) {
  FakeKube fake(dir_, {.kubelet = "manual", .run_pods = false});
  ASSERT_EQ(fake.error(), "");
  Server server(Config(KubePool({.kubeconfig = fake.Kubeconfig(),
                                 .extra_autoscaler = "      min_agents: 1\n      sync_loop_interval: 10m\n"})));
  auto current = [&] {
    auto pods = fake.Pods("default", "tidepool.dev/pool=kube");
    return pods.size() == 1 ? pods[0]["metadata"]["name"].get<std::string>() : std::string();
  };
  auto replaced = [&](const std::string& old) {
    std::string now;
    EXPECT_TRUE(WaitFor([&] {
      now = current();
      return !now.empty() && now != old;
    }, 60s)) << old << " was not replaced: " << server.Pool("kube").dump();
    return now;
  };
  std::string first;
  ASSERT_TRUE(WaitFor([&] { return !(first = current()).empty(); }, 60s));
  ASSERT_TRUE(fake.Api("DELETE", "/api/v1/namespaces/default/pods/" + first).is_object());
  std::string second = replaced(first);
  ASSERT_FALSE(second.empty());
  fake.Admin("POST", "/fake/drop-watches");
  fake.Admin("POST", "/fake/pods/default/" + second + "/phase", {{"phase", "Failed"}, {"reason", "Error"}, {"exitCode", 2}});
  std::string third = replaced(second);
  ASSERT_FALSE(third.empty());
  fake.Admin("POST", "/fake/expire-watch-history");
  fake.Admin("POST", "/fake/drop-watches");
  ASSERT_TRUE(fake.Api("DELETE", "/api/v1/namespaces/default/pods/" + third).is_object());
  std::string fourth = replaced(third);
  EXPECT_FALSE(fourth.empty());
  // Every pod but the one still wanted (pending) is gone.
  for (const auto& p : fake.Admin("GET", "/fake/pods-ever")) {
    EXPECT_EQ(p.value("deleted", false), p.value("name", "") != fourth) << p.dump();
  }
}

// A pod the scheduler cannot place: out of capacity, its own words in `pool get`, the pod deleted,
// and the task runs on the backup pool behind the same selector.
TEST_F(Kubernetes, AnUnschedulablePodIsOutOfCapacityAndTheBackupPoolServes) {
  FakeKube fake(dir_, {.kubelet = "manual", .run_pods = false});
  ASSERT_EQ(fake.error(), "");
  Server server(Config(KubePool({.name = "gpu-k", .kubeconfig = fake.Kubeconfig(),
                                 .selectors = "    selectors: [gpu]\n    selector_priority: 0\n"}) +
                       "  - name: gpu-l\n    selectors: [gpu]\n    selector_priority: 1\n    auto_scaler:\n"
                       "      backend: { local: {} }\n      max_agents: 2\n"));
  std::string id = Id(server.Vbatch({"-P", "gpu", "sh", "-c", "echo $TIDEPOOL_POOL"}));
  std::string pod;
  ASSERT_TRUE(WaitFor([&] {
    auto pods = fake.Pods("default", "tidepool.dev/pool=gpu-k");
    if (!pods.empty()) pod = pods[0]["metadata"]["name"];
    return !pod.empty();
  }, 60s));
  EXPECT_EQ(server.Task(id)["state"], "QUEUEING");
  fake.Admin("POST", "/fake/pods/default/" + pod + "/unschedulable");
  nlohmann::json t = server.WaitTask(id, 120s);
  EXPECT_EQ(t["state"], "SUCCESS");
  EXPECT_EQ(Lines(server.Tidepool({"task", "logs", id}).out), std::vector<std::string>{"gpu-l"});
  std::string err = LastError(server, "gpu-k");
  EXPECT_NE(err.find(pod + ": Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), std::string::npos)
      << err;
  EXPECT_NE(err.find("[out_of_capacity]"), std::string::npos) << err;
  EXPECT_TRUE(WaitFor([&] { return fake.Pods("default", "tidepool.dev/pool=gpu-k").empty(); }, 60s));
}

// The API server answers 503 for a while: lists fail and say so, and nothing else changes (the
// worker stays, no pod is made or deleted); then it goes on as before.
TEST_F(Kubernetes, AnUnreachableApiServerChangesNothing) {
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  Server server(Config(KubePool({.kubeconfig = fake.Kubeconfig(),
                                 .extra_autoscaler = "      min_agents: 1\n      sync_loop_interval: 1s\n"})));
  std::set<std::string> before;
  ASSERT_TRUE(WaitFor([&] { return (before = ConnectedWorkers(server, "kube")).size() == 1; }, 60s));
  fake.Admin("POST", "/fake/unreachable", {{"seconds", 6}});
  EXPECT_TRUE(WaitFor([&] {
    std::string e = LastError(server, "kube");
    return e.find("list: kubernetes: list pods:") != std::string::npos && e.find("503") != std::string::npos;
  }, 30s)) << server.Pool("kube").dump();
  EXPECT_EQ(ConnectedWorkers(server, "kube"), before);
  std::this_thread::sleep_for(7s);  // the outage ends; the next lists succeed
  EXPECT_EQ(ConnectedWorkers(server, "kube"), before);
  EXPECT_EQ(fake.Admin("GET", "/fake/pods-ever").size(), 1u);  // nothing made, nothing deleted
  ProcResult r = server.Vrun({"-P", "kube", "sh", "-c", "echo $TIDEPOOL_WORKER_NAME"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Lines(r.out), std::vector<std::string>{*before.begin()});
}

// In-cluster access: the service account's folder (token, CA, namespace) and the service's
// address from the environment. The token is rotated (the API server stops taking the old one):
// the next create reads the new one.
TEST_F(Kubernetes, InClusterAccessReadsARotatedServiceAccountToken) {
  const std::string tokens = dir_ + "/tokens.csv", sa = dir_ + "/serviceaccount";
  WriteAll(tokens, "sa-token-1,system:serviceaccount:default:tidepool-server,1001\n");
  FakeKube fake(dir_, {.extra_args = {"--token-file", tokens}});
  ASSERT_EQ(fake.error(), "");
  std::filesystem::create_directories(sa);
  std::filesystem::copy_file(fake.ca_path(), sa + "/ca.crt");
  WriteAll(sa + "/token", "sa-token-1");
  WriteAll(sa + "/namespace", "default");
  std::string port = fake.url().substr(fake.url().rfind(':') + 1);
  KubePoolOptions o{.extra_autoscaler = "      idle_decay: 1s\n"};
  std::string pool = KubePool(o);
  pool.replace(pool.find("kubeconfig: \"\", "), std::string("kubeconfig: \"\", ").size(), "");
  Server server(Config(pool), {}, "",
                {{"KUBERNETES_SERVICE_HOST", "127.0.0.1"}, {"KUBERNETES_SERVICE_PORT", port},
                 {"TIDEPOOL_K8S_SERVICEACCOUNT_DIR", sa}});
  ProcResult r = server.Vrun({"-P", "kube", "true"});
  ASSERT_EQ(r.exit_code, 0) << r.err << server.Pool("kube").dump();
  ASSERT_TRUE(WaitFor([&] { return fake.Pods("default", "tidepool.dev/pool=kube").empty(); }, 60s));
  // Rotation, as kubelet does it: the file is replaced; the old token is refused from now on.
  WriteAll(tokens, "sa-token-2,system:serviceaccount:default:tidepool-server,1001\n");
  WriteAll(sa + "/token.new", "sa-token-2");
  std::filesystem::rename(sa + "/token.new", sa + "/token");
  r = server.Vrun({"-P", "kube", "true"});
  EXPECT_EQ(r.exit_code, 0) << r.err << server.Pool("kube").dump();
  EXPECT_EQ(fake.Admin("GET", "/fake/pods-ever").size(), 2u);
  ExpectEveryPodConnectedOrDeleted(server, fake, "kube");
}

// The API server's refusals, in its own words and classes, in `pool get`: RBAC forbids creating
// pods, the namespace's quota is used up, the template is not a valid pod. No pod is left, and
// no Secret outlives the pod it was made for.
TEST_F(Kubernetes, TheApiServersRefusalsShowInPoolGetWithTheirClass) {
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  for (const char* ns : {"locked", "full"}) {
    fake.Api("POST", "/api/v1/namespaces", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns}}}});
  }
  fake.Admin("POST", "/fake/forbid", {{"verb", "create"}, {"resource", "pods"}, {"namespace", "locked"}});
  fake.Admin("POST", "/fake/quota", {{"namespace", "full"}, {"pods", 0}, {"name", "gpu-quota"}});
  auto pool = [&](const std::string& name, const std::string& ns, const std::string& image) {
    std::string p = KubePool({.name = name, .kubeconfig = fake.Kubeconfig(),
                              .extra_autoscaler = "      min_agents: 1\n", .image = image});
    p.replace(p.find("namespace: default"), std::string("namespace: default").size(), "namespace: " + ns);
    return p;
  };
  Server server(Config(pool("rbac", "locked", "tidepool:test") + pool("quota", "full", "tidepool:test") +
                       pool("invalid", "default", "")));
  auto error_of = [&](const std::string& p, const std::string& words, const std::string& cls) {
    std::string e;
    EXPECT_TRUE(WaitFor([&] {
      e = LastError(server, p);
      return e.find(words) != std::string::npos;
    }, 60s)) << p << ": " << e;
    EXPECT_NE(e.find("[" + cls + "]"), std::string::npos) << e;
  };
  error_of("rbac", "is forbidden: User \"tester\" cannot create resource \"pods\" in API group \"\" in the namespace \"locked\"",
           "auth");
  error_of("quota", "is forbidden: exceeded quota: gpu-quota, requested: pods=1, used: pods=0, limited: pods=0", "quota");
  error_of("invalid", "is invalid: spec.containers[0].image: Required value", "bad_request");
  EXPECT_TRUE(fake.Admin("GET", "/fake/pods-ever").empty());
  for (const char* ns : {"locked", "full", "default"}) {
    nlohmann::json secrets = fake.Get(std::string("/api/v1/namespaces/") + ns + "/secrets");
    EXPECT_TRUE(secrets.is_object() && secrets["items"].empty()) << ns << ": " << secrets.dump();
  }
}

// The other two ways a kubeconfig names a user, against the API server's own checks: a client
// certificate (signed by the fake's CA; the fake's user is its CN) and an exec credential plugin
// (a script printing an ExecCredential with the token). A bearer token is what the others use.
TEST_F(Kubernetes, ClientCertificatesAndExecPluginsReachTheApiServer) {
  FakeKube fake(dir_);
  ASSERT_EQ(fake.error(), "");
  const std::string tls = dir_ + "/fake-kube-tls";
  ASSERT_TRUE(std::filesystem::exists(tls + "/client-cert-user.crt"));
  auto kubeconfig = [&](const std::string& file, const std::string& user) {
    WriteAll(file, "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: f\n  cluster:\n    server: " +
                       fake.url() + "\n    certificate-authority: " + fake.ca_path() +
                       "\ncontexts:\n- name: c\n  context: {cluster: f, user: u}\nusers:\n- name: u\n  user:\n" + user);
    return file;
  };
  std::string cert = kubeconfig(dir_ + "/cert.kubeconfig", "    client-certificate: " + tls +
                                                               "/client-cert-user.crt\n    client-key: " + tls +
                                                               "/client-cert-user.key\n");
  WriteAll(dir_ + "/plugin.sh", std::string("#!/bin/sh\necho x >> ") + dir_ + "/plugin.calls\n" +
                                    "echo '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": "
                                    "\"ExecCredential\", \"status\": {\"token\": \"" + FakeKube::kToken + "\"}}'\n");
  ::chmod((dir_ + "/plugin.sh").c_str(), 0755);
  std::string exec = kubeconfig(dir_ + "/exec.kubeconfig", "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
                                                           "      command: ./plugin.sh\n");
  Server server(Config(KubePool({.name = "cert", .kubeconfig = cert}) + KubePool({.name = "exec", .kubeconfig = exec})));
  for (const char* pool : {"cert", "exec"}) {
    ProcResult r = server.Vrun({"-P", pool, "sh", "-c", "echo $TIDEPOOL_POOL"});
    EXPECT_EQ(r.exit_code, 0) << pool << ": " << r.err << server.Pool(pool).dump();
    EXPECT_EQ(Lines(r.out), std::vector<std::string>{pool});
  }
  EXPECT_FALSE(ReadAll(dir_ + "/plugin.calls").empty());  // the plugin was asked
  // A certificate the cluster's CA did not sign is refused at the TLS handshake: nothing is made.
  std::filesystem::create_directories(dir_ + "/other");
  ProcResult own = RunProcess({SourceDir() + "/tests/fakes/kube/make_certs.sh", dir_ + "/other"}, {{"PATH", "/usr/bin:/bin"}},
                              dir_);
  ASSERT_EQ(own.exit_code, 0) << own.err;
  std::string stranger = kubeconfig(dir_ + "/stranger.kubeconfig", "    client-certificate: " + dir_ +
                                                                       "/other/client-cert-user.crt\n    client-key: " +
                                                                       dir_ + "/other/client-cert-user.key\n");
  Server refused(Config(KubePool({.name = "stranger", .kubeconfig = stranger, .extra_autoscaler = "      min_agents: 1\n"})));
  std::string e;
  // (The pool's first list fails so, and no create is tried before a list has answered.)
  EXPECT_TRUE(WaitFor([&] { return !(e = LastError(refused, "stranger")).empty(); }, 60s))
      << refused.Pool("stranger").dump();
  // The TLS handshake fails: curl sees the server's "unknown ca" alert (then the error says the
  // server refused the client certificate, class auth) or only the connection closing.
  EXPECT_NE(e.find(fake.url()), std::string::npos) << e;
  EXPECT_TRUE(fake.Admin("GET", "/fake/pods-ever").size() == 2u) << "the stranger's pool made a pod";
}

}  // namespace
}  // namespace tidepool::testing
