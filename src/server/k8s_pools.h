// `tidepool server --k8s-pools NAMESPACE`: pools declared as AgentPool resources
// (agentpool_resource.h, deploy/kubernetes/crd.yaml) in that namespace, reconciled like a
// Kubernetes controller. The cluster is reached in-cluster or through $KUBECONFIG
// (backends/kubernetes/access.h).
//
//   created or spec changed   the pool is declared (Core::DeclarePool); an invalid spec, or one
//                             the core refuses, becomes the resource's Ready=False/Degraded
//                             condition naming the field, never a crash
//   deleted                   the resource carries the finalizer tidepool.dev/drain (added when
//                             first seen), so Kubernetes keeps it while the pool is retired
//                             (Core::RetirePool: queued tasks fail, workers drained and deleted);
//                             once its workers are gone the finalizer is removed and it goes
//   always                    its status subresource is written when it changes (workers by
//                             state, queued, last error, conditions), checked every ~2 s
//
// One thread: list, then watch from the list's resourceVersion in short rounds (listed again
// after 410 Expired, backed off after errors), writing statuses between rounds. At the first
// list the worker records of pools no AgentPool declares are forgotten (Core::ForgetHeldWorkers).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "backends/kubernetes/api.h"
#include "server/agentpool_resource.h"

namespace tidepool::server {

class Core;

inline constexpr char kAgentPoolFinalizer[] = "tidepool.dev/drain";

class AgentPoolController {
 public:
  // Reaches the cluster (in-cluster, else $KUBECONFIG / ~/.kube/config); an error names why not.
  static Result<std::unique_ptr<AgentPoolController>> Make(Core* core, const std::string& ns);
  AgentPoolController(Core* core, std::string ns, std::shared_ptr<backends::kube::Api> api);
  ~AgentPoolController();

  void Start();
  void Stop();

 private:
  struct Known {
    DeclaredPool declared;
    int64_t handled_generation = -1;
    nlohmann::json status;        // as last written (or read)
    nlohmann::json finalizers;    // metadata.finalizers as last seen
    bool deleting = false;
  };

  void Run();
  bool ListAll();  // false on error
  void Handle(const nlohmann::json& object);
  void Gone(const std::string& name);
  void Tend();  // statuses, finalizers of deleted resources
  std::string Path(const std::string& name = "") const;
  bool Pause(std::chrono::milliseconds d);

  Core* core_;
  const std::string ns_;
  std::shared_ptr<backends::kube::Api> api_;
  std::map<std::string, Known> known_;  // by name; only the controller's thread touches it
  std::string rv_;
  bool listed_once_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tidepool::server
