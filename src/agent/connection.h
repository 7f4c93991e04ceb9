// The agent's link to the server: one AgentService.Connect stream at a time, re-established
// with exponential backoff (0.1 s doubling to 5 s, with jitter) whenever it breaks. A hello
// refused because another live agent holds this worker name (ALREADY_EXISTS, server/name_claim.h)
// backs off longer: 1 s doubling to 60 s, so a cloned host asks about once a minute, not
// thousands of times a second.
//
// Threads: a connection thread (connect, hello, then blocking reads) and, per connected
// stream, a writer thread. Everything they receive goes to the owner through callbacks; the
// owner sends through Send(). A small message sent while nothing is queued or being written
// goes out on the sender's own thread when the transport can take it at once (TryWriteNow):
// a task's "started" and "exited" then reach the server without waiting for the writer thread
// to be woken and scheduled (P1, P5). One write is in flight at a time, in Send() order.
// A refusal (PERMISSION_DENIED) is final: the owner is told and the connection gives up,
// because retrying a wrong identity cannot succeed.
//
// How the stream travels is a Transport: the fast protocol on plain TCP (transport_fast.h, what
// `tidepool-agent` speaks, no gRPC in the process) or gRPC (grpc/transport_grpc.h, for TLS).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "tidepool/v1/agent.pb.h"

namespace tidepool::agent {

// One AgentService.Connect stream. Write and Read block; one thread may write while another
// reads. Cancel (any thread) makes both return false.
class AgentStream {
 public:
  enum class TryWrite { kWritten, kWouldBlock, kFailed };

  virtual ~AgentStream() = default;
  virtual bool Write(const v1::AgentMessage& m) = 0;
  // Writes `m` only if the transport can take it without waiting for the peer: kWouldBlock means
  // nothing was written (Write it later). For small messages from a thread that is not the
  // writer thread; the caller makes sure no other write is in flight. Transports that cannot
  // tell say kWouldBlock.
  virtual TryWrite TryWriteNow(const v1::AgentMessage&) { return TryWrite::kWouldBlock; }
  virtual bool Read(v1::ServerMessage* m) = 0;
  virtual void Cancel() = 0;
  // Once Read has returned false: why the stream ended (PERMISSION_DENIED = refused).
  virtual Status Finish() = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // A new stream to the server. Never null: a dial that fails gives a stream whose Write/Read
  // fail and whose Finish says why.
  virtual std::unique_ptr<AgentStream> Open() = 0;
};

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

  Connection(std::string server, std::unique_ptr<Transport> transport, Callbacks callbacks);
  ~Connection();

  void Start();
  void Stop();
  // Queues a message on the current stream; false (and dropped) if not connected or if
  // `generation` is not the current connection.
  bool Send(uint64_t generation, v1::AgentMessage m);

  // Well under the server's 16 MiB message limit, and small against its 32 MiB stream window so
  // that several messages are in flight at once (P11).
  static constexpr size_t kMaxCoalescedOutput = 1024 * 1024;
  // Larger messages always go through the writer thread (and its coalescing).
  static constexpr size_t kMaxDirectWrite = 4096;

 private:
  void Run();
  void Writer(uint64_t generation, AgentStream* stream);
  // Appends to *m (task output) the queued output that continues it; caller holds mu_.
  void CoalesceOutput(v1::AgentMessage* m);
  // Ends `stream` (current_ is cleared); true if the server refused us (the caller stops).
  // `why` (if given) gets how the stream ended.
  bool EndStream(AgentStream* stream, bool welcomed, Status* why);

  static constexpr std::chrono::milliseconds kUnreachableMax{5000};
  static constexpr std::chrono::milliseconds kNameTakenFirst{1000}, kNameTakenMax{60000};

  std::string server_;
  std::unique_ptr<Transport> transport_;
  Callbacks cb_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::AgentMessage> outbox_;
  uint64_t generation_ = 0;  // current connected stream; 0 = none
  bool writer_stop_ = false;
  bool writing_ = false;             // a write is in flight (writer thread or a direct one)
  AgentStream* current_ = nullptr;  // being opened or connected; Stop() cancels it
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace tidepool::agent
