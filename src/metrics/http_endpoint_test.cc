#include "metrics/http_endpoint.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "metrics/process.h"

namespace tidepool::metrics {
namespace {

class HttpEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.Counter("tidepool_backend_calls_total", "Backend calls.", {{"pool", "gpu"}, {"result", "ok"}})
        .Inc(3);
    AddProcessCollector(registry_);
  }

  Registry registry_;
};

TEST_F(HttpEndpointTest, HealthzIs503WithTheProblemWhileTheHealthCallbackNamesOne) {
  HttpEndpoint ep;
  std::atomic<bool> failed{false};
  ep.set_health([&] { return failed ? std::string("store /x/tidepool.db: COMMIT: disk I/O error") : std::string(); });
  ASSERT_TRUE(ep.Start("127.0.0.1:0", &registry_, nullptr).ok());
  httplib::Client cli("127.0.0.1", ep.port());
  auto res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");
  failed = true;
  res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "store /x/tidepool.db: COMMIT: disk I/O error\n");
}

TEST_F(HttpEndpointTest, ServesMetricsStatusPageHealthzAnd404) {
  HttpEndpoint ep;
  Status s = ep.Start("127.0.0.1:0", &registry_, [] { return std::string("<html><body>pools</body></html>"); });
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_GT(ep.port(), 0);

  httplib::Client cli("127.0.0.1", ep.port());
  cli.set_connection_timeout(5);
  cli.set_read_timeout(5);

  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res->body.find("# TYPE tidepool_backend_calls_total counter\n"
                           "tidepool_backend_calls_total{pool=\"gpu\",result=\"ok\"} 3\n"),
            std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("\nprocess_resident_memory_bytes "), std::string::npos) << res->body;

  // Every scrape renders afresh.
  registry_.Counter("tidepool_backend_calls_total", "", {{"pool", "gpu"}, {"result", "ok"}}).Inc();
  res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("tidepool_backend_calls_total{pool=\"gpu\",result=\"ok\"} 4\n"), std::string::npos);

  res = cli.Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "<html><body>pools</body></html>");
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/html; charset=utf-8");

  res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");

  res = cli.Get("/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  res = cli.Get("/metrics/extra");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  // The query string does not matter.
  res = cli.Get("/healthz?verbose=1");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);

  ep.Stop();
  EXPECT_EQ(ep.port(), 0);
}

TEST_F(HttpEndpointTest, WithAGateEveryPageButHealthzAsksItFirst) {
  registry_.Counter("tidepool_backend_calls_total", "Backend calls.", {{"pool", "cpu"}, {"result", "ok"}}).Inc();
  HttpEndpoint ep;
  ep.set_health([] { return std::string("store /x/tidepool.db: disk I/O error"); });
  std::vector<std::string> asked;
  std::mutex mu;
  ep.set_gate([&](const std::string& token) -> HttpEndpoint::Access {
    std::lock_guard lock(mu);
    asked.push_back(token);
    if (token == "user") {
      return {.metrics = true,
              .series = [](const Labels& l) { return l.size() == 2 && l[0].second == "gpu"; },
              .status_page = [] { return std::string("<p>gpu</p>"); }};
    }
    if (token == "scraper") return {.metrics = true};
    return {.refusal = 401, .why = token.empty() ? "needs a token" : "not accepted"};
  });
  ASSERT_TRUE(ep.Start("127.0.0.1:0", &registry_, [] { return std::string("<p>everything</p>"); }).ok());
  httplib::Client cli("127.0.0.1", ep.port());
  auto get = [&](const std::string& path, const std::string& token) {
    httplib::Headers h;
    if (!token.empty()) h.emplace("Authorization", "bearer  " + token + " ");
    return cli.Get(path.c_str(), h);
  };
  for (const char* path : {"/", "/metrics", "/elsewhere"}) {
    auto res = get(path, "");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << path;
    EXPECT_EQ(res->body, "needs a token\n");
    EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"tidepool\"");
    EXPECT_EQ(get(path, "forged")->body, "not accepted\n");
  }
  auto res = get("/", "user");
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "<p>gpu</p>");
  res = get("/metrics", "user");
  EXPECT_NE(res->body.find("pool=\"gpu\""), std::string::npos) << res->body;
  EXPECT_EQ(res->body.find("pool=\"cpu\""), std::string::npos) << res->body;
  EXPECT_EQ(res->body.find("\nprocess_cpu_seconds_total "), std::string::npos) << res->body;
  res = get("/metrics", "scraper");
  EXPECT_NE(res->body.find("pool=\"cpu\""), std::string::npos) << res->body;
  res = get("/", "scraper");
  EXPECT_EQ(res->status, 403);
  EXPECT_EQ(res->body, "this token opens /metrics only\n");
  EXPECT_EQ(get("/elsewhere", "user")->status, 404);
  // /healthz: open, and not a word about why.
  res = get("/healthz", "");
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "unhealthy\n");
  std::lock_guard lock(mu);
  EXPECT_EQ(std::count(asked.begin(), asked.end(), ""), 3) << "the gate is asked for every page but /healthz";
}

TEST_F(HttpEndpointTest, StubStatusPageAndFailingStatusPage) {
  HttpEndpoint stub;
  ASSERT_TRUE(stub.Start("127.0.0.1:0", &registry_, nullptr).ok());
  httplib::Client cli("127.0.0.1", stub.port());
  auto res = cli.Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("href=\"/metrics\""), std::string::npos) << res->body;

  HttpEndpoint failing;
  ASSERT_TRUE(failing.Start("127.0.0.1:0", &registry_, []() -> std::string {
                       throw std::runtime_error("store unavailable");
                     }).ok());
  httplib::Client cli2("127.0.0.1", failing.port());
  res = cli2.Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  EXPECT_EQ(res->body.find("store unavailable"), std::string::npos) << "no internals to the client";
  res = cli2.Get("/healthz");  // still serving
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpEndpointTest, AddressInUseFailsNamingTheAddress) {
  HttpEndpoint first;
  ASSERT_TRUE(first.Start("127.0.0.1:0", &registry_, nullptr).ok());
  std::string address = "127.0.0.1:" + std::to_string(first.port());

  HttpEndpoint second;
  Status s = second.Start(address, &registry_, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find(address), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("in use"), std::string::npos) << s.message();
  EXPECT_EQ(second.port(), 0);
  second.Stop();  // harmless on a never-started endpoint

  // The first one still answers, and it alone.
  httplib::Client cli("127.0.0.1", first.port());
  auto res = cli.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body, "ok");
}

TEST_F(HttpEndpointTest, BadAddressesAreRejectedNamingThem) {
  for (const char* bad : {"nonsense", "127.0.0.1", ":9464", "127.0.0.1:", "127.0.0.1:99999",
                          "127.0.0.1:12a", "::1:9464", "[]:80", "[::1:80"}) {
    HttpEndpoint ep;
    Status s = ep.Start(bad, &registry_, nullptr);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(std::string("\"") + bad + "\""), std::string::npos) << s.message();
  }
  HttpEndpoint ep;
  EXPECT_EQ(ep.Start("127.0.0.1:0", nullptr, nullptr).code(), StatusCode::kInvalidArgument);
}

TEST_F(HttpEndpointTest, StopIsIdempotentAndRestartable) {
  HttpEndpoint ep;
  ASSERT_TRUE(ep.Start("127.0.0.1:0", &registry_, nullptr).ok());
  int port = ep.port();
  EXPECT_EQ(ep.Start("127.0.0.1:0", &registry_, nullptr).code(), StatusCode::kFailedPrecondition);

  {
    httplib::Client cli("127.0.0.1", port);
    ASSERT_TRUE(cli.Get("/metrics"));
  }
  auto t0 = std::chrono::steady_clock::now();
  ep.Stop();
  ep.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));

  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1);
  EXPECT_FALSE(cli.Get("/healthz")) << "nothing listens after Stop()";

  // The same port can be taken again right away (SO_REUSEADDR).
  ASSERT_TRUE(ep.Start("127.0.0.1:" + std::to_string(port), &registry_, nullptr).ok());
  EXPECT_EQ(ep.port(), port);
  httplib::Client again("127.0.0.1", port);
  auto res = again.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body, "ok");
}

TEST_F(HttpEndpointTest, StopRightAfterStartDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    HttpEndpoint ep;
    ASSERT_TRUE(ep.Start("127.0.0.1:0", &registry_, nullptr).ok());
    ep.Stop();
  }
  HttpEndpoint destroyed_while_running;
  ASSERT_TRUE(destroyed_while_running.Start("127.0.0.1:0", &registry_, nullptr).ok());
}

TEST_F(HttpEndpointTest, ConcurrentScrapes) {
  HttpEndpoint ep;
  ASSERT_TRUE(ep.Start("127.0.0.1:0", &registry_, nullptr).ok());
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      httplib::Client cli("127.0.0.1", ep.port());
      for (int i = 0; i < 10; ++i) {
        auto res = cli.Get("/metrics");
        if (res && res->status == 200 && res->body.find("process_open_fds") != std::string::npos) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 60);
}

}  // namespace
}  // namespace tidepool::metrics
