#include "metrics/process.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace tidepool::metrics {
namespace {

struct ProcStat {
  double utime_ticks = 0;
  double stime_ticks = 0;
  double threads = 0;
  double start_ticks = 0;  // since boot
  double vsize_bytes = 0;
  double rss_pages = 0;
};

std::optional<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// /proc/self/stat: "pid (comm) state ppid ...". comm may hold spaces and parentheses, so the
// fields are counted from the last ')'. Field numbers as in proc(5).
std::optional<ProcStat> ReadProcStat() {
  std::optional<std::string> text = ReadFile("/proc/self/stat");
  if (!text) return std::nullopt;
  size_t close = text->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text->substr(close + 1));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string tok; rest >> tok;) f.push_back(tok);
  if (f.size() < 22) return std::nullopt;
  auto field = [&](int n) { return std::strtod(f[n - 3].c_str(), nullptr); };
  return ProcStat{.utime_ticks = field(14),
                  .stime_ticks = field(15),
                  .threads = field(20),
                  .start_ticks = field(22),
                  .vsize_bytes = field(23),
                  .rss_pages = field(24)};
}

// Boot time (seconds since the epoch) from the "btime" line of /proc/stat.
std::optional<double> ReadBootTime() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) return std::strtod(line.c_str() + 6, nullptr);
  }
  return std::nullopt;
}

std::optional<double> CountOpenFds() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/fd", ec);
  if (ec) return std::nullopt;
  double n = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return std::nullopt;
    ++n;
  }
  return n - 1;  // the directory being listed is itself an open fd
}

}  // namespace

void AddProcessCollector(Registry& registry) {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::optional<double> boot = ReadBootTime();

  registry.AddCollector([ticks, page, boot](GaugeWriter& w) {
    if (std::optional<ProcStat> s = ReadProcStat(); s && ticks > 0) {
      w.Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", {},
                (s->utime_ticks + s->stime_ticks) / ticks);
      w.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", {},
              s->rss_pages * page);
      w.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", {}, s->vsize_bytes);
      w.Gauge("process_threads", "Number of OS threads in the process.", {}, s->threads);
      if (boot) {
        w.Gauge("process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.", {},
                *boot + s->start_ticks / ticks);
      }
    }
    if (std::optional<double> fds = CountOpenFds()) {
      w.Gauge("process_open_fds", "Number of open file descriptors.", {}, *fds);
    }
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      double max = rl.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                : static_cast<double>(rl.rlim_cur);
      w.Gauge("process_max_fds", "Maximum number of open file descriptors.", {}, max);
    }
  });
}

}  // namespace tidepool::metrics
