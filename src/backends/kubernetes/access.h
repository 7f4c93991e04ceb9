// How Tidepool reaches a Kubernetes API server, the way client-go does:
//
//   in-cluster   $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the service account's token and
//                CA under /var/run/secrets/kubernetes.io/serviceaccount (another folder with
//                $TIDEPOOL_K8S_SERVICEACCOUNT_DIR, for a server run outside a pod). The token file
//                is read again when it changes (kubelet rotates it), and after any 401.
//   kubeconfig   a file (the pool's `kubeconfig`, else $KUBECONFIG's first entry, else
//                ~/.kube/config), its current context or a named one: the cluster's server, its CA
//                (certificate-authority[-data]) or insecure-skip-tls-verify, and the user's
//                token, tokenFile, client certificate and key ([-data]), or an exec credential
//                plugin (client.authentication.k8s.io ExecCredential: its token or certificate,
//                kept until its expirationTimestamp, asked again after a 401).
//
// Every request goes over HTTPS verified with the cluster's CA (http:// servers are refused).
// Errors name the file and the field that was wrong. Secrets (tokens, keys) never appear in
// messages.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backends/toolkit/http_client.h"
#include "common/status.h"

namespace tidepool::backends::kube {

// What one request presents: the TLS settings (CA, client certificate) and a bearer token.
struct Credentials {
  TlsSettings tls;
  std::string bearer;  // "" = none (client certificate only)
};

struct ExecPlugin {
  std::string command;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;
  std::string api_version;  // client.authentication.k8s.io/v1 or v1beta1
};

class Access {
 public:
  // The pool's `kubeconfig` and `context` fields ("" = defaults): kubeconfig when a file is named
  // (or $KUBECONFIG set, or ~/.kube/config exists and no in-cluster environment), else in-cluster.
  static Result<std::shared_ptr<Access>> Resolve(const std::string& kubeconfig, const std::string& context);
  static Result<std::shared_ptr<Access>> InCluster();
  static Result<std::shared_ptr<Access>> FromKubeconfig(const std::string& path, const std::string& context);

  const std::string& server() const { return server_; }        // https://host:port
  const std::string& default_namespace() const { return namespace_; }  // the context's or the SA's, or "default"
  const std::string& source() const { return source_; }        // "in-cluster" or "kubeconfig PATH (context C)"

  // What the next request presents (reads a rotated token file, runs the exec plugin when its
  // credential expired).
  Result<Credentials> Current(std::chrono::steady_clock::time_point deadline);
  // The API server answered 401: the next Current() reads the token file and asks the exec
  // plugin again.
  void Refused();

 private:
  Status ReadTokenFile();  // mu_ held
  Status RunExec(std::chrono::steady_clock::time_point deadline);  // mu_ held

  std::string server_;
  std::string namespace_ = "default";
  std::string source_;
  std::mutex mu_;
  TlsSettings tls_;               // CA and a static client certificate
  std::string token_;             // a static token, or the token file's / exec plugin's last
  std::string token_file_;        // re-read when its mtime or size changes
  int64_t token_file_stamp_ = -1;
  std::optional<ExecPlugin> exec_;
  std::string exec_cert_pem_, exec_key_pem_;
  std::optional<int64_t> exec_expires_ms_;  // Unix ms
  bool exec_fresh_ = false;       // the plugin has answered and its answer has not expired
};

}  // namespace tidepool::backends::kube
