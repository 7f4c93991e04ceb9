// The standard process_* metrics, read from /proc/self at scrape time.
#pragma once

#include "metrics/registry.h"

namespace tidepool::metrics {

// Adds a collector for process_cpu_seconds_total (counter), process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds
// and process_threads. A figure that cannot be read (no /proc) is left out.
void AddProcessCollector(Registry& registry);

}  // namespace tidepool::metrics
