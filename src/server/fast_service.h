// The front door of the server's port, and the fast client protocol (common/fast_protocol.h).
//
// The server owns its listening sockets. Every accepted connection is sniffed on one epoll
// thread (its first byte peeked, never blocking; a connection still silent 20 ms after it was
// accepted is given to gRPC as it is): "TPF1" is a fast client (`vrun`/`vbatch` from
// src/fastclient), served here;
// anything else is handed to the gRPC server (grpc::AddInsecureChannelFromFd), which has no
// listening port of its own. Users configure nothing: one port, both protocols.
//
// Fast requests go to the same Core entry points and the same Authenticator as the gRPC
// TaskService (Run with a RunClient, Submit, RunInput, RunClientGone); errors are the same
// statuses with the same messages. Hostile input (garbage, oversized or truncated frames, a
// silent peer) gets a FINISH frame with the reason and/or the connection closed, nothing more.
//
// With server.tls the gRPC server keeps its own (TLS) port and this is not used: the fast
// client, which speaks no TLS, falls back to the full client.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/services.h"

namespace grpc {
class Server;
}

namespace tidepool::server {

class FastFrontDoor {
 public:
  FastFrontDoor(CoreRef* core, const Authenticator* auth) : core_(core), auth_(auth) {}
  ~FastFrontDoor();
  FastFrontDoor(const FastFrontDoor&) = delete;
  FastFrontDoor& operator=(const FastFrontDoor&) = delete;

  // Binds HOST:PORT as gRPC would: every address the host resolves to, a wildcard host ("",
  // 0.0.0.0, [::]) dual-stack. *port is the port bound (the chosen one for :0).
  Status Listen(const std::string& hostport, int* port);
  // Starts serving: fast connections here, the others to `grpc`, which must outlive Stop().
  void Start(grpc::Server* grpc);
  // Stops accepting and ends every connection not yet handed to gRPC; a vrun still attached is
  // gone for the core, as when the gRPC server shuts down. Idempotent.
  void Stop();

  class Conn;  // one accepted connection (fast_service.cc)

 private:
  void Loop();
  void Accept(int listen_fd);
  void OnReadable(const std::shared_ptr<Conn>& c);
  void HandOff(const std::shared_ptr<Conn>& c);
  void Close(const std::shared_ptr<Conn>& c);
  void Sweep();
  void PauseAccepting(bool paused);

  CoreRef* core_;
  const Authenticator* auth_;
  grpc::Server* grpc_ = nullptr;
  std::vector<int> listen_fds_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  // Steady-clock ms up to which every byte that had reached an accepted connection has been read:
  // the start of the last epoll pass that took every ready socket (server/silence.h). Shared with
  // the agent links, which may outlive this object.
  std::shared_ptr<std::atomic<int64_t>> read_horizon_ = std::make_shared<std::atomic<int64_t>>(0);
  bool accept_paused_ = false;
  std::chrono::steady_clock::time_point resume_accepting_{};
  // Loop thread only.
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, std::shared_ptr<Conn>> conns_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> sniffing_;  // silent so far, by deadline
};

}  // namespace tidepool::server
