// tidepool-agent-load (agent_load.cc): what its two modes share: the options, the agents' hellos,
// the report both print. The gRPC mode is in agent_load.cc, the fast one in agent_load_fast.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tidepool/v1/agent.pb.h"

namespace agent_load {

using Clock = std::chrono::steady_clock;
namespace v1 = tidepool::v1;

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

struct Options {
  std::string server;
  std::string pool;
  std::string token;
  std::string name_prefix;
  int n = 10000;
  double duration_s = 30;
  int heartbeat_ms = 0;  // 0: the interval the server's Welcome names
  int keepalive_ms = 60000;
  int max_connecting = 200;
  double ramp_timeout_s = 300;
  std::string ready_file;
  bool quiet = false;
  bool fast = true;  // --protocol fast|grpc
};

// The usage on stderr (after `why`, if any), then exit(2).
[[noreturn]] void Usage(const char* why);
// The command line; exits with the usage on a bad one.
Options Parse(int argc, char** argv);
// Raises the open-file limit to what N connections need (soft up to hard).
void RaiseFileLimit(int n);
// A field of /proc/self/status (kB for sizes), -1 when absent.
long ProcStatusKb(const char* key);
// Agent number `index`'s hello: a distinct name, the join token, a real agent's other fields.
void FillHello(const Options& o, const std::string& instance, int index, v1::AgentHello* h);
double Percentile(std::vector<int64_t> v, double p);
// "ready ACCEPTED" into `path` ("" = none), atomically.
void WriteReadyFile(const std::string& path, int accepted);

// Set by SIGINT/SIGTERM: both modes stop ramping or holding.
extern std::atomic<bool> g_stop;

// What both modes print at the end (one "key value" per line).
struct Report {
  int requested = 0, accepted = 0, refused = 0, failed = 0, dropped = 0, connected_at_end = 0;
  double ramp_s = 0, hold_s = 0;
  uint64_t beats_sent = 0, beats_skipped = 0;
  std::vector<int64_t> welcome_ms;
  std::string first_error, first_drop;
  long threads = -1, rss_kb = -1;  // as they were at the end of the hold (-1: now)

  int Print() const {
    std::printf("agents_requested %d\n", requested);
    std::printf("agents_accepted %d\n", accepted);
    std::printf("agents_refused %d\n", refused);
    std::printf("agents_failed %d\n", failed);  // incl. never welcomed
    std::printf("agents_dropped %d\n", dropped);  // welcomed, then closed before the end
    std::printf("agents_connected_at_end %d\n", connected_at_end);
    std::printf("ramp_seconds %.2f\n", ramp_s);
    std::printf("hold_seconds %.2f\n", hold_s);
    std::printf("heartbeats_sent %llu\n", static_cast<unsigned long long>(beats_sent));
    std::printf("heartbeats_skipped %llu\n", static_cast<unsigned long long>(beats_skipped));
    std::printf("welcome_ms_p50 %.0f\n", Percentile(welcome_ms, 0.50));
    std::printf("welcome_ms_p99 %.0f\n", Percentile(welcome_ms, 0.99));
    std::printf("welcome_ms_max %.0f\n", Percentile(welcome_ms, 1.0));
    std::printf("client_threads %ld\n", threads >= 0 ? threads : ProcStatusKb("Threads"));
    std::printf("client_rss_mb %.1f\n", static_cast<double>(rss_kb >= 0 ? rss_kb : ProcStatusKb("VmRSS")) / 1024.0);
    if (!first_error.empty()) std::printf("first_error %s\n", first_error.c_str());
    if (!first_drop.empty()) std::printf("first_drop %s\n", first_drop.c_str());
    std::fflush(stdout);
    return accepted == requested && connected_at_end == requested ? 0 : 1;
  }
};

// --protocol fast (agent_load_fast.cc).
int RunFast(Options o);

}  // namespace agent_load
