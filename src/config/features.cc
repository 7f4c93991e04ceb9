#include "config/features.h"

#include "config/backend_schemas.h"

namespace tidepool::config {

namespace {

// The one place that says what is built. Keep ids in sync with features.h.
constexpr Feature kFeatures[] = {
    {"metrics_listen", "Prometheus metrics endpoint", true},
    {"tls", "TLS", true},
    {"auth", "users and roles", true},
    {"postgres", "PostgreSQL store", false},
    {"selectors", "selectors and backup pools", true},
    {"kinds", "task kinds per pool", true},
    {"labels", "resource-group labels", false},
    {"fixed", "fixed-size pools", true},
    {"batch_mode", "batch mode", true},
    {"schedule", "time-window pre-scaling", false},
    {"scale_in", "consolidation windows", false},
    {"utilization", "utilisation scaling", false},
    {"drift_sync", "drift sync loop", true},
    {"error_backoff", "allocation error backoff", true},
    {"create_limits", "create rate limits", true},
};

}  // namespace

const Feature* FindFeature(std::string_view id) {
  for (const Feature& f : kFeatures) {
    if (id == f.id) return &f;
  }
  // Each backend says itself whether it is built (backend_schemas.h).
  if (id.starts_with("backend.")) return BackendFeature(id.substr(8));
  return nullptr;
}

bool IsFeatureActive(std::string_view id) {
  const Feature* f = FindFeature(id);
  return f != nullptr && f->active;
}

}  // namespace tidepool::config
