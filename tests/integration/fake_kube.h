// The FAKE Kubernetes API server (tests/fakes/kube, Python) as a test fixture: started with pods
// run as local processes, a bearer-token user, its admin API, and a kubeconfig for it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace tidepool::testing {

class FakeKube {
 public:
  struct Options {
    std::string kubelet = "auto";  // auto: created pods run at once; manual: they stay Pending
    bool run_pods = true;          // Running pods run their command as a local process
    std::string address = "127.0.0.1";
    std::vector<std::string> extra_args;
    bool remove_dir = false;  // `dir` is removed when it stops
  };
  // `dir`: scratch space (certificates, the kubeconfig, pod logs).
  FakeKube(const std::string& dir, Options options);
  explicit FakeKube(const std::string& dir) : FakeKube(dir, Options()) {}
  ~FakeKube();  // stops it (its pods' processes are stopped with it)

  const std::string& error() const { return error_; }  // why it is not running ("" = it is)
  const std::string& url() const { return url_; }
  const std::string& ca_path() const { return ca_; }
  static constexpr const char* kToken = "tidepool-test-token";
  static constexpr const char* kUser = "tester";

  // A kubeconfig for the token user, context "fake", default namespace `ns`.
  std::string Kubeconfig(const std::string& ns = "default") const;
  // The admin API (/fake/...): the JSON answer; a failed call fails the test and answers null.
  nlohmann::json Admin(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr) const;
  // The Kubernetes API as the token user: the JSON answer (null on an error, which fails the test).
  nlohmann::json Api(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr) const;
  nlohmann::json Get(const std::string& path) const { return Api("GET", path); }
  // Pods of `ns` (items), optionally by label selector.
  std::vector<nlohmann::json> Pods(const std::string& ns = "default", const std::string& selector = "") const;
  std::string Stderr() const { return proc_ ? proc_->Stderr() : ""; }

 private:
  nlohmann::json Call(const std::string& method, const std::string& path, const nlohmann::json& body, bool auth) const;

  std::string dir_;
  bool remove_dir_ = false;
  std::string error_, url_, ca_;
  std::unique_ptr<Background> proc_;
};

}  // namespace tidepool::testing
