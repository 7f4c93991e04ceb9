#include "fake_kube.h"

#include <csignal>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "backends/toolkit/http_client.h"

namespace tidepool::testing {

FakeKube::FakeKube(const std::string& dir, Options o) : dir_(dir), remove_dir_(o.remove_dir) {
  std::string script = SourceDir() + "/tests/fakes/kube/fake_apiserver.py";
  std::vector<std::string> argv = {"python3", script, "--address", o.address, "--token",
                                   std::string(kUser) + "=" + kToken, "--kubelet", o.kubelet, "--grace-scale", "0.05",
                                   "--tls-dir", dir + "/fake-kube-tls", "--pod-log-dir", dir + "/pod-logs"};
  if (o.run_pods) argv.push_back("--run-pods");
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  const char* path = std::getenv("PATH");
  proc_ = std::make_unique<Background>(argv, std::map<std::string, std::string>{{"PATH", path ? path : "/usr/bin:/bin"},
                                                                                {"HOME", dir}},
                                       dir);
  bool up = WaitFor([&] { return proc_->Stdout().find('\n') != std::string::npos || !proc_->Running(); }, 60s);
  std::string line = proc_->Stdout();
  nlohmann::json hello = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
  if (!up || !hello.is_object() || !hello.contains("url")) {
    error_ = "the fake Kubernetes API server did not start: " + proc_->Stderr();
    return;
  }
  url_ = hello["url"];
  ca_ = hello["ca"];
}

FakeKube::~FakeKube() {
  if (proc_) {
    proc_->Signal(SIGTERM);  // it stops its pods' processes first
    proc_->Wait(30s);
  }
  if (remove_dir_) std::filesystem::remove_all(dir_);
}

std::string FakeKube::Kubeconfig(const std::string& ns) const {
  std::string path = dir_ + "/kubeconfig-" + ns;
  WriteAll(path, "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                 "clusters:\n- name: fake\n  cluster:\n    server: " + url_ + "\n    certificate-authority: " + ca_ + "\n"
                 "contexts:\n- name: fake\n  context: {cluster: fake, user: tester, namespace: " + ns + "}\n"
                 "users:\n- name: tester\n  user: {token: " + kToken + "}\n");
  return path;
}

nlohmann::json FakeKube::Call(const std::string& method, const std::string& path, const nlohmann::json& body, bool auth) const {
  static backends::HttpClient http;
  backends::HttpRequest req;
  req.method = method;
  req.url = url_ + path;
  req.tls.ca_pem = ReadAll(ca_);
  req.deadline = std::chrono::steady_clock::now() + 30s;
  req.headers.emplace_back("Accept", "application/json");
  if (auth) req.headers.emplace_back("Authorization", std::string("Bearer ") + kToken);
  if (!body.is_null()) {
    req.body = body.dump();
    req.headers.emplace_back("Content-Type", "application/json");
  }
  auto resp = http.Do(req);
  if (!resp.ok() || resp->status >= 300) {
    ADD_FAILURE() << method << " " << path << ": " << (resp.ok() ? std::to_string(resp->status) + " " + resp->body
                                                                 : resp.status().message());
    return nullptr;
  }
  return nlohmann::json::parse(resp->body, nullptr, false);
}

nlohmann::json FakeKube::Admin(const std::string& method, const std::string& path, const nlohmann::json& body) const {
  return Call(method, path, body, false);
}

nlohmann::json FakeKube::Api(const std::string& method, const std::string& path, const nlohmann::json& body) const {
  return Call(method, path, body, true);
}

std::vector<nlohmann::json> FakeKube::Pods(const std::string& ns, const std::string& selector) const {
  nlohmann::json list = Get("/api/v1/namespaces/" + ns + "/pods" +
                            (selector.empty() ? "" : "?labelSelector=" + backends::UrlEscape(selector)));
  std::vector<nlohmann::json> out;
  if (list.is_object() && list.contains("items")) {
    for (auto& p : list["items"]) out.push_back(p);
  }
  return out;
}

}  // namespace tidepool::testing
