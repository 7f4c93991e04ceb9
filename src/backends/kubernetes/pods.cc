// Pods and Secrets of the kubernetes backend, and pods read as workers (pods.h).
#include "backends/kubernetes/pods.h"

#include <cctype>

#include <fmt/format.h>

#include "common/crypto.h"
#include "common/strings.h"

namespace tidepool::backends::kube {

namespace {

bool IsDnsLabelChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

void SetEnv(Json& container, const std::string& name, Json entry) {
  Json& env = container["env"];
  if (!env.is_array()) env = Json::array();
  for (auto it = env.begin(); it != env.end();) {
    if (it->is_object() && it->value("name", "") == name) {
      it = env.erase(it);  // ours wins over the template's
    } else {
      ++it;
    }
  }
  entry["name"] = name;
  env.push_back(std::move(entry));
}

}  // namespace

Result<Json> NormalizeTemplate(const Json& given, const std::string& where) {
  if (!given.is_object()) return InvalidArgument(where + ": not an object (a Pod, a pod template or a pod spec)");
  Json t = Json::object();
  if (given.contains("spec")) {
    if (given.contains("kind") && given["kind"] != "Pod" && given["kind"] != "PodTemplate") {
      return InvalidArgument(fmt::format("{}: kind {} is not a Pod", where, given["kind"].dump()));
    }
    // A PodTemplate object wraps the template under `template`.
    const Json& src = given.contains("template") && given["template"].is_object() ? given["template"] : given;
    t["spec"] = src.value("spec", Json::object());
    t["metadata"] = src.value("metadata", Json::object());
  } else {
    t["spec"] = given;
    t["metadata"] = Json::object();
  }
  if (!t["spec"].is_object()) return InvalidArgument(where + ": spec is not an object");
  const Json& containers = t["spec"].value("containers", Json());
  if (!containers.is_array() || containers.empty()) {
    return InvalidArgument(where + ": spec.containers: a pod needs at least one container");
  }
  for (size_t i = 0; i < containers.size(); ++i) {
    if (!containers[i].is_object()) return InvalidArgument(fmt::format("{}: spec.containers[{}] is not an object", where, i));
  }
  if (!t["metadata"].is_object()) return InvalidArgument(where + ": metadata is not an object");
  // The backend names pods and owns these labels.
  t["metadata"].erase("name");
  t["metadata"].erase("generateName");
  t["metadata"].erase("namespace");
  t["metadata"].erase("resourceVersion");
  t["metadata"].erase("uid");
  return t;
}

std::string PoolLabelValue(const std::string& pool) {
  std::string v;
  for (char c : pool) v += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  // Too long: cut, with a digest of the whole name that every build computes alike (std::hash
  // need not: a server upgraded would stop finding its pods).
  if (v.size() > 63) v = v.substr(0, 54) + "-" + HmacSha256Hex("tidepool.dev/pool", pool).substr(0, 8);
  while (!v.empty() && !std::isalnum(static_cast<unsigned char>(v.back()))) v.pop_back();
  while (!v.empty() && !std::isalnum(static_cast<unsigned char>(v.front()))) v.erase(0, 1);
  return v.empty() ? "pool" : v;
}

std::string DefaultNamePrefix(const std::string& pool) {
  std::string p;
  for (char c : pool) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    p += IsDnsLabelChar(l) ? l : '-';
  }
  if (p.size() > 50) p.resize(50);
  while (!p.empty() && p.back() == '-') p.pop_back();
  while (!p.empty() && p.front() == '-') p.erase(0, 1);
  return p.empty() ? "tidepool" : p;
}

Status CheckNamePrefix(const std::string& prefix) {
  bool ok = !prefix.empty() && prefix.size() <= 57 && prefix.front() != '-' && prefix.back() != '-';
  for (char c : prefix) ok = ok && IsDnsLabelChar(c);
  if (!ok) {
    return InvalidArgument(fmt::format("name_prefix \"{}\" must be 1-57 of a-z 0-9 and '-', not starting or ending with "
                                       "'-' (pod names are <prefix>-<5 random>, and also label values)",
                                       prefix));
  }
  return Status::Ok();
}

Json MakePod(const Json& tmpl, const PodParams& p) {
  Json pod = Json::object();
  pod["apiVersion"] = "v1";
  pod["kind"] = "Pod";
  pod["metadata"] = tmpl.value("metadata", Json::object());
  pod["spec"] = tmpl.value("spec", Json::object());
  Json& meta = pod["metadata"];
  meta["name"] = p.name;
  meta["namespace"] = p.ns;
  Json& labels = meta["labels"];
  if (!labels.is_object()) labels = Json::object();
  for (const auto& [k, v] : p.extra_labels) labels[k] = v;
  labels[kPoolLabel] = PoolLabelValue(p.pool);
  labels[kWorkerLabel] = p.name;
  if (!p.batch.empty()) labels[kBatchLabel] = p.batch;
  Json& spec = pod["spec"];
  // A worker that exits is done: the pool makes another, Kubernetes must not restart it behind
  // the pool's back under the same name with a used token.
  spec["restartPolicy"] = "Never";
  Json& containers = spec["containers"];
  size_t agent = 0;
  for (size_t i = 0; i < containers.size(); ++i) {
    if (containers[i].value("name", "") == kAgentContainer) agent = i;
  }
  Json& c = containers[agent];
  if (!c.contains("name")) c["name"] = kAgentContainer;
  SetEnv(c, "TIDEPOOL_SERVER", {{"value", p.server_address}});
  SetEnv(c, "TIDEPOOL_POOL", {{"value", p.pool}});
  SetEnv(c, "TIDEPOOL_WORKER_NAME", {{"value", p.name}});
  SetEnv(c, "TIDEPOOL_SLOTS", {{"value", std::to_string(p.slots)}});
  SetEnv(c, "TIDEPOOL_WORKER_TOKEN", {{"valueFrom", {{"secretKeyRef", {{"name", p.name}, {"key", kTokenKey}}}}}});
  return pod;
}

Json MakeTokenSecret(const PodParams& p, const std::string& token) {
  Json labels = {{kPoolLabel, PoolLabelValue(p.pool)}, {kWorkerLabel, p.name}};
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"type", "Opaque"},
          {"metadata", {{"name", p.name}, {"namespace", p.ns}, {"labels", labels}}},
          {"data", {{kTokenKey, Base64Encode(token)}}}};
}

Json OwnerPatch(const std::string& pod_name, const std::string& pod_uid) {
  return {{"metadata",
           {{"ownerReferences",
             Json::array({{{"apiVersion", "v1"}, {"kind", "Pod"}, {"name", pod_name}, {"uid", pod_uid}}})}}}};
}

ListedWorker PodAsWorker(const Json& pod) {
  ListedWorker w;
  const Json meta = pod.value("metadata", Json::object());
  const Json status = pod.value("status", Json::object());
  w.name = meta.value("name", "");
  const std::string phase = status.value("phase", "Pending");
  auto words = [](const std::string& reason, const std::string& message) {
    if (message.empty()) return reason;
    return reason.empty() ? message : reason + ": " + message;
  };
  if (meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null()) {
    w.state = WorkerState::kStopping;
    w.detail = "terminating";
    return w;
  }
  if (phase == "Succeeded" || phase == "Failed") {
    w.state = WorkerState::kStopped;
    std::string d = words(status.value("reason", ""), status.value("message", ""));
    w.detail = d.empty() ? (phase == "Succeeded" ? "succeeded" : "failed") : d;
    return w;
  }
  if (phase != "Pending") {
    w.state = WorkerState::kRunning;
    if (phase != "Running") w.detail = phase;
    return w;
  }
  w.state = WorkerState::kPending;
  w.detail = "pending";
  if (status.contains("conditions") && status["conditions"].is_array()) {
    for (const Json& cond : status["conditions"]) {
      if (!cond.is_object() || cond.value("type", "") != "PodScheduled" || cond.value("status", "") != "False") continue;
      std::string reason = cond.value("reason", "");
      w.detail = words(reason, cond.value("message", ""));
      if (reason == "Unschedulable") w.failing = ErrorClass::kOutOfCapacity;
    }
  }
  for (const char* list : {"initContainerStatuses", "containerStatuses"}) {
    if (!status.contains(list) || !status[list].is_array()) continue;
    for (const Json& cs : status[list]) {
      const Json state = cs.value("state", Json::object());
      if (!state.contains("waiting") || !state["waiting"].is_object()) continue;
      std::string reason = state["waiting"].value("reason", "");
      if (reason.empty() || reason == "ContainerCreating" || reason == "PodInitializing") continue;
      w.detail = words(reason, state["waiting"].value("message", ""));
      if (reason == "ErrImagePull" || reason == "ImagePullBackOff") w.failing = ErrorClass::kOutOfCapacity;
      if (reason == "InvalidImageName") w.failing = ErrorClass::kBadRequest;
      return w;
    }
  }
  return w;
}

}  // namespace tidepool::backends::kube
