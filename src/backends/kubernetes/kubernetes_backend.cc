// KubernetesBackend: pods as workers (kubernetes_backend.h).
#include "backends/kubernetes/kubernetes_backend.h"

#include <set>

#include <fmt/format.h>

#include "backends/kubernetes/pods.h"
#include "common/random.h"
#include "common/strings.h"

namespace tidepool::backends::kube {

namespace {

// Kubernetes' own generateName alphabet: no vowels (no words), no look-alikes.
constexpr char kNameChars[] = "bcdfghjklmnpqrstvwxz2456789";

Status Wrap(const Status& s, const std::string& what) {
  if (s.ok()) return s;
  std::string m = s.message();
  const std::string tag = "kubernetes: ";
  if (m.rfind(tag, 0) == 0) m = m.substr(tag.size());
  return Status(s.code(), fmt::format("kubernetes: {}: {}", what, m));
}

}  // namespace

Result<std::map<std::string, std::string>> ParseSelectorLabels(const std::string& selector) {
  std::map<std::string, std::string> labels;
  for (const std::string& term : Split(selector, ',')) {
    std::string t(Trim(term));
    if (t.empty()) continue;
    auto eq = t.find('=');
    std::string k(Trim(t.substr(0, eq == std::string::npos ? t.size() : eq)));
    std::string v = eq == std::string::npos ? "" : std::string(Trim(t.substr(t[eq + 1] == '=' ? eq + 2 : eq + 1)));
    if (eq == std::string::npos || k.empty() || v.empty() || k.back() == '!' || v.find_first_of("=!() ") != std::string::npos) {
      return InvalidArgument(fmt::format("pod_selector: \"{}\" is not key=value (pods get these labels, so only "
                                         "equality terms are allowed)",
                                         t));
    }
    labels[k] = v;
  }
  return labels;
}

KubernetesBackend::KubernetesBackend(std::shared_ptr<Api> api, KubeOptions opts)
    : api_(std::move(api)), opts_(std::move(opts)) {}

KubernetesBackend::~KubernetesBackend() {
  Abandon();
  if (watcher_.joinable()) watcher_.join();
}

std::string KubernetesBackend::Selector() const {
  std::string s = fmt::format("{}={}", kPoolLabel, PoolLabelValue(opts_.pool));
  for (const auto& [k, v] : opts_.selector_labels) s += fmt::format(",{}={}", k, v);
  return s;
}

std::string KubernetesBackend::PodsPath() const { return "/api/v1/namespaces/" + UrlEscape(opts_.ns) + "/pods"; }
std::string KubernetesBackend::SecretsPath() const { return "/api/v1/namespaces/" + UrlEscape(opts_.ns) + "/secrets"; }

std::string KubernetesBackend::NewName() {
  std::string bytes = RandomBytes(5);
  std::string suffix;
  for (unsigned char b : bytes) suffix += kNameChars[b % (sizeof(kNameChars) - 1)];
  return opts_.name_prefix + "-" + suffix;
}

Result<std::string> KubernetesBackend::Create(const CreateRequest& request, Deadline deadline) {
  return CreateOne(request, "", deadline);
}

Result<std::string> KubernetesBackend::CreateOne(const CreateRequest& request, const std::string& batch, Deadline deadline) {
  for (int attempt = 0;; ++attempt) {
    PodParams p;
    p.name = NewName();
    p.ns = opts_.ns;
    p.pool = request.pool.empty() ? opts_.pool : request.pool;
    p.server_address = request.server_address;
    p.slots = request.slots > 0 ? request.slots : opts_.slots;
    p.batch = batch;
    p.extra_labels = opts_.selector_labels;
    auto lock = name_locks_.For(p.name);
    std::lock_guard hold(*lock);
    auto secret = api_->Post(SecretsPath(), MakeTokenSecret(p, request.token_for(p.name)), deadline);
    if (!secret.ok()) {
      if (secret.status().code() == StatusCode::kAlreadyExists && attempt < 3) continue;  // a name taken: another
      return Wrap(secret.status(), "create secret " + p.name);
    }
    auto pod = api_->Post(PodsPath(), MakePod(opts_.pod_template, p), deadline);
    if (!pod.ok()) {
      Status failed = pod.status();
      // The Secret must not outlive the pod it was made for. (A pod made despite a cut answer is
      // then an unknown worker to the next list, deleted after kill_unknown_after.)
      (void)api_->Delete(SecretsPath() + "/" + p.name, nullptr, deadline);
      if (failed.code() == StatusCode::kAlreadyExists && attempt < 3) continue;
      return Wrap(failed, "create pod " + p.name);
    }
    std::string uid = (*pod)["metadata"].value("uid", "");
    if (!uid.empty()) {
      auto owned = api_->MergePatch(SecretsPath() + "/" + p.name, OwnerPatch(p.name, uid), deadline);
      // Not fatal: List deletes a Secret whose pod is gone, owned or not.
      (void)owned;
    }
    return p.name;
  }
}

Result<std::vector<std::string>> KubernetesBackend::CreateBatch(const CreateRequest& request, int count,
                                                                const std::string& label, Deadline deadline) {
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) {
    auto name = CreateOne(request, label.empty() ? "batch" : PoolLabelValue(label), deadline);
    if (!name.ok()) {
      for (const std::string& made : names) (void)DeleteObjects(made, deadline);
      return Status(name.status().code(), fmt::format("{} (pod {} of {}; the {} made are deleted)", name.status().message(),
                                                      i + 1, count, names.size()));
    }
    names.push_back(*name);
  }
  return names;
}

Status KubernetesBackend::DeleteObjects(const std::string& name, Deadline deadline) {
  auto pod = api_->Delete(PodsPath() + "/" + UrlEscape(name), nullptr, deadline);
  if (!pod.ok() && pod.status().code() != StatusCode::kNotFound) return Wrap(pod.status(), "delete pod " + name);
  auto secret = api_->Delete(SecretsPath() + "/" + UrlEscape(name), nullptr, deadline);
  if (!secret.ok() && secret.status().code() != StatusCode::kNotFound) {
    return Wrap(secret.status(), "delete secret " + name);
  }
  return Status::Ok();
}

Status KubernetesBackend::Delete(const std::string& name, Deadline deadline) {
  auto lock = name_locks_.For(name);
  std::lock_guard hold(*lock);
  return DeleteObjects(name, deadline);
}

Result<std::vector<ListedWorker>> KubernetesBackend::List(Deadline deadline) {
  const std::string selector = Selector();
  auto pods = api_->List(PodsPath(), selector, deadline);
  if (!pods.ok()) return Wrap(pods.status(), "list pods");
  std::vector<ListedWorker> out;
  std::set<std::string> names;
  for (const Json& pod : pods->items) {
    out.push_back(PodAsWorker(pod));
    names.insert(out.back().name);
  }
  // A finished pod (its agent exited, or it was evicted) is no worker and never will be again:
  // it goes, with its Secret, once it was listed with its reason.
  for (const ListedWorker& w : out) {
    if (w.state == WorkerState::kStopped) (void)Delete(w.name, deadline);
  }
  // Secrets of the pool without their pod: a Create cut between its two requests. Listed after
  // the pods, so a Secret whose pod was made meanwhile is young and left for the next list.
  auto secrets = api_->List(SecretsPath(), fmt::format("{}={}", kPoolLabel, PoolLabelValue(opts_.pool)), deadline);
  if (secrets.ok()) {
    for (const Json& s : secrets->items) {
      const Json meta = s.value("metadata", Json::object());
      std::string name = meta.value("name", "");
      if (name.empty() || names.count(name)) continue;
      auto lock = name_locks_.For(name);
      std::unique_lock hold(*lock, std::try_to_lock);
      if (!hold.owns_lock()) continue;  // its Create is running
      auto pod = api_->Get(PodsPath() + "/" + UrlEscape(name), deadline);
      if (!pod.ok() && pod.status().code() == StatusCode::kNotFound) {
        (void)api_->Delete(SecretsPath() + "/" + UrlEscape(name), nullptr, deadline);
      }
    }
  }
  return out;
}

void KubernetesBackend::Abandon() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  api_->http().Abandon();
}

void KubernetesBackend::Watch(std::function<void()> changed) {
  std::lock_guard lock(mu_);
  if (stopping_ || watcher_.joinable()) return;
  changed_ = std::move(changed);
  watcher_ = std::thread([this] { WatchLoop(); });
}

bool KubernetesBackend::Pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void KubernetesBackend::WatchLoop() {
  const std::string selector = Selector();
  std::string rv;
  std::chrono::milliseconds backoff(500);
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (rv.empty()) {
      // Where to watch from: the collection's resourceVersion now (one item fetched).
      auto head = api_->Get(PodsPath() + "?limit=1&labelSelector=" + UrlEscape(selector),
                            std::chrono::steady_clock::now() + std::chrono::seconds(30));
      if (!head.ok()) {
        if (!Pause(backoff)) return;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
        continue;
      }
      rv = (*head).value("metadata", Json::object()).value("resourceVersion", "");
      changed_();  // events may have been missed while there was no watch
    }
    auto end = api_->Watch(
        PodsPath(), selector, &rv,
        [this](const std::string& type, const Json& pod) {
          if (type == "BOOKMARK") return true;
          ListedWorker w = PodAsWorker(pod);
          if (type == "DELETED" || !IsWorker(w.state) || w.failing) changed_();
          return true;
        },
        std::chrono::steady_clock::now() + std::chrono::minutes(5));
    if (!end.ok()) {
      if (!Pause(backoff)) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
      continue;
    }
    backoff = std::chrono::milliseconds(500);
    if (*end == WatchEnd::kStopped) return;
    if (*end == WatchEnd::kExpired) rv.clear();
  }
}

}  // namespace tidepool::backends::kube
