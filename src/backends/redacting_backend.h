// The one door a backend's words come in by: every error message (and every listed status) a
// backend returns is scrubbed of secrets (common/redact.h) before the pool controller sees it.
// The controller's last error, its events and log lines, `pool get/list`, metrics, waiting vruns
// and the web status page all carry only what passed here.
#pragma once

#include <memory>

#include "backends/backend.h"
#include "common/redact.h"

namespace tidepool::backends {

// A redactor for the server: the configuration's secret values (config::SecretValues) and the
// secret-looking variables of `env` ("NAME=VALUE", the server's environment, which the command
// backend's scripts inherit).
std::shared_ptr<const Redactor> ServerRedactor(const config::Config& config, const std::vector<std::string>& env);

std::unique_ptr<Backend> Redacting(std::unique_ptr<Backend> inner, std::shared_ptr<const Redactor> redactor);

}  // namespace tidepool::backends
