#include "metrics/registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace tidepool::metrics {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool ValidMetricName(std::string_view name) {
  if (name.empty() || IsDigit(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAlpha(c) || IsDigit(c) || c == '_' || c == ':'; });
}

// [a-zA-Z_][a-zA-Z0-9_]*, and not starting with "__" (reserved for Prometheus itself).
bool ValidLabelName(std::string_view name) {
  if (name.empty() || IsDigit(name[0]) || name.starts_with("__")) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAlpha(c) || IsDigit(c) || c == '_'; });
}

void CheckMetricName(std::string_view name) {
  if (!ValidMetricName(name)) {
    throw std::invalid_argument(fmt::format("invalid metric name \"{}\"", name));
  }
}

// Validates the label names and sorts the set by name.
Labels Normalize(std::string_view metric, Labels labels, bool histogram) {
  for (const auto& [k, v] : labels) {
    if (!ValidLabelName(k)) {
      throw std::invalid_argument(fmt::format("metric {}: invalid label name \"{}\"", metric, k));
    }
    if (histogram && k == "le") {
      throw std::invalid_argument(fmt::format("histogram {}: the label \"le\" is reserved", metric));
    }
  }
  std::sort(labels.begin(), labels.end());
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i].first == labels[i - 1].first) {
      throw std::invalid_argument(
          fmt::format("metric {}: label \"{}\" given twice", metric, labels[i].first));
    }
  }
  return labels;
}

// A sample value the way Prometheus parses it: NaN, +Inf, -Inf, integers without an exponent
// while they are exact in a double, otherwise the shortest text that reads back the same double.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";  // also -0
  if (v == std::trunc(v) && std::fabs(v) <= 9007199254740992.0) return fmt::format("{:.0f}", v);
  return fmt::format("{}", v);
}

void AppendEscaped(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '"':
        if (quote) {
          out += "\\\"";
          break;
        }
        [[fallthrough]];
      default: out += c;
    }
  }
}

// {a="x",b="y"} (nothing for an empty set); le, when given, comes last.
void AppendLabels(std::string& out, const Labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return;
  out += '{';
  bool first = true;
  auto pair = [&](std::string_view k, std::string_view v) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    AppendEscaped(out, v, true);
    out += '"';
  };
  for (const auto& [k, v] : labels) pair(k, v);
  if (le != nullptr) pair("le", *le);
  out += '}';
}

void AppendSample(std::string& out, std::string_view name, std::string_view suffix,
                  const Labels& labels, double value, const std::string* le = nullptr) {
  out += name;
  out += suffix;
  AppendLabels(out, labels, le);
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

void AppendHeader(std::string& out, std::string_view name, std::string_view help,
                  std::string_view type) {
  if (!help.empty()) {
    out += "# HELP ";
    out += name;
    out += ' ';
    AppendEscaped(out, help, false);
    out += '\n';
  }
  out += "# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

std::vector<double> DefaultSecondsBuckets() {
  return {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300};
}

std::vector<double> FineSecondsBuckets() {
  return {.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10};
}

// ---- Histogram ----

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  if (!bounds_.empty() && std::isinf(bounds_.back()) && bounds_.back() > 0) bounds_.pop_back();
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i - 1] < bounds_[i]))) {
      throw std::invalid_argument("histogram buckets must be finite and strictly increasing");
    }
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.reserve(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(total);
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---- GaugeWriter ----

void GaugeWriter::Gauge(std::string_view name, std::string_view help, Labels labels, double value) {
  Write(name, help, std::move(labels), value, false);
}

void GaugeWriter::Counter(std::string_view name, std::string_view help, Labels labels,
                          double value) {
  Write(name, help, std::move(labels), value, true);
}

void GaugeWriter::Write(std::string_view name, std::string_view help, Labels labels, double value,
                        bool counter) {
  CheckMetricName(name);
  labels = Normalize(name, std::move(labels), false);
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{.help = std::string(help), .counter = counter})
             .first;
  } else if (it->second.counter != counter) {
    throw std::invalid_argument(fmt::format("metric {} written both as a gauge and as a counter", name));
  }
  it->second.series[std::move(labels)] = value;
}

// ---- Registry ----

Registry::Family& Registry::FamilyLocked(std::string_view name, std::string_view help, Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{.help = std::string(help), .type = type}).first;
  } else if (it->second.type != type) {
    throw std::invalid_argument(
        fmt::format("metric {} is already registered as a {}", name,
                    it->second.type == Type::kCounter ? "counter" : "histogram"));
  }
  return it->second;
}

Counter& Registry::Counter(std::string_view name, std::string_view help, Labels labels) {
  CheckMetricName(name);
  labels = Normalize(name, std::move(labels), false);
  {
    std::shared_lock lock(mu_);
    auto f = families_.find(name);
    if (f != families_.end() && f->second.type == Type::kCounter) {
      auto s = f->second.counters.find(labels);
      if (s != f->second.counters.end()) return *s->second;
    }
  }
  std::unique_lock lock(mu_);
  Family& family = FamilyLocked(name, help, Type::kCounter);
  auto& slot = family.counters[std::move(labels)];
  if (!slot) slot = std::make_unique<metrics::Counter>();
  return *slot;
}

Histogram& Registry::Histogram(std::string_view name, std::string_view help, Labels labels,
                               std::vector<double> buckets) {
  CheckMetricName(name);
  labels = Normalize(name, std::move(labels), true);
  {
    std::shared_lock lock(mu_);
    auto f = families_.find(name);
    if (f != families_.end() && f->second.type == Type::kHistogram) {
      auto s = f->second.histograms.find(labels);
      if (s != f->second.histograms.end()) return *s->second;
    }
  }
  auto fresh = std::make_unique<metrics::Histogram>(std::move(buckets));  // validates outside the lock
  std::unique_lock lock(mu_);
  Family& family = FamilyLocked(name, help, Type::kHistogram);
  auto& slot = family.histograms[std::move(labels)];
  if (!slot) slot = std::move(fresh);
  return *slot;
}

void Registry::AddCollector(Collector collector) {
  std::lock_guard lock(collectors_mu_);
  collectors_.push_back(std::make_shared<const Collector>(std::move(collector)));
}

std::string Registry::Render(const SeriesFilter& keep) {
  std::lock_guard render_lock(render_mu_);

  std::vector<std::shared_ptr<const Collector>> collectors;
  {
    std::lock_guard lock(collectors_mu_);
    collectors = collectors_;
  }
  GaugeWriter writer;
  for (size_t i = 0; i < collectors.size(); ++i) {
    try {
      (*collectors[i])(writer);
    } catch (const std::exception& e) {
      spdlog::warn("metrics: collector #{} failed: {}", i, e.what());
    } catch (...) {
      spdlog::warn("metrics: collector #{} failed with an unknown exception", i);
    }
  }

  std::string out;
  auto shown = [&keep](const Labels& labels) { return !keep || keep(labels); };
  auto render_gauges = [&out, &shown](const std::string& name, const GaugeWriter::Family& f) {
    AppendHeader(out, name, f.help, f.counter ? "counter" : "gauge");
    for (const auto& [labels, value] : f.series) {
      if (shown(labels)) AppendSample(out, name, "", labels, value);
    }
  };
  auto render_own = [&out, &shown](const std::string& name, const Family& f) {
    if (f.type == Type::kCounter) {
      AppendHeader(out, name, f.help, "counter");
      for (const auto& [labels, c] : f.counters) {
        if (shown(labels)) AppendSample(out, name, "", labels, c->Value());
      }
      return;
    }
    AppendHeader(out, name, f.help, "histogram");
    for (const auto& [labels, h] : f.histograms) {
      if (!shown(labels)) continue;
      Histogram::Snapshot s = h->Snap();
      for (size_t i = 0; i < s.cumulative.size(); ++i) {
        std::string le = i < s.bounds.size() ? FormatValue(s.bounds[i]) : "+Inf";
        AppendSample(out, name, "_bucket", labels, static_cast<double>(s.cumulative[i]), &le);
      }
      AppendSample(out, name, "_sum", labels, s.sum);
      AppendSample(out, name, "_count", labels, static_cast<double>(s.count));
    }
  };

  // Merge the registry's families and the collectors' families, both sorted by name.
  std::shared_lock lock(mu_);
  auto r = families_.begin();
  auto g = writer.families_.begin();
  while (r != families_.end() || g != writer.families_.end()) {
    if (g == writer.families_.end() || (r != families_.end() && r->first <= g->first)) {
      if (g != writer.families_.end() && r->first == g->first) {
        spdlog::warn("metrics: a collector wrote {}, which is a registered {}; dropped", g->first,
                     r->second.type == Type::kCounter ? "counter" : "histogram");
        ++g;
      }
      render_own(r->first, r->second);
      ++r;
    } else {
      render_gauges(g->first, g->second);
      ++g;
    }
  }
  return out;
}

}  // namespace tidepool::metrics
