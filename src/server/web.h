// The pages at server.metrics_listen as this server fills them (metrics/http_endpoint.h serves
// them): the status page shows the pools and workers the caller may see through the API, and,
// with auth on, the gate decides from each request's bearer token what it may see:
//   no token, or one that is not accepted   401, nothing shown (/healthz stays open: "ok"/"unhealthy")
//   server.auth.metrics_token               /metrics, every series; nothing else (403)
//   a user's token (or a task's, as its owner)  `/` and /metrics, only the pools the user may view;
//                                           series of no pool (process, store) for a `*` role
#pragma once

#include <string>

#include "metrics/http_endpoint.h"
#include "server/auth.h"
#include "server/services.h"

namespace tidepool::server {

std::string StatusPage(Core& core, const Caller& caller = {});

// `metrics_token` "" = none configured.
metrics::HttpEndpoint::Gate WebGate(const Authenticator* auth, Core* core, const std::string& metrics_token);

}  // namespace tidepool::server
