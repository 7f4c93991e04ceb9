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
#include "tidepool/v1/agent.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = tidepool::v1;

int64_t NowMs() {
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

// Raises the open-file limit to what N connections need (soft up to hard).
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

// Agent number `index`'s hello: a distinct name, the join token, a real agent's other fields.
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

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

double Percentile(std::vector<int64_t> v, double p);

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

void WriteReadyFile(const std::string& path, int accepted) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << "ready " << accepted << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

// --protocol fast: every connection on one epoll thread, heartbeats from a timer heap.
class FastLoad {
 public:
  explicit FastLoad(Options o) : o_(std::move(o)) {}
  int Run();

 private:
  enum State { kConnecting, kWaiting, kAccepted, kDone };
  struct Conn {
    int fd = -1;
    int index = 0;
    State state = kConnecting;
    std::string in, out;  // received, not yet parsed; to send, not yet taken by the socket
    bool magic = false;   // the server's "TPF1" came
    int64_t started_ms = 0;
    int heartbeat_ms = 5000;
    uint64_t seq = 0;
  };
  struct Due {
    int64_t at;
    int index;
    bool operator>(const Due& b) const { return at > b.at; }
  };

  void Open(int index);
  void Flush(Conn& c);
  void OnEvent(Conn& c, uint32_t events);
  void OnFrame(Conn& c, uint8_t type, std::string_view payload);
  void End(Conn& c, const std::string& why, bool refused = false);
  void Beat(Conn& c);
  void Watch(Conn& c, uint32_t events, int op = EPOLL_CTL_MOD) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = static_cast<uint32_t>(c.index);
    ::epoll_ctl(ep_, op, c.fd, &ev);
  }
  void Poll(int timeout_ms);

  Options o_;
  int ep_ = -1;
  addrinfo* addr_ = nullptr;
  std::string instance_;
  std::vector<Conn> conns_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> beats_;
  std::vector<Due> retry_;  // refused connects (a full backlog): tried again 100 ms later
  int connecting_ = 0;
  Report r_;
};

void FastLoad::Open(int index) {
  Conn& c = conns_[static_cast<size_t>(index)];
  c.fd = ::socket(addr_->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (o_.keepalive_ms > 0) {  // as src/agent/transport_fast.cc
    int idle = std::max(1, o_.keepalive_ms / 1000), intvl = std::max(1, std::min(o_.keepalive_ms, 20000) / 3000), cnt = 3;
    ::setsockopt(c.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
  }
  c.state = kConnecting;
  c.started_ms = NowMs();
  c.in.clear();
  c.magic = false;
  int rc = ::connect(c.fd, addr_->ai_addr, addr_->ai_addrlen);
  if (rc != 0 && errno != EINPROGRESS) {
    ::close(c.fd);
    c.fd = -1;
    retry_.push_back({NowMs() + 100, index});
    return;
  }
  v1::AgentMessage m;
  FillHello(o_, instance_, index, m.mutable_hello());
  c.out.assign(tidepool::fast::kMagic, sizeof(tidepool::fast::kMagic));
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kHello, R"({"v":1,"agent":true})");
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kAgent, m.SerializeAsString());
  Watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
}

void FastLoad::Flush(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      Watch(c, EPOLLIN | EPOLLOUT);
      return;
    }
    return End(c, std::string("send: ") + std::strerror(errno));
  }
  Watch(c, EPOLLIN);
}

void FastLoad::End(Conn& c, const std::string& why, bool refused) {
  if (c.state == kDone) return;
  if (c.state == kAccepted) {
    r_.dropped++;
    if (r_.first_drop.empty()) r_.first_drop = why;
  } else {
    connecting_--;
    (refused ? r_.refused : r_.failed)++;
    if (r_.first_error.empty()) r_.first_error = why;
  }
  c.state = kDone;
  ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  c.fd = -1;
}

void FastLoad::OnFrame(Conn& c, uint8_t type, std::string_view payload) {
  if (type == tidepool::fast::kFinish) {
    bool refused = std::string(payload).find("\"code\":7") != std::string::npos;
    return End(c, "FINISH " + std::string(payload), refused);
  }
  if (type != tidepool::fast::kServer) return;  // the WELCOME of the hello
  v1::ServerMessage m;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return End(c, "a malformed server message");
  if (m.has_welcome() && c.state != kAccepted) {
    c.state = kAccepted;
    connecting_--;
    r_.accepted++;
    r_.welcome_ms.push_back(NowMs() - c.started_ms);
    if (m.welcome().heartbeat_interval_ms() > 0) c.heartbeat_ms = static_cast<int>(m.welcome().heartbeat_interval_ms());
    beats_.push({NowMs() + (o_.heartbeat_ms > 0 ? o_.heartbeat_ms : c.heartbeat_ms), c.index});
  }
  if (m.has_heartbeat_interval() && m.heartbeat_interval().interval_ms() > 0) {
    c.heartbeat_ms = static_cast<int>(m.heartbeat_interval().interval_ms());
  }
}

void FastLoad::OnEvent(Conn& c, uint32_t events) {
  if (c.state == kConnecting && (events & EPOLLOUT)) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {  // refused (a full backlog): again shortly, as gRPC's wait_for_ready would
      ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
      c.fd = -1;
      retry_.push_back({NowMs() + 100, c.index});
      return;
    }
    c.state = kWaiting;
  }
  if (events & EPOLLOUT) Flush(c);
  if (c.state == kDone || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return End(c, n == 0 ? "closed by the server" : std::string("recv: ") + std::strerror(errno));
    c.in.append(buf, static_cast<size_t>(n));
  }
  size_t at = 0;
  if (!c.magic) {
    if (c.in.size() < sizeof(tidepool::fast::kMagic)) return;
    if (c.in.compare(0, 4, tidepool::fast::kMagic, 4) != 0) return End(c, "no TPF1 preface");
    c.magic = true;
    at = 4;
  }
  while (c.state != kDone && c.in.size() - at >= tidepool::fast::kHeaderSize) {
    uint32_t len = tidepool::fast::FrameLength(c.in.data() + at);
    if (c.in.size() - at - tidepool::fast::kHeaderSize < len) break;
    OnFrame(c, tidepool::fast::FrameTypeOf(c.in.data() + at),
            std::string_view(c.in.data() + at + tidepool::fast::kHeaderSize, len));
    at += tidepool::fast::kHeaderSize + len;
  }
  if (c.state != kDone) c.in.erase(0, at);
}

void FastLoad::Beat(Conn& c) {
  if (!c.out.empty()) {  // the previous message is still queued: skip this beat
    r_.beats_skipped++;
    return;
  }
  v1::AgentMessage m;
  m.mutable_heartbeat()->set_seq(++c.seq);
  tidepool::fast::AppendFrame(c.out, tidepool::fast::kAgent, m.SerializeAsString());
  r_.beats_sent++;
  Flush(c);
}

void FastLoad::Poll(int timeout_ms) {
  int64_t now = NowMs();
  if (!beats_.empty()) timeout_ms = static_cast<int>(std::clamp<int64_t>(beats_.top().at - now, 0, timeout_ms));
  epoll_event events[256];
  int n = ::epoll_wait(ep_, events, 256, timeout_ms);
  for (int i = 0; i < n; ++i) {
    Conn& c = conns_[events[i].data.u32];
    if (c.state != kDone && c.fd >= 0) OnEvent(c, events[i].events);
  }
  now = NowMs();
  while (!beats_.empty() && beats_.top().at <= now) {
    Due d = beats_.top();
    beats_.pop();
    Conn& c = conns_[static_cast<size_t>(d.index)];
    if (c.state != kAccepted) continue;
    Beat(c);
    int interval = o_.heartbeat_ms > 0 ? o_.heartbeat_ms : c.heartbeat_ms;
    beats_.push({std::max(d.at + interval, now + 1), d.index});  // no drift from a late loop
  }
  for (size_t i = 0; i < retry_.size();) {
    if (retry_[i].at <= now) {
      int index = retry_[i].index;
      retry_[i] = retry_.back();
      retry_.pop_back();
      Open(index);
    } else {
      ++i;
    }
  }
}

int FastLoad::Run() {
  RaiseFileLimit(o_.n);
  instance_ = std::to_string(std::random_device{}()) + std::to_string(getpid());
  auto colon = o_.server.rfind(':');
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (colon == std::string::npos ||
      ::getaddrinfo(o_.server.substr(0, colon).c_str(), o_.server.substr(colon + 1).c_str(), &hints, &addr_) != 0) {
    Usage("--server: cannot resolve");
  }
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  conns_.resize(static_cast<size_t>(o_.n));
  for (int i = 0; i < o_.n; ++i) conns_[static_cast<size_t>(i)].index = i;
  r_.requested = o_.n;

  auto t0 = Clock::now();
  auto log_progress = [&](const char* phase) {
    if (o_.quiet) return;
    double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "[agent-load %6.1fs] %s: accepted %d, connecting %d, refused %d, failed %d, dropped %d\n", sec,
                 phase, r_.accepted, connecting_, r_.refused, r_.failed, r_.dropped);
  };
  auto ramp_deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.ramp_timeout_s));
  auto next_log = t0 + std::chrono::seconds(2);
  int started = 0;
  while (!g_stop && Clock::now() < ramp_deadline && (started < o_.n || connecting_ > 0)) {
    while (started < o_.n && connecting_ < o_.max_connecting) {
      connecting_++;
      Open(started++);
    }
    Poll(100);
    if (Clock::now() >= next_log) {
      log_progress("ramp");
      next_log += std::chrono::seconds(2);
    }
  }
  auto ramp_end = Clock::now();
  r_.ramp_s = std::chrono::duration<double>(ramp_end - t0).count();
  r_.failed += (o_.n - started) + connecting_;  // never opened, or never welcomed
  log_progress("ramp done");
  WriteReadyFile(o_.ready_file, r_.accepted);

  auto hold_end = ramp_end + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.duration_s));
  next_log = ramp_end + std::chrono::seconds(10);
  while (!g_stop && (o_.duration_s <= 0 || Clock::now() < hold_end)) {
    Poll(100);
    if (Clock::now() >= next_log) {
      log_progress("hold");
      next_log += std::chrono::seconds(10);
    }
  }
  r_.hold_s = std::chrono::duration<double>(Clock::now() - ramp_end).count();
  for (const Conn& c : conns_) r_.connected_at_end += c.state == kAccepted ? 1 : 0;
  return r_.Print();
}

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[std::min(i, v.size() - 1)]);
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

int main(int argc, char** argv) {
  Options o = Parse(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int rc;
  if (o.fast) {
    rc = FastLoad(std::move(o)).Run();
  } else {
    Load load(std::move(o));
    rc = load.Run();
  }
  // Reactors and channels are torn down with `load`; gRPC's threads exit with the process.
  std::_Exit(rc);
}
