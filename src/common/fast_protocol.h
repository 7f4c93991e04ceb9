// The fast client protocol ("TPF1"): what `vrun` and `vbatch` speak to the server so that they
// need neither gRPC nor protobuf (a process that merely links gRPC takes ~6 ms to start).
//
// It is served on the server's gRPC port: the server peeks at the first bytes of every
// connection; "TPF1" is this protocol, anything else goes to gRPC. Header-only and free of
// dependencies: the client (src/fastclient) and the server (src/server/fast_service.cc) share it.
//
//   client                                   server
//   "TPF1" HELLO {"v":1,"token":"..."}
//   RUN <TaskSpec>   (or SUBMIT)        -->  (one write: no round trip for the hello alone)
//                                       <--  "TPF1" WELCOME {"v":1}       (or FINISH: refused)
//                                       <--  ACCEPTED, WAITING, STARTED, STDOUT, STDERR,
//                                            STDIN_WRITTEN ... EXITED, FINISH
//   STDIN, STDIN_EOF, SIGNAL, RESIZE, CANCEL -->
//
// A vrun whose server went away (a restart, a crash: a close, or FINISH UNAVAILABLE) sends
// REATTACH {"task_id","stdout","stderr"} in place of RUN to the next server, the offsets being
// the bytes of each stream it has written out: the events follow as for RUN, its output from
// those offsets on, so that nothing is lost or repeated (Core::Reattach).
//
// Every frame: u32 payload length (big-endian) | u8 type | payload. Control payloads are JSON
// objects; STDIN/STDOUT/STDERR payloads are raw bytes; RUN and SUBMIT carry the TaskSpec in
// protobuf's binary encoding, byte for byte what the full client sends over gRPC (the client
// writes it without libprotobuf; the server parses it with the generated code), so that the
// spec means exactly the same on both paths, whatever the types of its fields. FINISH {"code":N,"message":"..."} ends a
// request the way a gRPC status ends a call (same codes, same messages); after it the server
// sends nothing more. The client sends its request right behind the hello; the server reads no
// frame past a hello it does not welcome, so the request has an effect only after a WELCOME, and
// a client that gets anything else (a refusal, an old server's bytes, a close) may safely fall
// back to gRPC. A client that gets nothing at all cannot know, and does not send it again.
//
// Agents speak it too (`tidepool-agent`, which therefore needs no gRPC: P9). Their hello says
// {"v":1,"agent":true} and carries no user token (an agent proves who it is with the worker
// token in its AgentHello); after the WELCOME the connection carries the AgentService.Connect
// stream, one protobuf message per frame, byte for byte what gRPC would carry:
//
//   "TPF1" HELLO {"v":1,"agent":true}   -->
//                                       <--  "TPF1" WELCOME {"v":1}
//   AGENT <AgentMessage: hello>         -->
//                                       <--  SERVER <ServerMessage: welcome>   (or FINISH: refused)
//   AGENT <AgentMessage> ...            <->  SERVER <ServerMessage> ...        (until FINISH or close)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tidepool::fast {

inline constexpr char kMagic[4] = {'T', 'P', 'F', '1'};
inline constexpr int kVersion = 1;
inline constexpr size_t kHeaderSize = 5;
// Largest payload either side accepts: the server's gRPC limit for requests, the client's for events.
inline constexpr uint32_t kMaxRequestFrame = 16u << 20;
inline constexpr uint32_t kMaxEventFrame = 64u << 20;

enum FrameType : uint8_t {
  // client -> server
  kHello = 1,
  kRun = 2,         // TaskSpec (protobuf encoding)
  kSubmit = 3,      // TaskSpec (protobuf encoding)
  kStdin = 4,
  kStdinEof = 5,
  kSignal = 6,      // {"signal":N}
  kResize = 7,      // {"rows":R,"cols":C}
  kCancel = 8,      // Ctrl-C while queued
  kAgent = 9,       // v1::AgentMessage (protobuf encoding); agents only
  kReattach = 10,   // instead of RUN: {"task_id":"...","stdout":N,"stderr":N} (v1::Reattach)
  // server -> client
  kWelcome = 64,
  kAccepted = 65,   // {"task_id":"...","pool":"..."}
  kWaiting = 66,    // {"pool","starting","idle","position","allocation_error"}
  kStarted = 67,    // {"worker":"..."}
  kStdout = 68,
  kStderr = 69,
  kExited = 70,     // {"state":"SUCCESS",...,"exit_code","has_exit_code","signal","reason","command_not_found","workspace_result"}: the manifest of the task's workspace at its end ("" = none)
  kStdinWritten = 71,  // {"written":N}
  kSubmitted = 72,  // {"id":"..."}
  kFinish = 73,     // {"code":N,"message":"..."}
  kServer = 74,     // v1::ServerMessage (protobuf encoding), to an agent
};

inline void AppendFrame(std::string& out, uint8_t type, std::string_view payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  char header[kHeaderSize] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                              static_cast<char>(n), static_cast<char>(type)};
  out.append(header, kHeaderSize);
  out.append(payload.data(), payload.size());
}

// Reads a frame header at `p` (kHeaderSize bytes).
inline uint32_t FrameLength(const char* p) {
  auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}
inline uint8_t FrameTypeOf(const char* p) { return static_cast<uint8_t>(p[4]); }

}  // namespace tidepool::fast
