// The `kubernetes` backend: each worker is one pod (pods.h), made from the pool's pod template in
// the pool's namespace, through the API server reached in-cluster or by kubeconfig (access.h).
//
//   Create       the token Secret, then the pod, then the Secret made owned by the pod. A pod
//                that cannot be made deletes its Secret; the API server's message is the error
//                (403 exceeded quota: quota; 403 RBAC: auth; 422 invalid pod: bad_request; a
//                missing namespace: bad_request).
//   CreateBatch  N pods with one tidepool.dev/batch label; if any fails, those made are deleted.
//   Delete       the pod (graceful) and its Secret; either already gone is fine. Waits for a
//                Create of the same name still running.
//   List         pods with the pool's label (paged); pods.h says which are workers. Secrets of
//                the pool whose pod does not exist (a server stopped between the two creates)
//                are deleted as they are found.
//   Watch        one thread watching the pool's pods from the list's resourceVersion (resumed
//                after the stream ends, listed again after 410 Expired, backed off after an
//                error): a pod deleted, terminating, finished or failing to start tells the pool
//                to list now.
//
// Config block (Velda's fields): kubeconfig, context, namespace (default: the context's or the
// service account's), name_prefix (default: the pool's name as a DNS label), pod_template
// (inline) or pod_template_path (a YAML or JSON file, read once when the pool starts),
// pod_selector (k=v[,k=v]: labels every pod gets and List selects on too).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.h"
#include "backends/kubernetes/api.h"
#include "backends/toolkit/name_locks.h"

namespace tidepool::backends::kube {

struct KubeOptions {
  std::string ns;
  std::string name_prefix;
  Json pod_template;  // normalized (pods.h)
  std::map<std::string, std::string> selector_labels;
  std::string pool;
  int slots = 1;
};

class KubernetesBackend : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> Make(const config::BackendConfig& cfg, const BackendContext& ctx);
  KubernetesBackend(std::shared_ptr<Api> api, KubeOptions opts);
  ~KubernetesBackend() override;

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override;
  Status Delete(const std::string& name, Deadline deadline) override;
  Result<std::vector<ListedWorker>> List(Deadline deadline) override;
  std::chrono::milliseconds CallTimeout() const override { return std::chrono::seconds(60); }
  void Abandon() override;
  void Watch(std::function<void()> changed) override;
  bool SupportsBatch() const override { return true; }
  Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count, const std::string& label,
                                               Deadline deadline) override;

  // The label selector List and the watch use.
  std::string Selector() const;

 private:
  Result<std::string> CreateOne(const CreateRequest& request, const std::string& batch, Deadline deadline);
  Status DeleteObjects(const std::string& name, Deadline deadline);
  std::string NewName();
  std::string PodsPath() const;
  std::string SecretsPath() const;
  void WatchLoop();
  // Waits `d` or until stopping; false when stopping.
  bool Pause(std::chrono::milliseconds d);

  std::shared_ptr<Api> api_;
  KubeOptions opts_;
  NameLocks name_locks_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                // guarded by mu_
  std::function<void()> changed_;       // set once by Watch
  std::thread watcher_;
};

// "a=b,c=d" as labels; an error naming the term that is not key=value.
Result<std::map<std::string, std::string>> ParseSelectorLabels(const std::string& selector);

}  // namespace tidepool::backends::kube
