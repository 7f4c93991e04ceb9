#include "metrics/registry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tidepool::metrics {
namespace {

TEST(Registry, EmptyRendersNothing) {
  Registry r;
  EXPECT_EQ(r.Render(), "");
}

TEST(Registry, CountersWithLabelsExactText) {
  Registry r;
  r.Counter("tidepool_backend_calls_total", "Backend calls by result.",
            {{"pool", "gpu"}, {"op", "create"}, {"result", "ok"}})
      .Inc();
  // The same set in another order is the same series.
  r.Counter("tidepool_backend_calls_total", "ignored: help comes from the first registration",
            {{"result", "ok"}, {"op", "create"}, {"pool", "gpu"}})
      .Inc(2);
  r.Counter("tidepool_backend_calls_total", "", {{"pool", "gpu"}, {"op", "create"}, {"result", "error"}})
      .Inc();
  r.Counter("a_total", "A plain counter.").Inc(0.5);
  r.Counter("zero_total", "Registered, never incremented.");

  EXPECT_EQ(r.Render(),
            "# HELP a_total A plain counter.\n"
            "# TYPE a_total counter\n"
            "a_total 0.5\n"
            "# HELP tidepool_backend_calls_total Backend calls by result.\n"
            "# TYPE tidepool_backend_calls_total counter\n"
            "tidepool_backend_calls_total{op=\"create\",pool=\"gpu\",result=\"error\"} 1\n"
            "tidepool_backend_calls_total{op=\"create\",pool=\"gpu\",result=\"ok\"} 3\n"
            "# HELP zero_total Registered, never incremented.\n"
            "# TYPE zero_total counter\n"
            "zero_total 0\n");
}

TEST(Registry, SameNameAndLabelsGiveTheSameObject) {
  Registry r;
  Counter& a = r.Counter("x_total", "x", {{"a", "1"}, {"b", "2"}});
  Counter& b = r.Counter("x_total", "x", {{"b", "2"}, {"a", "1"}});
  Counter& c = r.Counter("x_total", "x", {{"a", "1"}, {"b", "3"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  // References stay valid while many more series are added.
  for (int i = 0; i < 1000; ++i) r.Counter("x_total", "x", {{"a", std::to_string(i)}});
  a.Inc(4);
  EXPECT_EQ(b.Value(), 4);
  Histogram& h1 = r.Histogram("h_seconds", "h", {{"pool", "p"}}, {1, 2});
  Histogram& h2 = r.Histogram("h_seconds", "h", {{"pool", "p"}}, {5});  // buckets from the first
  EXPECT_EQ(&h1, &h2);
  EXPECT_EQ(h2.bounds(), (std::vector<double>{1, 2}));
}

TEST(Registry, CounterIgnoresNegativeAndNaN) {
  Registry r;
  Counter& c = r.Counter("c_total", "c");
  c.Inc(3);
  c.Inc(-1);
  c.Inc(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.Value(), 3);
}

TEST(Registry, HistogramCumulativeBucketsSumCount) {
  Registry r;
  Histogram& h = r.Histogram("tidepool_backend_call_seconds", "Backend call latency.",
                             {{"pool", "gpu"}, {"op", "create"}}, {0.125, 1, 2.5});
  h.Observe(0.0625);
  h.Observe(0.125);  // le is inclusive
  h.Observe(2);
  h.Observe(7);
  h.Observe(std::numeric_limits<double>::quiet_NaN());  // ignored
  r.Histogram("tidepool_backend_call_seconds", "", {{"pool", "cpu"}, {"op", "delete"}}, {0.125, 1, 2.5})
      .Observe(std::chrono::milliseconds(500));

  EXPECT_EQ(r.Render(),
            "# HELP tidepool_backend_call_seconds Backend call latency.\n"
            "# TYPE tidepool_backend_call_seconds histogram\n"
            "tidepool_backend_call_seconds_bucket{op=\"create\",pool=\"gpu\",le=\"0.125\"} 2\n"
            "tidepool_backend_call_seconds_bucket{op=\"create\",pool=\"gpu\",le=\"1\"} 2\n"
            "tidepool_backend_call_seconds_bucket{op=\"create\",pool=\"gpu\",le=\"2.5\"} 3\n"
            "tidepool_backend_call_seconds_bucket{op=\"create\",pool=\"gpu\",le=\"+Inf\"} 4\n"
            "tidepool_backend_call_seconds_sum{op=\"create\",pool=\"gpu\"} 9.1875\n"
            "tidepool_backend_call_seconds_count{op=\"create\",pool=\"gpu\"} 4\n"
            "tidepool_backend_call_seconds_bucket{op=\"delete\",pool=\"cpu\",le=\"0.125\"} 0\n"
            "tidepool_backend_call_seconds_bucket{op=\"delete\",pool=\"cpu\",le=\"1\"} 1\n"
            "tidepool_backend_call_seconds_bucket{op=\"delete\",pool=\"cpu\",le=\"2.5\"} 1\n"
            "tidepool_backend_call_seconds_bucket{op=\"delete\",pool=\"cpu\",le=\"+Inf\"} 1\n"
            "tidepool_backend_call_seconds_sum{op=\"delete\",pool=\"cpu\"} 0.5\n"
            "tidepool_backend_call_seconds_count{op=\"delete\",pool=\"cpu\"} 1\n");
}

TEST(Registry, HistogramWithoutLabelsAndTrailingInf) {
  Registry r;
  Histogram& h = r.Histogram("q_seconds", "q", {}, {1, std::numeric_limits<double>::infinity()});
  h.Observe(0.5);
  h.Observe(-1);  // negative values land in the first bucket
  EXPECT_EQ(r.Render(),
            "# HELP q_seconds q\n"
            "# TYPE q_seconds histogram\n"
            "q_seconds_bucket{le=\"1\"} 2\n"
            "q_seconds_bucket{le=\"+Inf\"} 2\n"
            "q_seconds_sum -0.5\n"
            "q_seconds_count 2\n");
}

TEST(Registry, DefaultSecondsBuckets) {
  std::vector<double> b = DefaultSecondsBuckets();
  EXPECT_EQ(b, (std::vector<double>{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}));
  Registry r;
  r.Histogram("d_seconds", "", {}, b).Observe(45);
  std::string text = r.Render();
  EXPECT_NE(text.find("d_seconds_bucket{le=\"0.005\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"30\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"60\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("d_seconds_bucket{le=\"300\"} 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("# HELP"), std::string::npos) << "empty help prints no HELP line";
}

TEST(Registry, GaugesFromCollectorsOneHeaderPerFamilySortedFamilies) {
  Registry r;
  r.Counter("tidepool_backend_calls_total", "Calls.", {{"pool", "a"}}).Inc();
  r.AddCollector([](GaugeWriter& w) {
    for (const char* pool : {"b", "a"}) {
      for (const char* state : {"running", "idle"}) {
        w.Gauge("tidepool_pool_workers", "Workers by state.", {{"pool", pool}, {"state", state}},
                pool[0] == 'a' ? 2 : 3);
      }
    }
    w.Gauge("tidepool_agents_connected", "Connected agents.", {}, 5);
  });
  r.AddCollector([](GaugeWriter& w) {
    w.Gauge("tidepool_pool_workers", "", {{"pool", "c"}, {"state", "idle"}}, 0);  // same family
    w.Gauge("tidepool_agents_connected", "", {}, 6);                               // last write wins
    w.Counter("process_cpu_seconds_total", "CPU.", {}, 1.25);
  });
  EXPECT_EQ(r.Render(),
            "# HELP process_cpu_seconds_total CPU.\n"
            "# TYPE process_cpu_seconds_total counter\n"
            "process_cpu_seconds_total 1.25\n"
            "# HELP tidepool_agents_connected Connected agents.\n"
            "# TYPE tidepool_agents_connected gauge\n"
            "tidepool_agents_connected 6\n"
            "# HELP tidepool_backend_calls_total Calls.\n"
            "# TYPE tidepool_backend_calls_total counter\n"
            "tidepool_backend_calls_total{pool=\"a\"} 1\n"
            "# HELP tidepool_pool_workers Workers by state.\n"
            "# TYPE tidepool_pool_workers gauge\n"
            "tidepool_pool_workers{pool=\"a\",state=\"idle\"} 2\n"
            "tidepool_pool_workers{pool=\"a\",state=\"running\"} 2\n"
            "tidepool_pool_workers{pool=\"b\",state=\"idle\"} 3\n"
            "tidepool_pool_workers{pool=\"b\",state=\"running\"} 3\n"
            "tidepool_pool_workers{pool=\"c\",state=\"idle\"} 0\n");
}

TEST(Registry, AFilterKeepsOnlyTheSeriesItPasses) {
  Registry r;
  r.Counter("calls_total", "Calls.", {{"pool", "a"}}).Inc();
  r.Counter("calls_total", "Calls.", {{"pool", "b"}}).Inc(2);
  r.Histogram("lat_seconds", "Latency.", {{"pool", "b"}}, {1}).Observe(0.5);
  r.AddCollector([](GaugeWriter& w) {
    w.Gauge("workers", "Workers.", {{"pool", "a"}}, 1);
    w.Gauge("workers", "Workers.", {{"pool", "b"}}, 2);
  });
  auto only_a = [](const Labels& l) {
    for (const auto& [k, v] : l) {
      if (k == "pool") return v == "a";
    }
    return false;
  };
  EXPECT_EQ(r.Render(only_a),
            "# HELP calls_total Calls.\n"
            "# TYPE calls_total counter\n"
            "calls_total{pool=\"a\"} 1\n"
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "# HELP workers Workers.\n"
            "# TYPE workers gauge\n"
            "workers{pool=\"a\"} 1\n");
  EXPECT_NE(r.Render().find("workers{pool=\"b\"} 2"), std::string::npos);  // no filter: everything
}

TEST(Registry, CollectorsRunAtEveryScrape) {
  Registry r;
  int n = 0;
  r.AddCollector([&n](GaugeWriter& w) { w.Gauge("n", "", {}, ++n); });
  EXPECT_EQ(r.Render(), "# TYPE n gauge\nn 1\n");
  EXPECT_EQ(r.Render(), "# TYPE n gauge\nn 2\n");
}

TEST(Registry, EscapesLabelValuesAndHelp) {
  Registry r;
  r.Counter("e_total", "Help with \\ backslash,\nnewline and \"quotes\".",
            {{"path", "C:\\dir\\\"x\"\nnext"}})
      .Inc();
  EXPECT_EQ(r.Render(),
            "# HELP e_total Help with \\\\ backslash,\\nnewline and \"quotes\".\n"
            "# TYPE e_total counter\n"
            "e_total{path=\"C:\\\\dir\\\\\\\"x\\\"\\nnext\"} 1\n");
}

TEST(Registry, NumberFormatting) {
  Registry r;
  r.AddCollector([](GaugeWriter& w) {
    auto g = [&w](const char* v, double value) { w.Gauge("v", "", {{"v", v}}, value); };
    g("a_int", 42);
    g("b_big_int", 1e15);
    g("c_time", 1763812345.67);
    g("d_frac", 0.1);
    g("e_tiny", 1.5e-7);
    g("f_huge", 1e20);
    g("g_neg_zero", -0.0);
    g("h_neg", -3);
    g("i_inf", std::numeric_limits<double>::infinity());
    g("j_neg_inf", -std::numeric_limits<double>::infinity());
    g("k_nan", std::numeric_limits<double>::quiet_NaN());
    g("l_2p53", 9007199254740992.0);
  });
  EXPECT_EQ(r.Render(),
            "# TYPE v gauge\n"
            "v{v=\"a_int\"} 42\n"
            "v{v=\"b_big_int\"} 1000000000000000\n"
            "v{v=\"c_time\"} 1763812345.67\n"
            "v{v=\"d_frac\"} 0.1\n"
            "v{v=\"e_tiny\"} 1.5e-07\n"
            "v{v=\"f_huge\"} 1e+20\n"
            "v{v=\"g_neg_zero\"} 0\n"
            "v{v=\"h_neg\"} -3\n"
            "v{v=\"i_inf\"} +Inf\n"
            "v{v=\"j_neg_inf\"} -Inf\n"
            "v{v=\"k_nan\"} NaN\n"
            "v{v=\"l_2p53\"} 9007199254740992\n");
}

TEST(Registry, RejectsProgrammingErrors) {
  Registry r;
  EXPECT_THROW(r.Counter("1bad", ""), std::invalid_argument);
  EXPECT_THROW(r.Counter("bad-name", ""), std::invalid_argument);
  EXPECT_THROW(r.Counter("ok_total", "", {{"bad-label", "x"}}), std::invalid_argument);
  EXPECT_THROW(r.Counter("ok_total", "", {{"__reserved", "x"}}), std::invalid_argument);
  EXPECT_THROW(r.Counter("ok_total", "", {{"a", "x"}, {"a", "y"}}), std::invalid_argument);
  EXPECT_THROW(r.Histogram("h", "", {{"le", "1"}}, {1}), std::invalid_argument);
  EXPECT_THROW(r.Histogram("h", "", {}, {2, 1}), std::invalid_argument);
  EXPECT_THROW(r.Histogram("h", "", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(r.Histogram("h", "", {}, {std::nan("")}), std::invalid_argument);
  r.Counter("both", "");
  EXPECT_THROW(r.Histogram("both", "", {}, {1}), std::invalid_argument);
  r.Histogram("hist", "", {}, {1});
  EXPECT_THROW(r.Counter("hist", ""), std::invalid_argument);
  EXPECT_NO_THROW(r.Counter("ns:sub_total", "", {{"_x", "1"}}));
  // The failed registrations left nothing half-made behind.
  EXPECT_EQ(r.Render(),
            "# TYPE both counter\nboth 0\n"
            "# TYPE hist histogram\nhist_bucket{le=\"1\"} 0\nhist_bucket{le=\"+Inf\"} 0\n"
            "hist_sum 0\nhist_count 0\n"
            "# TYPE ns:sub_total counter\nns:sub_total{_x=\"1\"} 0\n");
}

TEST(Registry, BrokenCollectorIsSkippedAndConflictsDropped) {
  Registry r;
  r.Counter("owned_total", "").Inc();
  r.AddCollector([](GaugeWriter& w) {
    w.Gauge("before", "", {}, 1);
    throw std::runtime_error("boom");
  });
  r.AddCollector([](GaugeWriter& w) {
    w.Gauge("owned_total", "", {}, 99);  // a registry counter's name: dropped
    w.Gauge("mixed", "", {}, 1);
    w.Counter("mixed", "", {{"a", "b"}}, 2);  // throws: a gauge family already
  });
  r.AddCollector([](GaugeWriter& w) { w.Gauge("after", "", {}, 3); });
  EXPECT_EQ(r.Render(),
            "# TYPE after gauge\nafter 3\n"
            "# TYPE before gauge\nbefore 1\n"
            "# TYPE mixed gauge\nmixed 1\n"
            "# TYPE owned_total counter\nowned_total 1\n");
}

TEST(Registry, ConcurrentIncAddsUpExactly) {
  Registry r;
  constexpr int kThreads = 8, kIters = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, t] {
      // Lookups race with each other and with the increments.
      Counter& shared = r.Counter("shared_total", "", {{"k", "v"}});
      Counter& mine = r.Counter("mine_total", "", {{"t", std::to_string(t)}});
      Histogram& h = r.Histogram("h_seconds", "", {}, {0.5, 1.5});
      for (int i = 0; i < kIters; ++i) {
        shared.Inc();
        mine.Inc(0.5);
        h.Observe(i % 2);
        if (i % 20000 == 0) r.Counter("late_total", "", {{"i", std::to_string(i)}}).Inc();
      }
    });
  }
  std::thread scraper([&r] {
    for (int i = 0; i < 20; ++i) r.Render();
  });
  for (auto& t : threads) t.join();
  scraper.join();

  EXPECT_EQ(r.Counter("shared_total", "", {{"k", "v"}}).Value(), kThreads * kIters);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(r.Counter("mine_total", "", {{"t", std::to_string(t)}}).Value(), kIters * 0.5);
  }
  EXPECT_EQ(r.Counter("late_total", "", {{"i", "0"}}).Value(), kThreads);
  Histogram::Snapshot s = r.Histogram("h_seconds", "", {}, {}).Snap();
  EXPECT_EQ(s.count, uint64_t{kThreads * kIters});
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{kThreads * kIters / 2, kThreads * kIters, kThreads * kIters}));
  EXPECT_EQ(s.sum, kThreads * kIters / 2);
  EXPECT_NE(r.Render().find("shared_total{k=\"v\"} 800000\n"), std::string::npos);
}

}  // namespace
}  // namespace tidepool::metrics
