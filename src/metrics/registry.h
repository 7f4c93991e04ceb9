// A small thread-safe metrics registry that renders the Prometheus text exposition format 0.0.4.
//
// Counters and histograms live in the registry. Look one up by family name and label set with
// Registry::Counter / Registry::Histogram: the same name and labels always give back the same
// object, and the reference stays valid as long as the registry lives. The lookup takes a
// registry lock (shared when the series exists). Inc and Observe take no lock: they use atomics.
// On a hot path, look the series up once and keep the reference.
//
// Gauges (and counters that mirror someone else's count, like CPU seconds) come from collectors.
// A collector runs at scrape time and writes its current values through a GaugeWriter.
//
// Names must be valid Prometheus names. Breaking a rule is a programming error and throws
// std::invalid_argument: a bad metric or label name, a label given twice, "le" on a histogram,
// unsorted buckets, or one family name used with two types.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tidepool::metrics {

// The Content-Type of Registry::Render()'s output.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Label name/value pairs. The order does not matter: a set is sorted by label name when it
// enters the registry, and it is rendered in that order.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Prometheus' default buckets, extended for slow cloud calls:
// .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 30 60 120 300 (seconds; +Inf is implicit).
std::vector<double> DefaultSecondsBuckets();
// 50 us .. 10 s, for the sub-millisecond latencies of the server's own decisions.
std::vector<double> FineSecondsBuckets();

// A monotonic counter. Negative and NaN increments are ignored.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Inc(double v = 1) {
    if (v >= 0) value_.fetch_add(v, std::memory_order_relaxed);  // false for NaN too
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A histogram with fixed upper bounds. Each observation lands in the first bucket whose bound is
// >= the value; the +Inf bucket is implicit. NaN observations are ignored.
class Histogram {
 public:
  // bounds: strictly increasing and finite; a trailing +Inf is dropped.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double v);
  template <typename Rep, typename Period>
  void Observe(std::chrono::duration<Rep, Period> d) {
    Observe(std::chrono::duration<double>(d).count());
  }

  struct Snapshot {
    std::vector<double> bounds;       // without +Inf
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries; the last is the +Inf bucket
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  // count always equals the +Inf bucket; sum may miss an observation that is in flight.
  Snapshot Snap() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<double> sum_{0};
};

// What a collector writes into. Within one scrape a family is printed once (HELP and TYPE once)
// with all the label sets written to it; writing the same name and labels twice keeps the last
// value. Families come out sorted by name, series sorted by labels.
class GaugeWriter {
 public:
  GaugeWriter() = default;

  void Gauge(std::string_view name, std::string_view help, Labels labels, double value);
  // A counter-typed family whose value the collector reads from elsewhere
  // (e.g. process_cpu_seconds_total).
  void Counter(std::string_view name, std::string_view help, Labels labels, double value);

 private:
  friend class Registry;
  struct Family {
    std::string help;
    bool counter = false;
    std::map<Labels, double> series;
  };
  void Write(std::string_view name, std::string_view help, Labels labels, double value, bool counter);

  std::map<std::string, Family, std::less<>> families_;
};

class Registry {
 public:
  using Collector = std::function<void(GaugeWriter&)>;

  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // help is taken from the first registration of the family.
  metrics::Counter& Counter(std::string_view name, std::string_view help, Labels labels = {});
  // buckets are taken from the first registration of the series.
  metrics::Histogram& Histogram(std::string_view name, std::string_view help, Labels labels,
                                std::vector<double> buckets);

  // Collectors run on the scraping thread, one at a time (scrapes are serialized), without any
  // registry lock held, so they may look up counters themselves. A collector that throws is
  // logged and skipped; what it wrote before throwing is kept. A collector family whose name is
  // also a counter or histogram family of the registry is dropped.
  void AddCollector(Collector collector);

  // Which series a scrape may show (by their labels); null = all of them.
  using SeriesFilter = std::function<bool(const Labels&)>;
  // The whole exposition, or the series `keep` passes (every family's HELP and TYPE stay).
  std::string Render(const SeriesFilter& keep = nullptr);

 private:
  enum class Type { kCounter, kHistogram };
  struct Family {
    std::string help;
    Type type;
    std::map<Labels, std::unique_ptr<metrics::Counter>> counters;
    std::map<Labels, std::unique_ptr<metrics::Histogram>> histograms;
  };
  Family& FamilyLocked(std::string_view name, std::string_view help, Type type);

  std::shared_mutex mu_;  // families_ (the map and the series maps, not the values)
  std::map<std::string, Family, std::less<>> families_;

  std::mutex collectors_mu_;
  std::vector<std::shared_ptr<const Collector>> collectors_;

  std::mutex render_mu_;  // one scrape at a time, so collectors never run concurrently
};

}  // namespace tidepool::metrics
