#include "config/features.h"

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
    {"backend.local", "local backend", true},
    {"backend.command", "command backend", true},
    {"backend.ssh", "ssh backend", false},
    {"backend.slurm", "slurm backend", false},
    {"backend.kubernetes", "kubernetes backend", false},
    {"backend.aws_launch_template", "aws_launch_template backend", false},
    {"backend.gce_instance_group", "gce_instance_group backend", false},
    {"backend.nebius_launch_template", "nebius_launch_template backend", false},
    {"backend.mithril_spot_bid", "mithril_spot_bid backend", false},
    {"backend.digitalocean_droplet", "digitalocean_droplet backend", false},
};

}  // namespace

const Feature* FindFeature(std::string_view id) {
  for (const Feature& f : kFeatures) {
    if (id == f.id) return &f;
  }
  return nullptr;
}

bool IsFeatureActive(std::string_view id) {
  const Feature* f = FindFeature(id);
  return f != nullptr && f->active;
}

}  // namespace tidepool::config
