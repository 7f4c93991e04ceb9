// Issue 17, items 4 and 5 (docs/reliability.md, "Who sees what"): with auth on, the web pages
// and /metrics need a token and show only what its user may see; a backend's error text is
// scrubbed of secrets before it is stored, shown or logged; a task the caller may not see
// answers exactly as a missing one, also as a dependency or a parent.
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>

#include "harness.h"

namespace tidepool::testing {
namespace {

const char* kAliceToken = "alice-token-0123456789";
const char* kBobToken = "bob-token-0123456789";
const char* kRootToken = "root-token-0123456789";
const char* kMetricsToken = "prometheus-scrape-token-4242";
const char* kApiKey = "sk-live-DEADBEEF-7777";

struct Reply {
  int status = 0;
  std::string body;
};

class WebAuth : public ::testing::Test {
 protected:
  // Pools alpha (alice submits), beta (bob submits) and broken (a command backend whose start
  // fails, printing an API key from the environment and the metrics token, read from a file).
  void StartServer() {
    std::string tag = std::to_string(getpid());
    users_ = "/tmp/tidepool-webauth-users-" + tag + ".yaml";
    secret_file_ = "/tmp/tidepool-webauth-secret-" + tag;
    WriteAll(users_, std::string("users:\n") +
                         "  - { name: alice, token: " + kAliceToken + ", roles: { alpha: submit } }\n" +
                         "  - { name: bob, token: " + kBobToken + ", roles: { beta: submit } }\n" +
                         "  - { name: root, token: " + kRootToken + ", roles: { \"*\": manage } }\n");
    WriteAll(secret_file_, kMetricsToken);
    std::string config = std::string("server:\n  metrics_listen: \"127.0.0.1:0\"\n") + "  auth: { users_file: " +
                         users_ + ", metrics_token: \"" + kMetricsToken + "\" }\nagent_pools:\n";
    for (const char* pool : {"alpha", "beta"}) {
      config += std::string("  - name: ") + pool + "\n    auto_scaler:\n      backend: { local: {} }\n" +
                "      max_agents: 2\n      max_idle_agents: 2\n      idle_decay: \"300s\"\n";
    }
    config += "  - name: broken\n    auto_scaler:\n      backend:\n        command:\n"
              "          start: \"echo \\\"auth refused: key=$MY_API_KEY token=$(cat " + secret_file_ +
              ")\\\" >&2; exit 1\"\n"
              "          stop: \"true\"\n          list: \"true\"\n"
              "      max_agents: 1\n      min_agents: 1\n";
    server_ = std::make_unique<Server>(config, std::vector<std::string>{}, "", std::map<std::string, std::string>{{"MY_API_KEY", kApiKey}});
    metrics_addr_ = Lines(ReadAll(server_->data_dir() + "/metrics.addr"))[0];
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove(users_);
    std::filesystem::remove(secret_file_);
  }

  Reply Get(const std::string& path, const std::string& token = "") {
    httplib::Client http("http://" + metrics_addr_);
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    auto r = http.Get(path.c_str(), headers);
    if (!r) return {};
    return {r->status, r->body};
  }
  ProcResult As(const std::string& token, const std::vector<std::string>& args, const std::string& bin = "tidepool",
                std::map<std::string, std::string> extra_env = {}) {
    std::vector<std::string> argv = {BinDir() + "/" + bin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = server_->ClientEnv();
    env["TIDEPOOL_TOKEN"] = token;
    for (auto& [k, v] : extra_env) env[k] = v;
    return RunProcess(argv, env, server_->dir(), "", 60s);
  }
  // The workers of a pool, as root sees them.
  std::vector<std::string> WorkerNames(const std::string& pool) {
    std::vector<std::string> names;
    ProcResult r = As(kRootToken, {"worker", "list", "--json"});
    for (const auto& w : nlohmann::json::parse(r.out)) {
      if (w["pool"] == pool) names.push_back(w["name"]);
    }
    return names;
  }

  std::string users_, secret_file_, metrics_addr_;
  std::unique_ptr<Server> server_;
};

bool Has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

TEST_F(WebAuth, PagesAndMetricsNeedATokenAndShowOnlyWhatItsUserMaySee) {
  StartServer();
  ASSERT_EQ(As(kAliceToken, {"-P", "alpha", "echo", "a"}, "vrun").out, "a\n");
  ASSERT_EQ(As(kBobToken, {"-P", "beta", "echo", "b"}, "vrun").out, "b\n");
  std::vector<std::string> alpha = WorkerNames("alpha"), beta = WorkerNames("beta");
  ASSERT_EQ(alpha.size(), 1u);
  ASSERT_EQ(beta.size(), 1u);
  const std::vector<std::string> names = {"alpha", "beta", "broken", alpha[0], beta[0]};

  // No token, or a bad one: 401 on every page, and not a name in the answer.
  for (const char* path : {"/", "/metrics", "/status", "/nothing-here"}) {
    for (const std::string& token : {std::string(), std::string("not-a-token-at-all-1234")}) {
      Reply r = Get(path, token);
      EXPECT_EQ(r.status, 401) << path << " token '" << token << "': " << r.body;
      for (const std::string& n : names) EXPECT_FALSE(Has(r.body, n)) << path << ": " << n << " in " << r.body;
    }
  }
  // The liveness probe stays open and says nothing else.
  Reply health = Get("/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok");

  // alice: her pool and its worker, not bob's.
  Reply page = Get("/", kAliceToken);
  EXPECT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, ">alpha<") && Has(page.body, alpha[0])) << page.body;
  for (const std::string& n : {std::string("beta"), std::string("broken"), beta[0]}) {
    EXPECT_FALSE(Has(page.body, n)) << n << " in " << page.body;
  }
  Reply metrics = Get("/metrics", kAliceToken);
  EXPECT_EQ(metrics.status, 200);
  EXPECT_TRUE(Has(metrics.body, "pool=\"alpha\"")) << metrics.body;
  EXPECT_FALSE(Has(metrics.body, "pool=\"beta\"") || Has(metrics.body, "pool=\"broken\"")) << metrics.body;
  EXPECT_FALSE(Has(metrics.body, "\ntidepool_agents_connected ")) << "server-wide series for a one-pool user";
  // bob: the other way round.
  page = Get("/", kBobToken);
  EXPECT_TRUE(Has(page.body, ">beta<") && Has(page.body, beta[0])) << page.body;
  EXPECT_FALSE(Has(page.body, ">alpha<") || Has(page.body, alpha[0])) << page.body;
  // root sees everything.
  page = Get("/", kRootToken);
  for (const std::string& n : names) EXPECT_TRUE(Has(page.body, n)) << n << " not in " << page.body;
  EXPECT_TRUE(Has(Get("/metrics", kRootToken).body, "\ntidepool_agents_connected "));

  // The metrics token: all of /metrics, and nothing else.
  metrics = Get("/metrics", kMetricsToken);
  EXPECT_EQ(metrics.status, 200);
  for (const char* pool : {"alpha", "beta", "broken"}) {
    EXPECT_TRUE(Has(metrics.body, std::string("pool=\"") + pool + "\"")) << pool;
  }
  for (const char* path : {"/", "/status"}) {
    Reply r = Get(path, kMetricsToken);
    EXPECT_TRUE(r.status == 403 || r.status == 404) << path << ": " << r.status;
    for (const std::string& n : names) EXPECT_FALSE(Has(r.body, n)) << path << ": " << n;
  }
  EXPECT_EQ(Get("/", kMetricsToken).status, 403);
  // Nor does it work as a user's token on the API.
  EXPECT_NE(As(kMetricsToken, {"pool", "list"}).exit_code, 0);
}

TEST_F(WebAuth, BackendErrorsAreScrubbedOfSecretsEverywhere) {
  StartServer();
  std::string last_error;
  ASSERT_TRUE(WaitFor([&] {
    ProcResult r = As(kRootToken, {"pool", "get", "broken", "--json"});
    if (r.exit_code != 0) return false;
    auto j = nlohmann::json::parse(r.out);
    last_error = j.dump();
    return Has(last_error, "auth refused");
  }));
  // Stored and shown scrubbed, with the marker where each secret was.
  std::vector<std::pair<std::string, std::string>> seen = {
      {"pool get", last_error},
      {"pool list", As(kRootToken, {"pool", "list", "--json"}).out},
      {"pool get (text)", As(kRootToken, {"pool", "get", "broken"}).out},
      {"status page", Get("/", kRootToken).body},
  };
  for (const auto& [where, text] : seen) {
    EXPECT_TRUE(Has(text, "key=[redacted] token=[redacted]")) << where << ": " << text;
  }
  seen.push_back({"metrics (root)", Get("/metrics", kRootToken).body});
  seen.push_back({"metrics (token)", Get("/metrics", kMetricsToken).body});
  seen.push_back({"server log", server_->ServerLog()});
  for (const auto& [where, text] : seen) {
    EXPECT_FALSE(Has(text, kApiKey)) << where << " holds the API key:\n" << text;
    EXPECT_FALSE(Has(text, kMetricsToken)) << where << " holds the metrics token:\n" << text;
  }
  EXPECT_TRUE(Has(server_->ServerLog(), "key=[redacted] token=[redacted]"));
}

// What a probe answers, with the probed id replaced by ID: exit code, stdout, stderr.
std::string Answer(const ProcResult& r, const std::string& id) {
  auto replace = [&](std::string s) {
    for (size_t at = s.find(id); at != std::string::npos; at = s.find(id, at)) s.replace(at, id.size(), "ID");
    return s;
  };
  return "exit " + std::to_string(r.exit_code) + "\nout: " + replace(r.out) + "\nerr: " + replace(r.err);
}

TEST_F(WebAuth, AnotherUsersTaskAnswersExactlyAsAMissingOne) {
  StartServer();
  // alice's tasks: one finished (in the store only), one running (in the core's memory).
  std::string done = Lines(As(kAliceToken, {"-P", "alpha", "--name", "plan-done", "true"}, "vbatch").out)[0];
  ASSERT_EQ(As(kAliceToken, {"task", "wait", done}).exit_code, 0);
  std::string running = Lines(As(kAliceToken, {"-P", "alpha", "--name", "plan-live", "sleep", "300"}, "vbatch").out)[0];
  ASSERT_FALSE(running.empty());
  const std::string missing = "plan-none";

  int probes = 0;
  auto same = [&](const std::vector<std::string>& before, const std::vector<std::string>& after,
                  const std::string& bin, const std::string& said, const std::map<std::string, std::string>& env = {}) {
    for (const std::string& id : {done, running}) {
      auto argv = [&](const std::string& target) {
        std::vector<std::string> a = before;
        if (!target.empty()) a.push_back(target);
        a.insert(a.end(), after.begin(), after.end());
        return a;
      };
      std::map<std::string, std::string> env_of_id = env, env_of_missing = env;
      bool in_env = env.count("TIDEPOOL_TASK_ID") > 0;
      if (in_env) env_of_id["TIDEPOOL_TASK_ID"] = id, env_of_missing["TIDEPOOL_TASK_ID"] = missing;
      ProcResult theirs = As(kBobToken, argv(in_env ? "" : id), bin, env_of_id);
      ProcResult none = As(kBobToken, argv(in_env ? "" : missing), bin, env_of_missing);
      EXPECT_NE(none.exit_code, 0) << Answer(none, missing);
      EXPECT_TRUE(Has(Answer(none, missing), said)) << Answer(none, missing);
      EXPECT_EQ(Answer(theirs, id), Answer(none, missing)) << bin << " " << before[0] << " " << id;
      ++probes;
    }
  };
  const std::string not_found = "task not found: ID";
  for (const char* verb : {"get", "logs", "wait", "watch", "cancel"}) same({"task", verb}, {}, "tidepool", not_found);
  same({"task", "get"}, {"--json"}, "tidepool", not_found);
  same({"task", "logs", "-f"}, {}, "tidepool", not_found);
  // As a dependency: through gRPC (tidepool batch) and the fast path (vbatch).
  for (const char* flag : {"--after", "--after-success", "--after-fail"}) {
    same({"batch", "-P", "beta", flag}, {"true"}, "tidepool", "dependency not found: ID");
    same({"-P", "beta", flag}, {"true"}, "vbatch", "dependency not found: ID");
  }
  // As a parent (a task's children name it in TIDEPOOL_TASK_ID).
  same({"-P", "beta", "true"}, {}, "vbatch", "parent task ID is not running", {{"TIDEPOOL_TASK_ID", "set"}});
  same({"batch", "-P", "beta", "true"}, {}, "tidepool", "parent task ID is not running", {{"TIDEPOOL_TASK_ID", "set"}});
  EXPECT_EQ(probes, 30);
  // Nothing of bob's probes reached alice's tasks.
  EXPECT_EQ(nlohmann::json::parse(As(kAliceToken, {"task", "get", running, "--json"}).out)["state"], "RUNNING");
  EXPECT_EQ(Lines(As(kBobToken, {"task", "list"}).out).size(), 1u);  // only the header: nothing was made
}

}  // namespace
}  // namespace tidepool::testing
