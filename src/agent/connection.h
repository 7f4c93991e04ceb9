// The agent's link to the server: one AgentService.Connect stream at a time, re-established
// with exponential backoff (0.1 s doubling to 5 s, with jitter) whenever it breaks.
//
// Threads: a connection thread (connect, hello, then blocking reads) and, per connected
// stream, a writer thread. Everything they receive goes to the owner through callbacks; the
// owner sends through Send(). A refusal (PERMISSION_DENIED) is final: the owner is told and
// the connection gives up, because retrying a wrong identity cannot succeed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "tidepool/v1/agent.grpc.pb.h"

namespace tidepool::agent {

class Connection {
 public:
  struct Callbacks {
    // Called on the connection thread before each attempt: the hello to send (it lists the
    // tasks the agent holds, so it must be fresh).
    std::function<v1::AgentHello()> make_hello;
    // The server welcomed us on connection `generation`.
    std::function<void(uint64_t generation, const v1::Welcome&)> connected;
    std::function<void(uint64_t generation, v1::ServerMessage)> message;
    std::function<void(uint64_t generation)> disconnected;
    // The server refused this agent's identity; no more attempts follow.
    std::function<void(const std::string& why)> refused;
  };

  // credentials: null = plaintext.
  Connection(std::string server, Callbacks callbacks, int keepalive_ms = 60000,
             std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);
  ~Connection();

  void Start();
  void Stop();
  // Queues a message on the current stream; false (and dropped) if not connected or if
  // `generation` is not the current connection.
  bool Send(uint64_t generation, v1::AgentMessage m);

 private:
  void Run();
  void Writer(uint64_t generation, grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>* stream);
  // Appends to *m (task output) the queued output that continues it; caller holds mu_.
  void CoalesceOutput(v1::AgentMessage* m);
  // Well under the server's 16 MiB message limit, and small against its 32 MiB stream window so
  // that several messages are in flight at once (P11).
  static constexpr size_t kMaxCoalescedOutput = 1024 * 1024;

  std::string server_;
  Callbacks cb_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::AgentMessage> outbox_;
  uint64_t generation_ = 0;  // current connected stream; 0 = none
  bool writer_stop_ = false;
  grpc::ClientContext* ctx_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace tidepool::agent
