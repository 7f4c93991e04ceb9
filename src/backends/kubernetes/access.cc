// Access: in-cluster and kubeconfig credentials (access.h).
#include "backends/kubernetes/access.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/toolkit/subprocess.h"
#include "common/fs.h"
#include "common/strings.h"
#include "common/time.h"

extern char** environ;

namespace tidepool::backends::kube {

namespace {

constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int64_t FileStamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec + static_cast<int64_t>(st.st_size) * 7919;
}

std::string RelativeTo(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return (std::filesystem::path(base_dir) / path).string();
}

std::string Str(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap()) return "";
  const YAML::Node v = n[key];
  return v && v.IsScalar() ? v.as<std::string>() : "";
}

// The entry of a kubeconfig list ("clusters", "users", "contexts") called `name`: its inner map.
YAML::Node Named(const YAML::Node& root, const char* list, const char* inner, const std::string& name) {
  const YAML::Node l = root[list];
  if (!l || !l.IsSequence()) return YAML::Node();
  for (const auto& e : l) {
    if (e.IsMap() && Str(e, "name") == name) return e[inner];
  }
  return YAML::Node();
}

// A PEM from the kubeconfig: the -data field (base64) or the file field (relative to the
// kubeconfig's folder). `what` names it for errors.
Result<std::string> Pem(const YAML::Node& n, const char* data_key, const char* file_key, const std::string& base,
                        const std::string& what) {
  if (std::string data = Str(n, data_key); !data.empty()) {
    auto pem = Base64Decode(data);
    if (!pem.ok()) return InvalidArgument(fmt::format("{}: {}: {}", what, data_key, pem.status().message()));
    return *pem;
  }
  if (std::string file = Str(n, file_key); !file.empty()) {
    auto pem = ReadFile(RelativeTo(base, file));
    if (!pem.ok()) return InvalidArgument(fmt::format("{}: {} {}: {}", what, file_key, file, pem.status().message()));
    return *pem;
  }
  return std::string();
}

Status CheckHttps(const std::string& server, const std::string& where) {
  if (server.rfind("https://", 0) != 0) {
    return InvalidArgument(fmt::format("{}: the cluster's server \"{}\" is not https://: Tidepool speaks to Kubernetes "
                                       "over TLS only",
                                       where, server));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<Access>> Access::Resolve(const std::string& kubeconfig, const std::string& context) {
  if (!kubeconfig.empty()) return FromKubeconfig(kubeconfig, context);
  if (std::getenv("KUBERNETES_SERVICE_HOST") && context.empty()) return InCluster();
  std::string env = EnvOr("KUBECONFIG", "");
  if (!env.empty()) return FromKubeconfig(Split(env, ':').front(), context);
  std::string home = EnvOr("HOME", "/root");
  return FromKubeconfig(home + "/.kube/config", context);
}

Result<std::shared_ptr<Access>> Access::InCluster() {
  std::string host = EnvOr("KUBERNETES_SERVICE_HOST", "");
  std::string port = EnvOr("KUBERNETES_SERVICE_PORT", "443");
  if (host.empty()) {
    return FailedPrecondition("not in a Kubernetes pod: $KUBERNETES_SERVICE_HOST is not set (set `kubeconfig` to reach a "
                              "cluster from outside)");
  }
  std::string dir = EnvOr("TIDEPOOL_K8S_SERVICEACCOUNT_DIR", kServiceAccountDir);
  auto a = std::make_shared<Access>();
  a->server_ = fmt::format("https://{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host, port);
  a->source_ = "in-cluster (" + dir + ")";
  auto ca = ReadFile(dir + "/ca.crt");
  if (!ca.ok()) return InvalidArgument(fmt::format("in-cluster: {}/ca.crt: {}", dir, ca.status().message()));
  a->tls_.ca_pem = *ca;
  a->token_file_ = dir + "/token";
  if (auto ns = ReadFile(dir + "/namespace"); ns.ok() && !Trim(*ns).empty()) a->namespace_ = std::string(Trim(*ns));
  std::lock_guard lock(a->mu_);
  if (Status s = a->ReadTokenFile(); !s.ok()) return s;
  return a;
}

Result<std::shared_ptr<Access>> Access::FromKubeconfig(const std::string& path, const std::string& context) {
  auto text = ReadFile(path);
  if (!text.ok()) return InvalidArgument(fmt::format("kubeconfig {}: {}", path, text.status().message()));
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("kubeconfig {}: not YAML: {}", path, e.what()));
  }
  if (!root.IsMap()) return InvalidArgument(fmt::format("kubeconfig {}: not a kubeconfig (no map at the top)", path));
  const std::string base = std::filesystem::path(path).parent_path().string();
  std::string ctx_name = context.empty() ? Str(root, "current-context") : context;
  if (ctx_name.empty()) return InvalidArgument(fmt::format("kubeconfig {}: no current-context and no context named", path));
  const YAML::Node ctx = Named(root, "contexts", "context", ctx_name);
  if (!ctx || !ctx.IsMap()) return InvalidArgument(fmt::format("kubeconfig {}: no context \"{}\"", path, ctx_name));
  const std::string where = fmt::format("kubeconfig {} (context {})", path, ctx_name);
  const std::string cluster_name = Str(ctx, "cluster");
  const YAML::Node cluster = Named(root, "clusters", "cluster", cluster_name);
  if (!cluster || !cluster.IsMap()) return InvalidArgument(fmt::format("{}: no cluster \"{}\"", where, cluster_name));

  auto a = std::make_shared<Access>();
  a->source_ = "kubeconfig " + path + " (context " + ctx_name + ")";
  a->server_ = Str(cluster, "server");
  while (!a->server_.empty() && a->server_.back() == '/') a->server_.pop_back();
  if (Status s = CheckHttps(a->server_, where + ": cluster " + cluster_name); !s.ok()) return s;
  if (std::string ns = Str(ctx, "namespace"); !ns.empty()) a->namespace_ = ns;
  auto ca = Pem(cluster, "certificate-authority-data", "certificate-authority", base, where + ": cluster " + cluster_name);
  if (!ca.ok()) return ca.status();
  a->tls_.ca_pem = *ca;
  a->tls_.insecure = Str(cluster, "insecure-skip-tls-verify") == "true";

  const std::string user_name = Str(ctx, "user");
  const YAML::Node user = Named(root, "users", "user", user_name);
  if (!user_name.empty() && !user) return InvalidArgument(fmt::format("{}: no user \"{}\"", where, user_name));
  const std::string uwhere = where + ": user " + user_name;
  auto cert = Pem(user, "client-certificate-data", "client-certificate", base, uwhere);
  if (!cert.ok()) return cert.status();
  auto key = Pem(user, "client-key-data", "client-key", base, uwhere);
  if (!key.ok()) return key.status();
  if (cert->empty() != key->empty()) {
    return InvalidArgument(fmt::format("{}: a client certificate needs its key, and a key its certificate", uwhere));
  }
  a->tls_.client_cert_pem = *cert;
  a->tls_.client_key_pem = *key;
  a->token_ = Str(user, "token");
  if (std::string tf = Str(user, "tokenFile"); !tf.empty() && a->token_.empty()) a->token_file_ = RelativeTo(base, tf);
  if (user && user["exec"] && user["exec"].IsMap()) {
    const YAML::Node ex = user["exec"];
    ExecPlugin p;
    p.command = Str(ex, "command");
    if (p.command.empty()) return InvalidArgument(fmt::format("{}: exec: no command", uwhere));
    // A relative command with a slash is relative to the kubeconfig (client-go does the same).
    if (p.command.find('/') != std::string::npos) p.command = RelativeTo(base, p.command);
    p.api_version = Str(ex, "apiVersion");
    if (p.api_version != "client.authentication.k8s.io/v1" && p.api_version != "client.authentication.k8s.io/v1beta1") {
      return InvalidArgument(fmt::format("{}: exec: apiVersion \"{}\" (want client.authentication.k8s.io/v1 or v1beta1)",
                                         uwhere, p.api_version));
    }
    if (ex["args"] && ex["args"].IsSequence()) {
      for (const auto& arg : ex["args"]) p.args.push_back(arg.as<std::string>());
    }
    if (ex["env"] && ex["env"].IsSequence()) {
      for (const auto& e : ex["env"]) p.env.emplace_back(Str(e, "name"), Str(e, "value"));
    }
    a->exec_ = std::move(p);
  }
  std::lock_guard lock(a->mu_);
  if (!a->token_file_.empty()) {
    if (Status s = a->ReadTokenFile(); !s.ok()) return s;
  }
  return a;
}

Status Access::ReadTokenFile() {
  int64_t stamp = FileStamp(token_file_);
  if (stamp == token_file_stamp_ && stamp != -1) return Status::Ok();
  auto token = ReadFile(token_file_);
  if (!token.ok()) return Unavailable(fmt::format("{}: token file {}: {}", source_, token_file_, token.status().message()));
  token_ = std::string(Trim(*token));
  token_file_stamp_ = stamp;
  if (token_.empty()) return PermissionDenied(fmt::format("{}: token file {} is empty", source_, token_file_));
  return Status::Ok();
}

Status Access::RunExec(std::chrono::steady_clock::time_point deadline) {
  const ExecPlugin& p = *exec_;
  SubprocessSpec spec;
  spec.argv.push_back(p.command);
  spec.argv.insert(spec.argv.end(), p.args.begin(), p.args.end());
  for (char** e = environ; e && *e; ++e) spec.env.emplace_back(*e);
  for (const auto& [k, v] : p.env) spec.env.push_back(k + "=" + v);
  spec.env.push_back(fmt::format(R"(KUBERNETES_EXEC_INFO={{"apiVersion":"{}","kind":"ExecCredential","spec":{{"interactive":false}}}})",
                                 p.api_version));
  spec.deadline = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::minutes(1));
  auto run = RunSubprocess(spec);
  const std::string who = fmt::format("{}: exec credential plugin {}", source_, p.command);
  if (!run.ok()) return Unavailable(fmt::format("{}: {}", who, run.status().message()));
  if (!run->ok()) return PermissionDenied(fmt::format("{}: {}: {}", who, run->Describe(), StderrTail(run->err)));
  nlohmann::json cred = nlohmann::json::parse(run->out, nullptr, false);
  if (cred.is_discarded() || !cred.is_object() || !cred.contains("status") || !cred["status"].is_object()) {
    return PermissionDenied(fmt::format("{}: its output is not an ExecCredential with a status", who));
  }
  const auto& st = cred["status"];
  token_ = st.value("token", "");
  exec_cert_pem_ = st.value("clientCertificateData", "");
  exec_key_pem_ = st.value("clientKeyData", "");
  if (token_.empty() && (exec_cert_pem_.empty() || exec_key_pem_.empty())) {
    return PermissionDenied(fmt::format("{}: its ExecCredential has neither a token nor a client certificate and key", who));
  }
  exec_expires_ms_.reset();
  if (std::string exp = st.value("expirationTimestamp", ""); !exp.empty()) {
    exec_expires_ms_ = ParseRfc3339(exp);
    if (!exec_expires_ms_) return PermissionDenied(fmt::format("{}: expirationTimestamp \"{}\" is not RFC 3339", who, exp));
  }
  exec_fresh_ = true;
  return Status::Ok();
}

Result<Credentials> Access::Current(std::chrono::steady_clock::time_point deadline) {
  std::lock_guard lock(mu_);
  Credentials c;
  c.tls = tls_;
  if (exec_) {
    if (exec_fresh_ && exec_expires_ms_ && NowUnixMs() >= *exec_expires_ms_ - 10000) exec_fresh_ = false;
    if (!exec_fresh_) {
      if (Status s = RunExec(deadline); !s.ok()) return s;
    }
    if (!exec_cert_pem_.empty()) {
      c.tls.client_cert_pem = exec_cert_pem_;
      c.tls.client_key_pem = exec_key_pem_;
    }
  } else if (!token_file_.empty()) {
    if (Status s = ReadTokenFile(); !s.ok()) return s;
  }
  c.bearer = token_;
  return c;
}

void Access::Refused() {
  std::lock_guard lock(mu_);
  exec_fresh_ = false;
  token_file_stamp_ = -1;
}

}  // namespace tidepool::backends::kube
