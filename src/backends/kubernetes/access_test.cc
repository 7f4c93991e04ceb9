// Kubeconfig and in-cluster access (access.h) and the API's error classes (api.h), without a
// server: files in a temporary folder, an exec plugin that is a shell script.
#include "backends/kubernetes/access.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "backends/kubernetes/api.h"
#include "common/strings.h"

namespace tidepool::backends::kube {
namespace {

class KubeAccess : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kube-access-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text, int mode = 0600) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    chmod(path.c_str(), mode);
    return path;
  }
  std::string Kubeconfig(const std::string& user_fields, const std::string& extra_cluster = "") {
    return Write("config", R"(apiVersion: v1
kind: Config
current-context: main
clusters:
- name: c1
  cluster:
    server: https://10.1.2.3:6443/
    certificate-authority-data: )" + Base64Encode("CA PEM") + R"(
)" + extra_cluster + R"(
contexts:
- name: main
  context: {cluster: c1, user: u1, namespace: ml}
- name: other
  context: {cluster: c1, user: u1}
users:
- name: u1
  user:
)" + user_fields);
  }
  std::string dir_;
  const Deadline kSoon = std::chrono::steady_clock::now() + std::chrono::seconds(20);
};

TEST_F(KubeAccess, AKubeconfigContextGivesServerCaNamespaceAndToken) {
  std::string path = Kubeconfig("    token: tok-1\n");
  auto a = Access::FromKubeconfig(path, "");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ((*a)->server(), "https://10.1.2.3:6443");
  EXPECT_EQ((*a)->default_namespace(), "ml");
  auto c = (*a)->Current(kSoon);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tls.ca_pem, "CA PEM");
  EXPECT_EQ(c->bearer, "tok-1");
  auto other = Access::FromKubeconfig(path, "other");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ((*other)->default_namespace(), "default");
}

TEST_F(KubeAccess, ClientCertificatesFromDataOrFilesRelativeToTheKubeconfig) {
  Write("client.crt", "CERT PEM");
  std::string path = Kubeconfig("    client-certificate: client.crt\n    client-key-data: " + Base64Encode("KEY PEM") + "\n");
  auto a = Access::FromKubeconfig(path, "");
  ASSERT_TRUE(a.ok()) << a.status().message();
  auto c = (*a)->Current(kSoon);
  EXPECT_EQ(c->tls.client_cert_pem, "CERT PEM");
  EXPECT_EQ(c->tls.client_key_pem, "KEY PEM");
  EXPECT_EQ(c->bearer, "");
}

TEST_F(KubeAccess, ATokenFileIsReadAgainWhenItChanges) {
  std::string tf = Write("token", "first\n");
  auto a = Access::FromKubeconfig(Kubeconfig("    tokenFile: token\n"), "");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ((*a)->Current(kSoon)->bearer, "first");
  Write("token.new", "second-and-longer\n");
  std::filesystem::rename(dir_ + "/token.new", tf);  // as kubelet rotates it
  EXPECT_EQ((*a)->Current(kSoon)->bearer, "second-and-longer");
}

TEST_F(KubeAccess, AnExecPluginIsAskedOnceUntilItsCredentialExpiresOrIsRefused) {
  Write("count", "");
  Write("plugin.sh", "#!/bin/sh\necho x >> \"$(dirname \"$0\")/count\"\n"
                     "case \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) exit 3;; esac\n"
                     "echo '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", "
                     "\"status\": {\"token\": \"'$TOKEN_PREFIX'-'$(wc -l < \"$(dirname \"$0\")/count\")'\", "
                     "\"expirationTimestamp\": \"2999-01-01T00:00:00Z\"}}'\n",
        0755);
  auto a = Access::FromKubeconfig(Kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
                                             "      command: ./plugin.sh\n      env: [{name: TOKEN_PREFIX, value: ex}]\n"),
                                  "");
  ASSERT_TRUE(a.ok()) << a.status().message();
  auto c = (*a)->Current(kSoon);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->bearer, "ex-1");
  EXPECT_EQ((*a)->Current(kSoon)->bearer, "ex-1");  // not expired: not asked again
  (*a)->Refused();                                  // a 401
  EXPECT_EQ((*a)->Current(kSoon)->bearer, "ex-2");
}

TEST_F(KubeAccess, AnExecPluginThatFailsIsAnAuthErrorWithItsStderr) {
  Write("plugin.sh", "#!/bin/sh\necho 'token expired, run login' >&2\nexit 1\n", 0755);
  auto a = Access::FromKubeconfig(
      Kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: ./plugin.sh\n"), "");
  ASSERT_TRUE(a.ok());
  auto c = (*a)->Current(kSoon);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(ClassOf(c.status()), ErrorClass::kAuth);
  EXPECT_NE(c.status().message().find("token expired, run login"), std::string::npos) << c.status().message();
}

TEST_F(KubeAccess, BrokenKubeconfigsAreNamedWithTheirFault) {
  auto missing = Access::FromKubeconfig(dir_ + "/nope", "");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir_ + "/nope"), std::string::npos);
  auto ctx = Access::FromKubeconfig(Kubeconfig("    token: t\n"), "staging");
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("no context \"staging\""), std::string::npos);
  std::string plain = Write("plain", "clusters: [{name: c, cluster: {server: 'http://1.2.3.4'}}]\n"
                                     "contexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x\n");
  auto http = Access::FromKubeconfig(plain, "");
  ASSERT_FALSE(http.ok());
  EXPECT_NE(http.status().message().find("is not https://"), std::string::npos) << http.status().message();
  auto half = Access::FromKubeconfig(Kubeconfig("    client-certificate-data: " + Base64Encode("C") + "\n"), "");
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.status().message().find("needs its key"), std::string::npos);
  auto bad_b64 = Access::FromKubeconfig(Kubeconfig("    client-key-data: '!!'\n    client-certificate-data: Qw==\n"), "");
  ASSERT_FALSE(bad_b64.ok());
  EXPECT_NE(bad_b64.status().message().find("client-key-data"), std::string::npos);
  EXPECT_EQ(bad_b64.status().message().find("!!"), std::string::npos);  // a secret's text is not echoed
}

TEST_F(KubeAccess, InClusterReadsTheServiceAccountFolder) {
  Write("ca.crt", "SA CA");
  Write("token", "sa-token");
  Write("namespace", "jobs\n");
  setenv("TIDEPOOL_K8S_SERVICEACCOUNT_DIR", dir_.c_str(), 1);
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto a = Access::Resolve("", "");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("TIDEPOOL_K8S_SERVICEACCOUNT_DIR");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ((*a)->server(), "https://10.96.0.1:443");
  EXPECT_EQ((*a)->default_namespace(), "jobs");
  EXPECT_EQ((*a)->Current(kSoon)->bearer, "sa-token");
  EXPECT_EQ((*a)->Current(kSoon)->tls.ca_pem, "SA CA");
}

TEST(KubeApiErrors, TheApiServersAnswersGetTheirClasses) {
  auto status = [](int code, const std::string& reason, const std::string& message) {
    return ApiError(code, R"({"kind": "Status", "code": )" + std::to_string(code) + R"(, "reason": ")" + reason +
                              R"(", "message": ")" + message + R"("})");
  };
  Status quota = status(403, "Forbidden", "pods \\\"p\\\" is forbidden: exceeded quota: q, requested: pods=1");
  EXPECT_EQ(ClassOf(quota), ErrorClass::kQuota);
  EXPECT_EQ(quota.message(), "kubernetes: pods \"p\" is forbidden: exceeded quota: q, requested: pods=1 (403 Forbidden)");
  EXPECT_EQ(ClassOf(status(403, "Forbidden", "pods is forbidden: User \\\"x\\\" cannot create")), ErrorClass::kAuth);
  EXPECT_EQ(ClassOf(status(422, "Invalid", "Pod \\\"p\\\" is invalid")), ErrorClass::kBadRequest);
  EXPECT_EQ(status(404, "NotFound", "namespaces \\\"x\\\" not found").code(), StatusCode::kNotFound);
  EXPECT_EQ(status(409, "AlreadyExists", "exists").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(status(409, "Conflict", "modified").code(), StatusCode::kAborted);
  EXPECT_TRUE(IsExpired(status(410, "Expired", "too old resource version")));
  EXPECT_FALSE(IsExpired(status(409, "Conflict", "modified")));
  EXPECT_EQ(ClassOf(status(503, "ServiceUnavailable", "down")), ErrorClass::kTransient);
  EXPECT_EQ(ApiError(502, "<html>bad gateway</html>").message(), "kubernetes: <html>bad gateway</html> (502)");
}

}  // namespace
}  // namespace tidepool::backends::kube
