// The pure part of the kubernetes backend: pods and secrets made, pods read as workers.
#include "backends/kubernetes/pods.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "backends/kubernetes/kubernetes_backend.h"
#include "common/crypto.h"
#include "common/strings.h"

namespace tidepool::backends::kube {
namespace {

Json Template() {
  return Json::parse(R"({"metadata": {"name": "ignored", "labels": {"team": "ml"}},
                         "spec": {"containers": [{"name": "sidecar", "image": "busybox"},
                                                 {"name": "tidepool-agent", "image": "tidepool:1",
                                                  "env": [{"name": "TIDEPOOL_SERVER", "value": "wrong"},
                                                          {"name": "KEEP", "value": "me"}]}]}})");
}

TEST(KubePods, TheTemplateMayBeAPodAPodTemplateOrABareSpec) {
  auto pod = NormalizeTemplate(Json::parse(R"({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"},
                                                "spec": {"containers": [{"name": "a", "image": "i"}]}})"),
                               "pod_template");
  ASSERT_TRUE(pod.ok()) << pod.status().message();
  EXPECT_FALSE((*pod)["metadata"].contains("name"));  // the backend names pods
  auto spec = NormalizeTemplate(Json::parse(R"({"containers": [{"name": "a", "image": "i"}]})"), "t");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ((*spec)["spec"]["containers"][0]["image"], "i");
  auto wrapped = NormalizeTemplate(
      Json::parse(R"({"kind": "PodTemplate", "template": {"spec": {"containers": [{"image": "j"}]}}, "spec": {}})"), "t");
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().message();
  EXPECT_EQ((*wrapped)["spec"]["containers"][0]["image"], "j");

  auto none = NormalizeTemplate(Json::parse(R"({"spec": {"containers": []}})"), "pod_template");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(), "pod_template: spec.containers: a pod needs at least one container");
  auto svc = NormalizeTemplate(Json::parse(R"({"kind": "Service", "spec": {}})"), "pod_template");
  ASSERT_FALSE(svc.ok());
  EXPECT_NE(svc.status().message().find("kind \"Service\" is not a Pod"), std::string::npos);
  EXPECT_FALSE(NormalizeTemplate(Json::parse("[1]"), "t").ok());
}

TEST(KubePods, APodCarriesItsLabelsAndTheAgentsEnvironmentWithTheTokenFromItsSecret) {
  PodParams p{.name = "gpu-bcd2f", .ns = "ml", .pool = "gpu", .server_address = "10.0.0.1:7700", .slots = 2,
              .batch = "17", .extra_labels = {{"app", "tidepool"}}};
  Json pod = MakePod(*NormalizeTemplate(Template(), "t"), p);
  EXPECT_EQ(pod["metadata"]["name"], "gpu-bcd2f");
  EXPECT_EQ(pod["metadata"]["namespace"], "ml");
  EXPECT_EQ(pod["metadata"]["labels"]["team"], "ml");
  EXPECT_EQ(pod["metadata"]["labels"]["app"], "tidepool");
  EXPECT_EQ(pod["metadata"]["labels"][kPoolLabel], "gpu");
  EXPECT_EQ(pod["metadata"]["labels"][kWorkerLabel], "gpu-bcd2f");
  EXPECT_EQ(pod["metadata"]["labels"][kBatchLabel], "17");
  EXPECT_EQ(pod["spec"]["restartPolicy"], "Never");
  EXPECT_FALSE(pod["spec"]["containers"][0].contains("env"));  // the sidecar gets nothing
  std::map<std::string, Json> env;
  for (const Json& e : pod["spec"]["containers"][1]["env"]) env[e["name"]] = e;
  EXPECT_EQ(env["TIDEPOOL_SERVER"]["value"], "10.0.0.1:7700");  // ours, not the template's
  EXPECT_EQ(env["KEEP"]["value"], "me");
  EXPECT_EQ(env["TIDEPOOL_POOL"]["value"], "gpu");
  EXPECT_EQ(env["TIDEPOOL_WORKER_NAME"]["value"], "gpu-bcd2f");
  EXPECT_EQ(env["TIDEPOOL_SLOTS"]["value"], "2");
  EXPECT_FALSE(env["TIDEPOOL_WORKER_TOKEN"].contains("value"));
  EXPECT_EQ(env["TIDEPOOL_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], "gpu-bcd2f");
  EXPECT_EQ(pod.dump().find("s3cret"), std::string::npos);

  Json secret = MakeTokenSecret(p, "s3cret");
  EXPECT_EQ(secret["metadata"]["name"], "gpu-bcd2f");
  EXPECT_EQ(secret["metadata"]["labels"][kPoolLabel], "gpu");
  EXPECT_EQ(*Base64Decode(secret["data"][kTokenKey].get<std::string>()), "s3cret");
  Json owner = OwnerPatch("gpu-bcd2f", "uid-1")["metadata"]["ownerReferences"][0];
  EXPECT_EQ(owner["kind"], "Pod");
  EXPECT_EQ(owner["uid"], "uid-1");
}

TEST(KubePods, NamesAndLabelValuesAreValidForAnyPoolName) {
  EXPECT_EQ(DefaultNamePrefix("GPU_a100"), "gpu-a100");
  EXPECT_EQ(DefaultNamePrefix("__"), "tidepool");
  EXPECT_TRUE(CheckNamePrefix("gpu-a100").ok());
  EXPECT_FALSE(CheckNamePrefix("GPU").ok());
  EXPECT_FALSE(CheckNamePrefix("-a").ok());
  EXPECT_FALSE(CheckNamePrefix(std::string(58, 'a')).ok());
  EXPECT_EQ(PoolLabelValue("gpu-a100"), "gpu-a100");
  EXPECT_EQ(PoolLabelValue("a b"), "a_b");
  std::string long_name(100, 'x');
  EXPECT_LE(PoolLabelValue(long_name).size(), 63u);
  EXPECT_NE(PoolLabelValue(long_name), PoolLabelValue(long_name + "y"));
  EXPECT_EQ(PoolLabelValue(long_name), std::string(54, 'x') + "-" + HmacSha256Hex("tidepool.dev/pool", long_name).substr(0, 8));
}

TEST(KubePods, PodSelectorTermsMustBeEqualities) {
  auto l = ParseSelectorLabels("app=gpu, team==ml");
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_EQ((*l)["app"], "gpu");
  EXPECT_EQ((*l)["team"], "ml");
  EXPECT_TRUE(ParseSelectorLabels("").ok());
  for (const char* bad : {"app", "app!=gpu", "app in (a,b)", "=x"}) EXPECT_FALSE(ParseSelectorLabels(bad).ok()) << bad;
}

Json Pod(const std::string& status, const std::string& meta = R"({"name": "p"})") {
  return Json::parse(R"({"metadata": )" + meta + R"(, "status": )" + status + "}");
}

TEST(KubePods, PendingRunningFinishedAndTerminatingPodsAsWorkers) {
  ListedWorker w = PodAsWorker(Pod(R"({"phase": "Running"})"));
  EXPECT_EQ(w.name, "p");
  EXPECT_EQ(w.state, WorkerState::kRunning);
  EXPECT_FALSE(w.failing);

  w = PodAsWorker(Pod(R"({"phase": "Pending"})"));
  EXPECT_EQ(w.state, WorkerState::kPending);
  EXPECT_FALSE(w.failing);

  w = PodAsWorker(Pod(R"({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."})"));
  EXPECT_EQ(w.state, WorkerState::kStopped);
  EXPECT_EQ(w.detail, "Evicted: The node was low on resource: memory.");
  EXPECT_EQ(PodAsWorker(Pod(R"({"phase": "Succeeded"})")).state, WorkerState::kStopped);

  w = PodAsWorker(Pod(R"({"phase": "Running"})", R"({"name": "p", "deletionTimestamp": "2026-12-07T01:00:00Z"})"));
  EXPECT_EQ(w.state, WorkerState::kStopping);
  EXPECT_FALSE(IsWorker(w.state));
}

TEST(KubePods, SchedulingAndImageFailuresAreFailingWithKubernetesOwnWords) {
  ListedWorker w = PodAsWorker(Pod(R"({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
      "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]})"));
  EXPECT_EQ(w.state, WorkerState::kPending);
  ASSERT_TRUE(w.failing);
  EXPECT_EQ(*w.failing, ErrorClass::kOutOfCapacity);
  EXPECT_EQ(w.detail, "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.");

  for (const char* reason : {"ErrImagePull", "ImagePullBackOff"}) {
    w = PodAsWorker(Pod(fmt::format(R"({{"phase": "Pending", "containerStatuses": [{{"name": "a",
        "state": {{"waiting": {{"reason": "{}", "message": "Back-off pulling image \"nope\""}}}}}}]}})",
                                    reason)));
    ASSERT_TRUE(w.failing) << reason;
    EXPECT_EQ(*w.failing, ErrorClass::kOutOfCapacity);
    EXPECT_EQ(w.detail, std::string(reason) + ": Back-off pulling image \"nope\"");
  }
  w = PodAsWorker(Pod(R"({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "InvalidImageName"}}}]})"));
  ASSERT_TRUE(w.failing);
  EXPECT_EQ(*w.failing, ErrorClass::kBadRequest);
  // Starting normally is not failing.
  w = PodAsWorker(Pod(R"({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]})"));
  EXPECT_FALSE(w.failing);
  w = PodAsWorker(Pod(R"({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "CreateContainerConfigError",
      "message": "secret \"x\" not found"}}}]})"));
  EXPECT_FALSE(w.failing);  // the Secret is made before the pod; kubelet retries
  EXPECT_EQ(w.detail, "CreateContainerConfigError: secret \"x\" not found");
}

}  // namespace
}  // namespace tidepool::backends::kube
