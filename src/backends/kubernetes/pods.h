// What the kubernetes backend makes and reads, as pure functions of JSON (no I/O, no clock):
// the pod and its token Secret from the pool's template, and a listed pod as a worker.
//
// A worker is one pod named `<prefix>-<5 random>` in the pool's namespace, labelled
//   tidepool.dev/pool=<pool label value>   (every pod of the pool; List selects on it)
//   tidepool.dev/worker=<pod name>
//   tidepool.dev/batch=<label>             (pods created together for one gang)
// and the template's own labels. The agent's container (the one named `tidepool-agent`, else the
// first) gets TIDEPOOL_SERVER, TIDEPOOL_POOL, TIDEPOOL_WORKER_NAME, TIDEPOOL_SLOTS and
// TIDEPOOL_WORKER_TOKEN, the last from the Secret of the pod's name (key `token`), which the
// backend creates before the pod and makes owned by the pod once it exists (so the token is never
// a literal in the pod spec, and Kubernetes deletes the Secret with its pod).
//
// A listed pod as a worker (ListedWorker):
//   metadata.deletionTimestamp set        stopping ("terminating")
//   phase Succeeded or Failed             stopped (its reason and message: "Evicted: The node...")
//   phase Pending                         pending; detail from the PodScheduled condition or a
//                                         waiting container. Unschedulable, ErrImagePull,
//                                         ImagePullBackOff: failing, out_of_capacity;
//                                         InvalidImageName: failing, bad_request
//   phase Running (or Unknown)            running
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/backend.h"

namespace tidepool::backends::kube {

using Json = nlohmann::json;

inline constexpr const char* kPoolLabel = "tidepool.dev/pool";
inline constexpr const char* kWorkerLabel = "tidepool.dev/worker";
inline constexpr const char* kBatchLabel = "tidepool.dev/batch";
inline constexpr const char* kAgentContainer = "tidepool-agent";
inline constexpr const char* kTokenKey = "token";

// The template as the pool gives it: a Pod ({kind: Pod, metadata, spec}), a pod template
// ({metadata, spec}) or a bare pod spec ({containers: ...}). Returns {metadata, spec}; an error
// names what is wrong ("pod_template: spec.containers: ...").
Result<Json> NormalizeTemplate(const Json& given, const std::string& where);

// A valid label value made of the pool's name (pool names allow what label values do not).
std::string PoolLabelValue(const std::string& pool);
// The default name prefix: the pool's name as a DNS label ("GPU_a100" -> "gpu-a100").
std::string DefaultNamePrefix(const std::string& pool);
// An error if `prefix` cannot start pod names (DNS-1123, at most 57 characters so that names
// stay valid label values).
Status CheckNamePrefix(const std::string& prefix);

struct PodParams {
  std::string name;
  std::string ns;
  std::string pool;
  std::string server_address;
  int slots = 1;
  std::string batch;  // "" = none
  std::map<std::string, std::string> extra_labels;  // the pool's pod_selector labels
};

Json MakePod(const Json& normalized_template, const PodParams& p);
Json MakeTokenSecret(const PodParams& p, const std::string& token);
// The merge patch making the Secret owned by its pod.
Json OwnerPatch(const std::string& pod_name, const std::string& pod_uid);

ListedWorker PodAsWorker(const Json& pod);

}  // namespace tidepool::backends::kube
