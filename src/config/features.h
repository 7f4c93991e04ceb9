// Features that the configuration can already describe but the product does not do yet.
//
// A field that belongs to an inactive feature is still validated and loaded; the loader also
// reports it as an InactiveField so that `tidepool config validate` and the server's start-up log
// say it has no effect yet. When a feature lands, flip its `active` flag in features.cc.
//
// Feature ids (stable; tests and logs refer to them):
//   metrics_listen    server.metrics_listen                       Prometheus metrics endpoint
//   tls               server.tls                                  TLS
//   auth              server.auth                                 users and roles
//   postgres          server.db given as a postgresql:// URL      PostgreSQL store
//   selectors         pool selectors, selector_priority           selectors and backup pools
//   kinds             pool kinds                                  task kinds per pool
//   labels            pool labels                                 resource-group labels
//   fixed             pool fixed                                  fixed-size pools
//   batch_mode        auto_scaler.mode: MODE_BATCH                batch mode
//   schedule          auto_scaler.schedule                        time-window pre-scaling
//   scale_in          auto_scaler.scale_in                        consolidation windows
//   utilization       auto_scaler.utilization                     utilisation scaling
//   drift_sync        auto_scaler.register_timeout, kill_unknown_after, initial_delay,
//                     sync_loop_interval                          drift sync loop
//   error_backoff     auto_scaler.scale_up_error_retry_delay,
//                     allocation_error_reset_after                allocation error backoff
//   create_limits     auto_scaler.max_concurrent_creates, create_rate   create rate limits
//   backend.TYPE      a backend of that type: registered by the backend (backend_schemas.h)
#pragma once

#include <string_view>

namespace tidepool::config {

struct Feature {
  const char* id;
  const char* description;  // what the feature turns on, shown to operators
  bool active;
};

// nullptr for an id that is not in the table.
const Feature* FindFeature(std::string_view id);
// False for unknown ids too, so a typo in a caller never turns a feature on.
bool IsFeatureActive(std::string_view id);

}  // namespace tidepool::config
