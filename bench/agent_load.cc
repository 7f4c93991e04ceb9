// tidepool-agent-load — P8: hold N agent streams against a running server.
//
// --protocol fast (the default): what `tidepool-agent` speaks, the fast protocol's agent frames
// (common/fast_protocol.h) on one plain TCP connection per agent, TCP keepalive as the agent sets
// it; one epoll thread holds every connection and sends every heartbeat.
//
// --protocol grpc: what `tidepool agent` speaks with TLS (here in plaintext). Each simulated agent has its OWN gRPC channel (a local subchannel pool and a unique channel
// argument, so no two share a TCP connection), sends a real AgentHello (a static pool's join
// token and a distinct worker name), waits for its Welcome and then heartbeats at the interval
// the Welcome names (and any later HeartbeatInterval), as `tidepool agent` does. By default each channel also pings the server
// every 60 s when idle, like the real agent (--keepalive-ms 0 turns that off).
//
// Threads stay few: every stream is a gRPC callback reactor (gRPC's own pollers and executor
// drive them all), and one heartbeat thread walks a timer heap. Connections are opened with at
// most --max-connecting hellos in flight, so the server's accept backlog is not flooded.
//
// It prints (one "key value" per line, for scripts):
//   agents_requested, agents_accepted (a Welcome received), agents_refused, agents_failed,
//   agents_connected_at_end, ramp_seconds, hold_seconds, heartbeats_sent, heartbeats_skipped,
//   welcome_ms_p50/p99/max, client_threads, client_rss_mb.
// Exit status 0 iff every agent was accepted and still connected at the end.
//
// Usage:
//   tidepool-agent-load --server HOST:PORT --pool POOL --token JOIN_TOKEN [-n 10000]
//                       [--duration SECONDS (0 = until SIGINT/SIGTERM)] [--ready-file PATH]
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_map>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/fast_protocol.h"
#include "agent_load.h"
#include "tidepool/v1/agent.grpc.pb.h"


namespace agent_load {

std::atomic<bool> g_stop{false};





[[noreturn]] void Usage(const char* why) {
  if (why) std::fprintf(stderr, "tidepool-agent-load: %s\n", why);
  std::fprintf(stderr,
               "usage: tidepool-agent-load --server HOST:PORT --pool POOL --token JOIN_TOKEN [options]\n"
               "  -n, --agents N          agent streams to hold (default 10000)\n"
               "  --duration SECONDS      hold this long once all are connected; 0 = until SIGINT/SIGTERM (default 30)\n"
               "  --heartbeat-ms MS       heartbeat interval (default: what the server's Welcome says)\n"
               "  --protocol fast|grpc    the agent's transport: fast protocol frames (tidepool-agent) or gRPC (default fast)\n"
               "  --keepalive-ms MS       keepalive per connection, like the agent: TCP (fast) or HTTP/2 pings (grpc)\n"
               "                          (default 60000; 0 = off)\n"
               "  --max-connecting K      hellos in flight while ramping up (default 200)\n"
               "  --ramp-timeout SECONDS  give up waiting for welcomes after this (default 300)\n"
               "  --name-prefix P         worker names are P-0 .. P-(N-1) (default load-PID)\n"
               "  --ready-file PATH       written (\"ready ACCEPTED\") once the ramp is over\n"
               "  --quiet                 no progress lines on stderr\n");
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  o.name_prefix = "load-" + std::to_string(getpid());
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--server") o.server = value();
    else if (a == "--pool") o.pool = value();
    else if (a == "--token") o.token = value();
    else if (a == "-n" || a == "--agents") o.n = std::stoi(value());
    else if (a == "--duration") o.duration_s = std::stod(value());
    else if (a == "--heartbeat-ms") o.heartbeat_ms = std::stoi(value());
    else if (a == "--keepalive-ms") o.keepalive_ms = std::stoi(value());
    else if (a == "--max-connecting") o.max_connecting = std::max(1, std::stoi(value()));
    else if (a == "--ramp-timeout") o.ramp_timeout_s = std::stod(value());
    else if (a == "--name-prefix") o.name_prefix = value();
    else if (a == "--ready-file") o.ready_file = value();
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--protocol") {
      std::string p = value();
      if (p != "fast" && p != "grpc") Usage("--protocol is fast or grpc");
      o.fast = p == "fast";
    }
    else if (a == "-h" || a == "--help") Usage(nullptr);
    else Usage(("unknown argument " + a).c_str());
  }
  if (o.server.empty() || o.pool.empty() || o.token.empty()) Usage("--server, --pool and --token are required");
  if (o.n < 1) Usage("-n must be at least 1");
  return o;
}

void RaiseFileLimit(int n) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = static_cast<rlim_t>(n) + 1024;
  rlim_t target = rl.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, rl.rlim_max);
  if (rl.rlim_cur < target) {
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < want) {
    std::fprintf(stderr, "tidepool-agent-load: warning: open-file limit %llu < %llu needed for %d agents\n",
                 static_cast<unsigned long long>(rl.rlim_cur), static_cast<unsigned long long>(want), n);
  }
}

long ProcStatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  size_t len = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, len, key) == 0 && line.size() > len && line[len] == ':') return std::atol(line.c_str() + len + 1);
  }
  return -1;
}

void FillHello(const Options& o, const std::string& instance, int index, v1::AgentHello* h) {
  h->set_name(o.name_prefix + "-" + std::to_string(index));
  h->set_pool(o.pool);
  h->set_token(o.token);
  h->set_slots(1);
  h->set_version("0.1.0");
  h->set_hostname(h->name());
  h->set_address(h->name());
  h->mutable_resources()->set_cpus(2);
  h->mutable_resources()->set_memory_bytes(int64_t{8} << 30);
  h->set_instance_id(instance + "-" + std::to_string(index));
}

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[std::min(i, v.size() - 1)]);
}

void WriteReadyFile(const std::string& path, int accepted) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << "ready " << accepted << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

namespace {

void OnSignal(int) { g_stop = true; }

class Load;

class Agent final : public grpc::ClientBidiReactor<v1::AgentMessage, v1::ServerMessage> {
 public:
  enum State { kConnecting, kAccepted, kDone };

  Agent(Load* load, int index) : load_(load), index_(index) {}

  void Start(const Options& o, const std::string& instance);
  // Called by the heartbeat thread; false once the stream is closing (no more beats).
  bool Beat(bool* skipped);
  void Cancel() { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& s) override;

  std::atomic<int> state{kConnecting};
  std::atomic<bool> welcomed{false};
  int64_t started_ms = 0;
  int64_t welcome_ms = 0;  // hello -> welcome
  std::atomic<int> heartbeat_ms{5000};  // the Welcome's, then any later HeartbeatInterval
  grpc::Status status;  // valid once state == kDone

 private:
  void MaybeRelease(std::unique_lock<std::mutex>& lock);

  Load* load_;
  int index_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  grpc::ClientContext ctx_;
  v1::AgentMessage out_;
  v1::ServerMessage in_;
  std::mutex mu_;
  bool writing_ = false;
  bool closing_ = false;
  bool released_ = false;
  uint64_t seq_ = 0;
};

class Load {
 public:
  explicit Load(Options o) : o_(std::move(o)) {}

  int Run();

  // From reactors.
  void Welcomed(Agent* a) {
    {
      std::lock_guard lock(mu_);
      connecting_--;
      accepted_++;
      int interval = o_.heartbeat_ms > 0 ? o_.heartbeat_ms : a->heartbeat_ms.load();
      beats_.push({NowMs() + interval, a});
    }
    cv_.notify_all();
  }
  void Done(Agent* a, bool was_connecting) {
    {
      std::lock_guard lock(mu_);
      if (stop_beats_) {
        // Closed by us at the end: not counted.
      } else if (was_connecting) {
        connecting_--;
        if (a->status.error_code() == grpc::StatusCode::PERMISSION_DENIED) refused_++;
        else failed_++;
        if (first_error_.empty()) first_error_ = std::to_string(a->status.error_code()) + " " + a->status.error_message();
      } else {
        dropped_++;
        if (first_drop_.empty()) first_drop_ = std::to_string(a->status.error_code()) + " " + a->status.error_message();
      }
      done_++;
    }
    cv_.notify_all();
  }

 private:
  struct Due {
    int64_t at;
    Agent* agent;
    bool operator>(const Due& b) const { return at > b.at; }
  };

  void HeartbeatLoop();

  Options o_;
  std::vector<std::unique_ptr<Agent>> agents_;
  std::mutex mu_;
  std::condition_variable cv_;
  int connecting_ = 0, accepted_ = 0, refused_ = 0, failed_ = 0, dropped_ = 0, done_ = 0;
  std::string first_error_, first_drop_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> beats_;
  bool stop_beats_ = false;
  std::atomic<uint64_t> beats_sent_{0}, beats_skipped_{0};
};

void Agent::Start(const Options& o, const std::string& instance) {
  grpc::ChannelArguments args;
  // One TCP connection per agent: no subchannel sharing between channels.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetString("tp.channel_id", std::to_string(index_));
  if (o.keepalive_ms > 0) {  // as src/agent/connection.cc
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, std::min(o.keepalive_ms, 20000));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  channel_ = grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::AgentService::NewStub(channel_);
  ctx_.set_wait_for_ready(true);  // a refused connect (full backlog) is retried, not failed

  FillHello(o, instance, index_, out_.mutable_hello());

  started_ms = NowMs();
  stub_->async()->Connect(&ctx_, this);
  AddHold();  // released when the stream is closing and no write is in flight (see MaybeRelease)
  writing_ = true;
  StartWrite(&out_);
  StartRead(&in_);
  StartCall();
}

bool Agent::Beat(bool* skipped) {
  *skipped = false;
  {
    std::lock_guard lock(mu_);
    if (closing_) return false;
    if (writing_) {  // the previous message is still in flight: skip this beat
      *skipped = true;
      return true;
    }
    writing_ = true;
    out_.Clear();
    out_.mutable_heartbeat()->set_seq(++seq_);
  }
  StartWrite(&out_);
  return true;
}

void Agent::MaybeRelease(std::unique_lock<std::mutex>& lock) {
  if (closing_ && !writing_ && !released_) {
    released_ = true;
    lock.unlock();
    RemoveHold();
  }
}

void Agent::OnWriteDone(bool ok) {
  std::unique_lock lock(mu_);
  writing_ = false;
  if (!ok) closing_ = true;  // the stream is broken; the read will fail too
  MaybeRelease(lock);
}

void Agent::OnReadDone(bool ok) {
  if (!ok) {
    std::unique_lock lock(mu_);
    closing_ = true;
    MaybeRelease(lock);
    return;
  }
  if (in_.has_welcome() && !welcomed) {
    welcome_ms = NowMs() - started_ms;
    if (in_.welcome().heartbeat_interval_ms() > 0) heartbeat_ms = static_cast<int>(in_.welcome().heartbeat_interval_ms());
    welcomed = true;
    state = kAccepted;
    load_->Welcomed(this);
  }
  if (in_.has_heartbeat_interval() && in_.heartbeat_interval().interval_ms() > 0) {
    heartbeat_ms = static_cast<int>(in_.heartbeat_interval().interval_ms());
  }
  // Anything else (a StartTask would be a surprise on an empty static pool) is ignored.
  StartRead(&in_);
}

void Agent::OnDone(const grpc::Status& s) {
  status = s;
  bool was_connecting = !welcomed;
  state = kDone;
  load_->Done(this, was_connecting);
}

void Load::HeartbeatLoop() {
  std::unique_lock lock(mu_);
  while (!stop_beats_) {
    if (beats_.empty()) {
      cv_.wait(lock);
      continue;
    }
    int64_t now = NowMs();
    Due d = beats_.top();
    if (d.at > now) {
      cv_.wait_for(lock, std::chrono::milliseconds(d.at - now));
      continue;
    }
    beats_.pop();
    lock.unlock();
    bool skipped = false;
    bool alive = d.agent->Beat(&skipped);
    (skipped ? beats_skipped_ : beats_sent_)++;
    lock.lock();
    int interval = o_.heartbeat_ms > 0 ? o_.heartbeat_ms : d.agent->heartbeat_ms.load();
    // Next beat one interval after this one was due (a late loop does not drift the cadence).
    if (alive) beats_.push({std::max(d.at + interval, now + 1), d.agent});
  }
}

int Load::Run() {
  RaiseFileLimit(o_.n);
  std::string instance = std::to_string(std::random_device{}()) + std::to_string(getpid());
  std::thread beater([this] { HeartbeatLoop(); });

  auto t0 = Clock::now();
  auto log_progress = [&](const char* phase) {
    if (o_.quiet) return;
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "[agent-load %6.1fs] %s: accepted %d, connecting %d, refused %d, failed %d, dropped %d\n", s,
                 phase, accepted_, connecting_, refused_, failed_, dropped_);
  };

  // Ramp: open every stream with at most max_connecting hellos outstanding.
  agents_.reserve(static_cast<size_t>(o_.n));
  auto ramp_deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.ramp_timeout_s));
  auto next_log = t0 + std::chrono::seconds(2);
  for (int i = 0; i < o_.n && !g_stop; ++i) {
    {
      std::unique_lock lock(mu_);
      while (connecting_ >= o_.max_connecting && !g_stop && Clock::now() < ramp_deadline) {
        cv_.wait_for(lock, std::chrono::milliseconds(100));
        if (Clock::now() >= next_log) {
          log_progress("ramp");
          next_log += std::chrono::seconds(2);
        }
      }
      if (Clock::now() >= ramp_deadline) break;
      connecting_++;
    }
    agents_.push_back(std::make_unique<Agent>(this, i));
    agents_.back()->Start(o_, instance);
  }
  const int started = static_cast<int>(agents_.size());
  {
    std::unique_lock lock(mu_);
    while (connecting_ > 0 && !g_stop && Clock::now() < ramp_deadline) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (Clock::now() >= next_log) {
        log_progress("ramp");
        next_log += std::chrono::seconds(2);
      }
    }
  }
  auto ramp_end = Clock::now();
  double ramp_s = std::chrono::duration<double>(ramp_end - t0).count();
  int accepted_at_ramp;
  {
    std::lock_guard lock(mu_);
    accepted_at_ramp = accepted_;
    log_progress("ramp done");
  }
  WriteReadyFile(o_.ready_file, accepted_at_ramp);

  // Hold.
  auto hold_end = ramp_end + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration_s));
  next_log = ramp_end + std::chrono::seconds(10);
  while (!g_stop && (o_.duration_s <= 0 || Clock::now() < hold_end)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (Clock::now() >= next_log) {
      std::lock_guard lock(mu_);
      log_progress("hold");
      next_log += std::chrono::seconds(10);
    }
  }
  double hold_s = std::chrono::duration<double>(Clock::now() - ramp_end).count();

  // Count who is still connected, then close everything.
  int connected_at_end = 0;
  for (const auto& a : agents_) connected_at_end += a->state.load() == Agent::kAccepted ? 1 : 0;
  long threads = ProcStatusKb("Threads");
  long rss_kb = ProcStatusKb("VmRSS");
  int accepted, refused, failed, dropped, still_connecting;
  {
    std::lock_guard lock(mu_);
    stop_beats_ = true;
    accepted = accepted_;
    refused = refused_;
    failed = failed_;
    dropped = dropped_;
    still_connecting = connecting_;
  }
  cv_.notify_all();
  beater.join();
  for (const auto& a : agents_) a->Cancel();
  {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return done_ >= started; });
  }

  Report r;
  for (const auto& a : agents_) {
    if (a->welcomed) r.welcome_ms.push_back(a->welcome_ms);
  }
  std::lock_guard lock(mu_);
  // Counts as they were when the hold ended (closing everything afterwards is not a failure).
  r.requested = o_.n;
  r.accepted = accepted;
  r.refused = refused;
  r.failed = failed + still_connecting + (o_.n - started);
  r.dropped = dropped;
  r.connected_at_end = connected_at_end;
  r.ramp_s = ramp_s;
  r.hold_s = hold_s;
  r.beats_sent = beats_sent_.load();
  r.beats_skipped = beats_skipped_.load();
  r.first_error = first_error_;
  r.first_drop = first_drop_;
  r.threads = threads;
  r.rss_kb = rss_kb;
  return r.Print();
}

}  // namespace
}  // namespace agent_load

using namespace agent_load;  // NOLINT: main is this program's

int main(int argc, char** argv) {
  Options o = Parse(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int rc;
  if (o.fast) {
    rc = RunFast(std::move(o));
  } else {
    Load load(std::move(o));
    rc = load.Run();
  }
  // Reactors and channels are torn down with `load`; gRPC's threads exit with the process.
  std::_Exit(rc);
}
