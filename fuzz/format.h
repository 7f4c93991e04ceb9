// The input format of fuzz_agent and fuzz_client: a sequence of records
//
//   [ctl: 1 byte][length: 2 bytes, little endian][payload: `length` bytes]
//
// A record whose length runs past the end of the input takes what is left (a truncated
// stream); a record cut inside its header ends the input. The payload is a serialized protobuf
// message (which one depends on the fuzzer and on `ctl`); one that does not parse is handled as
// the server's gRPC layer would (see each fuzzer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tidepool::fuzz {

struct Record {
  uint8_t ctl = 0;
  std::string_view payload;
};

class RecordReader {
 public:
  RecordReader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool Next(Record* r) {
    if (end_ - p_ < 3) return false;
    r->ctl = p_[0];
    size_t len = static_cast<size_t>(p_[1]) | (static_cast<size_t>(p_[2]) << 8);
    p_ += 3;
    if (len > static_cast<size_t>(end_ - p_)) len = static_cast<size_t>(end_ - p_);
    r->payload = std::string_view(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return true;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

inline std::string EncodeRecord(uint8_t ctl, const std::string& payload) {
  std::string out;
  out.push_back(static_cast<char>(ctl));
  size_t len = payload.size() > 0xffff ? 0xffff : payload.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>((len >> 8) & 0xff));
  out.append(payload, 0, len);
  return out;
}

// ---- fuzz_agent: each payload is a v1::AgentMessage on one of two agent streams ----
namespace agent_ctl {
constexpr uint8_t kLink1 = 0x01;         // stream 1 instead of stream 0
// What a hello's token is replaced with (the fuzzer cannot forge an HMAC):
constexpr uint8_t kTokenMask = 0x06;
constexpr uint8_t kTokenJoin = 0x00;     // the join token of the hello's own pool (right for a static pool)
constexpr uint8_t kTokenWorker = 0x02;   // the worker token of the hello's name
constexpr uint8_t kTokenJoinP = 0x04;    // the join token of pool "p", whatever pool the hello names
constexpr uint8_t kTokenAsIs = 0x06;     // the token the input carries (wrong, nearly always)
constexpr uint8_t kSettle = 0x08;        // afterwards, wait for the core's pending dispatches
constexpr uint8_t kEndStream = 0x10;     // afterwards, the stream ends (the agent went away)
// All of 0xe0: an output's data is blown up towards the server's 16 MiB message limit.
constexpr uint8_t kInflateMask = 0xe0;
}  // namespace agent_ctl

// ---- fuzz_client: ctl & 0x0f picks the call, ctl >> 4 is its small argument ----
namespace client_op {
constexpr uint8_t kSubmit = 0;        // payload: SubmitRequest
constexpr uint8_t kRun = 1;           // payload: RunRequest (must carry `start`, as the service requires)
constexpr uint8_t kRunInput = 2;      // payload: RunRequest, to vrun stream (arg % streams)
constexpr uint8_t kRunGone = 3;       // vrun stream (arg % streams) disconnects
constexpr uint8_t kListTasks = 4;     // ListTasksRequest
constexpr uint8_t kGetTask = 5;       // GetTaskRequest
constexpr uint8_t kCancelTask = 6;    // CancelTaskRequest
constexpr uint8_t kWatch = 7;         // WatchTaskRequest
constexpr uint8_t kUnwatch = 8;       // the watch (arg % watches) ends
constexpr uint8_t kLogs = 9;          // StreamLogsRequest
constexpr uint8_t kListPools = 10;    // ListPoolsRequest
constexpr uint8_t kGetPool = 11;      // GetPoolRequest
constexpr uint8_t kListWorkers = 12;  // ListWorkersRequest
constexpr uint8_t kDrainWorker = 13;  // WorkerRequest
constexpr uint8_t kDeleteWorker = 14; // WorkerRequest
constexpr uint8_t kAgent = 15;        // AgentMessage from the connected agent "w1" (arg 1: settle first)
}  // namespace client_op

}  // namespace tidepool::fuzz
