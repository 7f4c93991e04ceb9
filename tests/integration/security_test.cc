// TLS, mTLS for agents, and users with roles (pools.md, "Security").
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "harness.h"

namespace tidepool::testing {
namespace {

// A CA, a server certificate for 127.0.0.1 and an agent (client) certificate, made with openssl.
struct Certs {
  std::string dir;
  explicit Certs(const std::string& d) : dir(d) {
    std::string script =
        "set -e; cd " + dir + "\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=tidepool-test-ca\n"
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1\n"
        "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext\n"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext\n"
        "openssl req -newkey rsa:2048 -nodes -keyout agent.key -out agent.csr -subj /CN=agent\n"
        "openssl x509 -req -in agent.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out agent.pem -days 1\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 1 -subj /CN=rogue\n";
    ProcResult r = RunProcess({"/bin/sh", "-c", script}, {}, dir);
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  std::string Path(const std::string& f) const { return dir + "/" + f; }
};

std::string TlsConfig(const Certs& c, bool mtls) {
  return "server:\n  tls:\n    cert: " + c.Path("server.pem") + "\n    key: " + c.Path("server.key") + "\n" +
         (mtls ? "    client_ca: " + c.Path("ca.pem") + "\n" : "") + DefaultConfig();
}

TEST(Tls, ClientsAndAgentsTalkTlsAndPlaintextIsRefused) {
  std::string dir = "/tmp/tidepool-tls-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  Certs certs(dir);
  // The server's agents (local backend) trust the CA through the server's environment.
  Server server(TlsConfig(certs, false), {}, "", {{"TIDEPOOL_TLS_CA", certs.Path("ca.pem")}});
  ProcResult ok = RunProcess({BinDir() + "/vrun", "--tls-ca", certs.Path("ca.pem"), "echo", "over-tls"},
                             server.ClientEnv(), server.dir());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "over-tls\n");
  // Plaintext to a TLS server, or TLS trusting the wrong CA: cannot reach it.
  ProcResult plain = server.Vrun({"true"});
  EXPECT_EQ(plain.exit_code, 255);
  ProcResult wrong = RunProcess({BinDir() + "/vrun", "--tls-ca", certs.Path("rogue.pem"), "true"}, server.ClientEnv(),
                                server.dir());
  EXPECT_EQ(wrong.exit_code, 255);
  std::filesystem::remove_all(dir);
}

TEST(Tls, MutualTlsRequiresAgentsToPresentACertificate) {
  std::string dir = "/tmp/tidepool-mtls-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  Certs certs(dir);
  std::string config = "server:\n  tls:\n    cert: " + certs.Path("server.pem") + "\n    key: " + certs.Path("server.key") +
                       "\n    client_ca: " + certs.Path("ca.pem") + "\nagent_pools:\n  - name: hand\n    default: true\n";
  Server server(config);
  std::string join = Lines(server.Tidepool({"pool", "join-token", "hand", "--data-dir", server.data_dir()}).out)[0];
  auto agent = [&](const std::vector<std::string>& tls) {
    std::vector<std::string> argv = {BinDir() + "/tidepool", "agent", "--server", server.address(), "--pool", "hand",
                                     "--name", "box", "--token", join, "--tls-ca", certs.Path("ca.pem")};
    argv.insert(argv.end(), tls.begin(), tls.end());
    return argv;
  };
  // Without a client certificate (or with one the CA did not sign): refused.
  ProcResult bare = RunProcess(agent({}), {}, server.dir(), "", 60s);
  EXPECT_EQ(bare.exit_code, 3) << bare.err;
  EXPECT_NE(bare.err.find("client certificate"), std::string::npos) << bare.err;
  // With its certificate it joins, and a client (no certificate needed) runs through it.
  Background ok(agent({"--tls-cert", certs.Path("agent.pem"), "--tls-key", certs.Path("agent.key")}), {}, server.dir());
  ASSERT_TRUE(WaitFor([&] {
    ProcResult w = RunProcess({BinDir() + "/tidepool", "worker", "list", "--json", "--tls-ca", certs.Path("ca.pem")},
                              server.ClientEnv(), server.dir());
    return w.out.find("\"idle\"") != std::string::npos;
  }));
  ProcResult r = RunProcess({BinDir() + "/vrun", "--tls-ca", certs.Path("ca.pem"), "echo", "mtls"}, server.ClientEnv(),
                            server.dir());
  EXPECT_EQ(r.out, "mtls\n");
  ok.Signal(SIGTERM);
  ok.Wait();
  std::filesystem::remove_all(dir);
}

class Auth : public ::testing::Test {
 protected:
  void SetUp() override {
    users_ = "/tmp/tidepool-users-" + std::to_string(getpid()) + ".yaml";
    WriteAll(users_, "users:\n"
                     "  - { name: alice, token: alice-token-0123456789, roles: { \"*\": submit } }\n"
                     "  - { name: bob, token: bob-token-0123456789, roles: { \"*\": view } }\n"
                     "  - { name: carol, token: carol-token-0123456789, roles: { local: manage } }\n");
    server_ = std::make_unique<Server>("server:\n  auth: { users_file: " + users_ + " }\n" + DefaultConfig());
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(users_);
  }
  ProcResult As(const std::string& user, const std::vector<std::string>& args, const std::string& bin = "tidepool") {
    std::vector<std::string> argv = {BinDir() + "/" + bin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = server_->ClientEnv();
    if (!user.empty()) env["TIDEPOOL_TOKEN"] = user + "-token-0123456789";
    return RunProcess(argv, env, server_->dir());
  }
  std::string users_;
  std::unique_ptr<Server> server_;
};

TEST_F(Auth, EveryCallNeedsAToken) {
  ProcResult r = As("", {"pool", "list"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("needs a token"), std::string::npos) << r.err;
  ProcResult bad = RunProcess({BinDir() + "/tidepool", "pool", "list", "--token", "not-a-user-token"}, server_->ClientEnv(),
                              server_->dir());
  EXPECT_NE(bad.err.find("not accepted"), std::string::npos) << bad.err;
  EXPECT_EQ(As("", {"true"}, "vrun").exit_code, 255);
}

TEST_F(Auth, RolesDecideWhoMaySubmitSeeCancelAndManage) {
  // bob may look but not run.
  EXPECT_EQ(As("bob", {"pool", "list"}).exit_code, 0);
  ProcResult denied = As("bob", {"true"}, "vrun");
  EXPECT_EQ(denied.exit_code, 255);
  EXPECT_NE(denied.err.find("user bob lacks the submit role on pool local"), std::string::npos) << denied.err;
  // alice runs; her tasks are hers.
  ProcResult run = As("alice", {"echo", "hi"}, "vrun");
  EXPECT_EQ(run.out, "hi\n") << run.err;
  std::string id = Lines(As("alice", {"sleep", "60"}, "vbatch").out)[0];
  EXPECT_EQ(Lines(As("alice", {"task", "list"}).out).size(), 3u);  // header + 2 tasks
  EXPECT_EQ(Lines(As("bob", {"task", "list"}).out).size(), 1u);    // only the header
  // Someone else's task is, to bob, no task at all (web_auth_test.cc probes this in full).
  ProcResult peek = As("bob", {"task", "get", id});
  EXPECT_NE(peek.err.find("task not found: " + id), std::string::npos) << peek.err;
  ProcResult cancel = As("bob", {"task", "cancel", id});
  EXPECT_NE(cancel.exit_code, 0);
  EXPECT_NE(cancel.err.find("task not found: " + id), std::string::npos) << cancel.err;
  // carol manages the pool: she sees and cancels anyone's task there, and drains workers.
  EXPECT_EQ(Lines(As("carol", {"task", "list"}).out).size(), 3u);
  EXPECT_EQ(As("carol", {"task", "cancel", id}).exit_code, 0);
  nlohmann::json t = nlohmann::json::parse(As("alice", {"task", "get", id, "--json"}).out);
  EXPECT_EQ(t["state"], "CANCELLED");
  std::string worker = nlohmann::json::parse(As("carol", {"worker", "list", "--json"}).out)[0]["name"];
  ProcResult drain = As("alice", {"worker", "drain", worker});
  EXPECT_NE(drain.err.find("user alice lacks the manage role on pool local"), std::string::npos) << drain.err;
  EXPECT_EQ(As("carol", {"worker", "drain", worker}).exit_code, 0);
}

TEST_F(Auth, ATaskSubmitsItsChildrenAsItsOwnerWithoutTheUsersToken) {
  // The user's own token is not passed to the task; the task's own token is.
  std::string id = Lines(As("alice", {"sh", "-c", "vbatch --name child sh -c 'echo child-ran'"}, "vbatch").out)[0];
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitFor([&] {
    ProcResult r = As("alice", {"task", "get", id + "/child", "--json"});
    return r.exit_code == 0 && nlohmann::json::parse(r.out)["state"] == "SUCCESS";
  }));
  EXPECT_EQ(As("alice", {"task", "logs", id + "/child"}).out, "child-ran\n");
  // Tokens are never in the log.
  std::string log = server_->ServerLog();
  EXPECT_EQ(log.find("alice-token"), std::string::npos);
  EXPECT_EQ(log.find("tpt_"), std::string::npos);
}

}  // namespace
}  // namespace tidepool::testing
