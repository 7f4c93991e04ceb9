// fuzz_agent: everything an agent can send the server, fed to a real Core.
//
// Per input: a fresh Core (empty SQLite store on tmpfs, the fuzz config of core_harness.cc) with
// tasks already waiting in pool "p":
//   t0  batch                      t1  batch, --retries 1 --retry-on-failure
//   t2  interactive (a vrun)       t3  gang of 2 (shards t3/0, t3/1)
//   t4  batch, --after t0
// so that the agent messages can name real tasks (attempt 1 once dispatched). Then the input's
// records (format.h) are played on two agent streams, as AgentService would deliver them:
//   - the first message of a stream must be a hello (else the stream is refused); its token is
//     replaced as `ctl` says, since the fuzzer cannot forge an HMAC;
//   - later messages go to AgentOutput (output) or AgentMessage (everything else);
//   - a payload that does not parse ends the stream, as gRPC would fail it;
//   - a stream the core closes (replaced by a newer connection) ends, then AgentGone;
//   - a stream whose hello is held (kPending) reads nothing until Accepted().
// At the end every stream ends and the vrun goes away. Nothing is spawned; nothing listens.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core_harness.h"
#include "format.h"

using namespace tidepool;
using namespace tidepool::fuzz;

namespace {

constexpr size_t kMaxMessageBytes = 16 * 1024 * 1024;  // the server's SetMaxReceiveMessageSize
constexpr int kMaxRecords = 512;

struct Stream {
  enum State { kFresh, kAttached, kHeld, kDone };
  std::shared_ptr<FakeAgentLink> link;
  State state = kFresh;
};

void EndStream(server::Core& core, Stream& s) {
  if (s.state == Stream::kAttached) core.AgentGone(s.link.get());
  if (s.state == Stream::kHeld) core.AgentHelloAbandoned(s.link.get());
  s.state = Stream::kDone;
}

std::vector<std::string> SetUpTasks(CoreHarness& h, std::shared_ptr<FakeRunClient>* vrun) {
  auto spec = [](const std::string& name) {
    v1::TaskSpec s;
    s.add_argv("/bin/true");
    s.set_name(name);
    s.set_pool("p");
    return s;
  };
  h.Submit(spec("t0"));
  v1::TaskSpec t1 = spec("t1");
  t1.set_retries(1);
  t1.set_retry_on_failure(true);
  h.Submit(t1);
  *vrun = std::make_shared<FakeRunClient>();
  v1::TaskSpec t2 = spec("t2");
  t2.set_tty(true);
  t2.mutable_terminal_size()->set_rows(24);
  t2.mutable_terminal_size()->set_cols(80);
  h.core().Run(*vrun, t2);
  v1::TaskSpec t3 = spec("t3");
  t3.set_shards(2);
  t3.set_gang(true);
  h.Submit(t3);
  v1::TaskSpec t4 = spec("t4");
  t4.add_after("t0");
  h.Submit(t4);
  return {"t0", "t1", "t2", "t3", "t3/0", "t3/1", "t4"};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  InitFuzzProcess();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CoreHarness h;
  server::Core& core = h.core();
  std::shared_ptr<FakeRunClient> vrun;
  const std::vector<std::string> ids = SetUpTasks(h, &vrun);

  Stream streams[2];
  RecordReader reader(data, size);
  Record r;
  for (int n = 0; n < kMaxRecords && reader.Next(&r); ++n) {
    Stream& s = streams[r.ctl & agent_ctl::kLink1];
    // What the reactor would have done meanwhile: a stream the core closed has ended, a held
    // hello that was accepted reads on.
    if (s.state == Stream::kAttached && s.link->closed()) EndStream(core, s);
    if (s.state == Stream::kHeld && s.link->accepted()) s.state = Stream::kAttached;
    if (s.state == Stream::kHeld && s.link->closed()) EndStream(core, s);
    if (s.state == Stream::kDone) s = Stream{};  // the agent connects again
    if (!s.link) s.link = h.NewLink();

    v1::AgentMessage msg;
    if (!msg.ParseFromArray(r.payload.data(), static_cast<int>(r.payload.size()))) {
      EndStream(core, s);
      continue;
    }
    switch (s.state) {
      case Stream::kFresh: {
        if (!msg.has_hello()) {  // "the first message must be a hello": refused, no core call
          s.state = Stream::kDone;
          break;
        }
        v1::AgentHello* hello = msg.mutable_hello();
        switch (r.ctl & agent_ctl::kTokenMask) {
          case agent_ctl::kTokenJoin: hello->set_token(h.tokens().JoinToken(hello->pool())); break;
          case agent_ctl::kTokenWorker: hello->set_token(h.tokens().WorkerToken(hello->name())); break;
          case agent_ctl::kTokenJoinP: hello->set_token(h.tokens().JoinToken("p")); break;
          default: break;
        }
        Status refusal;
        switch (core.AgentHello(s.link, *hello, &refusal)) {
          case server::HelloOutcome::kAccepted: s.state = Stream::kAttached; break;
          case server::HelloOutcome::kPending: s.state = Stream::kHeld; break;
          case server::HelloOutcome::kRefused: s.state = Stream::kDone; break;
        }
        break;
      }
      case Stream::kHeld:
        break;  // not read until the hello is accepted
      case Stream::kAttached:
        if (msg.has_output()) {
          if ((r.ctl & agent_ctl::kInflateMask) == agent_ctl::kInflateMask) {
            // Oversize output: as much as one message may carry.
            std::string* d = msg.mutable_output()->mutable_data();
            size_t target = std::min(kMaxMessageBytes - 1024, (d->size() + 1) * 64 * 1024);
            std::string big;
            big.reserve(target);
            while (big.size() < target) big.append(d->empty() ? std::string("x") : *d);
            big.resize(target);
            *d = std::move(big);
          }
          core.AgentOutput(s.link.get(), msg.output());
        } else {
          core.AgentMessage(s.link.get(), msg);
        }
        break;
      case Stream::kDone:
        break;
    }
    if (r.ctl & agent_ctl::kSettle) {
      h.SettleDispatches(ids, {streams[0].link, streams[1].link});
    }
    if (r.ctl & agent_ctl::kEndStream) EndStream(core, s);
  }
  for (Stream& s : streams) {
    if (s.link) EndStream(core, s);
  }
  core.RunClientGone("t2");
  return 0;
}
