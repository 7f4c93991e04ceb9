// Writes the seed corpora of fuzz_agent and fuzz_client (format.h) into DIR/fuzz_agent and
// DIR/fuzz_client:   fuzz_gen_corpus fuzz/corpus
// Each seed is a small, valid conversation, so the fuzzer starts from messages the core accepts
// and from the ids the fuzz Core knows (tasks t0..t4, t3/0, t3/1; workers w1, w2; pools p, q, local).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "format.h"
#include "tidepool/v1/agent.pb.h"
#include "tidepool/v1/pool.pb.h"
#include "tidepool/v1/task.pb.h"

using namespace tidepool;
using namespace tidepool::fuzz;

namespace {

// ---- agent messages ----

v1::AgentMessage Hello(const std::string& name, const std::string& pool, int slots,
                       const std::vector<std::pair<std::string, int>>& holds = {}, const std::string& token = "") {
  v1::AgentMessage m;
  auto* h = m.mutable_hello();
  h->set_name(name);
  h->set_pool(pool);
  h->set_token(token);
  h->set_slots(slots);
  h->set_version("0.1.0");
  h->set_hostname("host-" + name);
  h->set_address("10.0.0.1:7701");
  h->set_instance_id("inst-" + name);
  (*h->mutable_labels())["zone"] = "a";
  h->mutable_resources()->set_cpus(4);
  h->mutable_resources()->set_memory_bytes(1 << 30);
  for (const auto& [id, attempt] : holds) {
    auto* t = h->add_tasks();
    t->set_task_id(id);
    t->set_attempt(attempt);
  }
  return m;
}

v1::AgentMessage Heartbeat(uint64_t seq) {
  v1::AgentMessage m;
  m.mutable_heartbeat()->set_seq(seq);
  return m;
}

v1::AgentMessage Started(const std::string& id, int attempt) {
  v1::AgentMessage m;
  m.mutable_started()->set_task_id(id);
  m.mutable_started()->set_attempt(attempt);
  m.mutable_started()->set_pid(4242);
  return m;
}

v1::AgentMessage Output(const std::string& id, int attempt, int stream, uint64_t offset, const std::string& data) {
  v1::AgentMessage m;
  auto* o = m.mutable_output();
  o->set_task_id(id);
  o->set_attempt(attempt);
  o->set_stream(static_cast<v1::OutputStream>(stream));
  o->set_offset(offset);
  o->set_data(data);
  return m;
}

v1::AgentMessage Exited(const std::string& id, int attempt, int code, int signal = 0, const std::string& reason = "",
                        const std::string& error = "") {
  v1::AgentMessage m;
  auto* e = m.mutable_exited();
  e->set_task_id(id);
  e->set_attempt(attempt);
  e->set_has_exit_code(signal == 0 && error.empty());
  e->set_exit_code(code);
  e->set_signal(signal);
  e->set_reason(reason);
  e->set_error(error);
  e->set_command_not_found(code == 127);
  e->set_stdout_bytes(6);
  return m;
}

v1::AgentMessage StdinAck(const std::string& id, uint64_t written) {
  v1::AgentMessage m;
  m.mutable_stdin_ack()->set_task_id(id);
  m.mutable_stdin_ack()->set_written(written);
  return m;
}

std::string A(uint8_t ctl, const v1::AgentMessage& m) { return EncodeRecord(ctl, m.SerializeAsString()); }

// ---- client requests ----

v1::TaskSpec Spec(const std::string& name, const std::string& pool, std::vector<std::string> argv = {"echo", "hi"}) {
  v1::TaskSpec s;
  for (auto& a : argv) s.add_argv(a);
  s.set_name(name);
  s.set_pool(pool);
  return s;
}

std::string Submit(const v1::TaskSpec& s, uint8_t arg = 0) {
  v1::SubmitRequest r;
  *r.mutable_spec() = s;
  return EncodeRecord(static_cast<uint8_t>(client_op::kSubmit | (arg << 4)), r.SerializeAsString());
}

template <class Msg>
std::string C(uint8_t op, const Msg& m, uint8_t arg = 0) {
  return EncodeRecord(static_cast<uint8_t>(op | (arg << 4)), m.SerializeAsString());
}

std::string Id(uint8_t op, const std::string& id) {
  switch (op) {
    case client_op::kGetTask: { v1::GetTaskRequest r; r.set_id(id); return C(op, r); }
    case client_op::kCancelTask: { v1::CancelTaskRequest r; r.set_id(id); return C(op, r); }
    case client_op::kWatch: { v1::WatchTaskRequest r; r.set_id(id); return C(op, r); }
    case client_op::kLogs: { v1::StreamLogsRequest r; r.set_id(id); r.set_follow(true); return C(op, r); }
    case client_op::kGetPool: { v1::GetPoolRequest r; r.set_name(id); return C(op, r); }
    case client_op::kListWorkers: { v1::ListWorkersRequest r; r.set_pool(id); return C(op, r); }
    case client_op::kDrainWorker: { v1::WorkerRequest r; r.set_name(id); return C(op, r); }
    case client_op::kDeleteWorker: { v1::WorkerRequest r; r.set_name(id); r.set_force(true); return C(op, r); }
  }
  return "";
}

std::string RunStart(const v1::TaskSpec& s) {
  v1::RunRequest r;
  *r.mutable_start() = s;
  return C(client_op::kRun, r);
}

std::string RunIn(uint8_t which, const v1::RunRequest& r) { return C(client_op::kRunInput, r, which); }

std::string Agent(const v1::AgentMessage& m, bool settle = true) {
  return EncodeRecord(static_cast<uint8_t>(client_op::kAgent | (settle ? 0x10 : 0)), m.SerializeAsString());
}

void Write(const std::string& dir, const std::string& name, const std::string& content) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out << content;
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string agent_dir = std::string(argv[1]) + "/fuzz_agent";
  const std::string client_dir = std::string(argv[1]) + "/fuzz_client";
  ::mkdir(argv[1], 0755);
  ::mkdir(agent_dir.c_str(), 0755);
  ::mkdir(client_dir.c_str(), 0755);

  using namespace agent_ctl;
  const uint8_t S = kSettle;

  // A well-behaved agent: joins p with 2 slots, runs t0 and t1 (which fails once and retries).
  Write(agent_dir, "happy", A(kTokenJoin | S, Hello("w1", "p", 2)) + A(0, Started("t0", 1)) +
                                A(0, Output("t0", 1, 1, 0, "hello\n")) + A(0, Output("t0", 1, 2, 0, "warn\n")) +
                                A(0, Output("t0", 1, 1, 3, "lo\nmore\n")) + A(0, Heartbeat(1)) +
                                A(S, Exited("t0", 1, 0)) + A(S, Exited("t1", 1, 1)) + A(S, Heartbeat(2)) +
                                A(S, Exited("t1", 2, 0)) + A(S, Exited("t4", 1, 0)));
  // Wrong token, then the worker token of a name the pool does not know, then no hello at all.
  Write(agent_dir, "refused", A(kTokenAsIs, Hello("w1", "p", 1, {}, "not-a-token")) +
                                  A(kTokenWorker, Hello("w9", "p", 1)) + A(kLink1, Heartbeat(1)) +
                                  A(kTokenJoin, Hello("w2", "nosuchpool", 1)));
  // The vrun task t2 (interactive): output goes to the client, stdin acks, then it ends.
  Write(agent_dir, "interactive", A(kTokenJoin | S, Hello("w1", "p", 4)) + A(0, Started("t2", 1)) +
                                      A(0, Output("t2", 1, 1, 0, "prompt$ ")) + A(0, StdinAck("t2", 5)) +
                                      A(0, Output("t2", 1, 1, 100, "gap")) + A(0, Output("t2", 1, 2, 0, "err")) +
                                      A(S, Exited("t2", 1, 130, 2)));
  // The gang t3 on two workers; one shard is killed, the other then stopped.
  Write(agent_dir, "gang", A(kTokenJoin | S, Hello("w1", "p", 1)) + A(kLink1 | kTokenJoinP | S, Hello("w2", "p", 1)) +
                               A(0, Exited("t0", 1, 0)) + A(kLink1 | S, Exited("t3/1", 1, 0, 9)) +
                               A(S, Exited("t3/0", 1, 143, 15, "cancelled")) + A(kEndStream, Heartbeat(3)) +
                               A(kLink1 | kEndStream, Heartbeat(4)));
  // A reconnect of the same worker: the first stream is replaced; the agent reports what it holds.
  Write(agent_dir, "reconnect", A(kTokenJoin | S, Hello("w1", "p", 2)) +
                                    A(kLink1 | kTokenWorker | S, Hello("w1", "p", 2, {{"t0", 1}, {"t1", 1}, {"zz", 3}})) +
                                    A(kLink1, Exited("zz", 3, 0)) + A(0, Heartbeat(1)) + A(kLink1 | kEndStream, Heartbeat(2)) +
                                    A(kTokenWorker | S, Hello("w1", "p", 2, {{"t0", 1}})) + A(S, Exited("t0", 1, 0)));
  // A worker of the autoscaled pool with a valid worker token but an unknown name: held.
  Write(agent_dir, "held", A(kTokenWorker, Hello("local-abc", "local", 1)) + A(0, Heartbeat(1)) +
                               A(kLink1 | kTokenJoin, Hello("w3", "q", 1)));
  // Hostile values: unknown enums, huge offsets and slots, an error exit, a timeout.
  Write(agent_dir, "hostile", A(kTokenJoin | S, Hello("w1", "p", 2147483647)) +
                                  A(0, Output("t0", 1, 77, 18446744073709551000ull, "x")) +
                                  A(0, Output("t0", -1, 1, 0, "y")) + A(S, Exited("t0", 1, 127, 0, "", "command not found: x")) +
                                  A(S, Exited("t1", 1, 0, 0, "timeout")) + A(S, Exited("t4", 1, 0, 99999)));
  // A large output (inflated by the harness towards the 16 MiB limit), then a truncated record.
  Write(agent_dir, "oversize", A(kTokenJoin | S, Hello("w1", "p", 1)) +
                                   A(kInflateMask, Output("t0", 1, 1, 0, "0123456789abcdef")) +
                                   A(0, Exited("t0", 1, 0)).substr(0, 9));

  // ---- client ----
  {
    v1::TaskSpec a = Spec("a", "p");
    (*a.mutable_env())["K"] = "v";
    (*a.mutable_labels())["team"] = "x";
    v1::ListTasksRequest all;
    all.set_all(true);
    v1::ListTasksRequest byl;
    (*byl.mutable_labels())["team"] = "x";
    byl.set_state(v1::TASK_STATE_RUNNING);
    byl.set_limit(1);
    Write(client_dir, "batch", Submit(a) + Agent(Started("a", 1)) + Agent(Output("a", 1, 1, 0, "out\n")) +
                                   Id(client_op::kWatch, "a") + Agent(Exited("a", 1, 0)) + Id(client_op::kGetTask, "a") +
                                   C(client_op::kListTasks, all) + C(client_op::kListTasks, byl) + Id(client_op::kLogs, "a") +
                                   Id(client_op::kCancelTask, "a") + EncodeRecord(client_op::kUnwatch, ""));
  }
  {
    v1::TaskSpec r = Spec("r", "p", {"sh"});
    r.set_tty(true);
    r.set_term("xterm");
    r.mutable_terminal_size()->set_rows(24);
    r.mutable_terminal_size()->set_cols(80);
    v1::RunRequest in;
    in.set_stdin("ls\n");
    v1::RunRequest eof;
    eof.set_stdin_eof(true);
    v1::RunRequest sig;
    sig.set_signal(2);
    v1::RunRequest rs;
    rs.mutable_resize()->set_rows(50);
    rs.mutable_resize()->set_cols(132);
    v1::RunRequest cancel;
    cancel.set_cancel(true);
    Write(client_dir, "vrun", RunStart(r) + Agent(Started("r", 1)) + RunIn(0, in) + Agent(StdinAck("r", 3)) +
                                  Agent(Output("r", 1, 1, 0, "file\n")) + RunIn(0, rs) + RunIn(0, sig) + RunIn(0, eof) +
                                  Agent(Exited("r", 1, 0)) + RunIn(0, cancel) + EncodeRecord(client_op::kRunGone, ""));
    // Two vruns on a full pool: one waits, is signalled while queued, the other disconnects.
    v1::TaskSpec r2 = Spec("r2", "p", {"sleep", "1"});
    v1::TaskSpec r3 = Spec("r3", "p", {"sleep", "1"});
    v1::TaskSpec r4 = Spec("r4", "any", {"sleep", "1"});
    Write(client_dir, "vrun_queued", RunStart(r2) + RunStart(r3) + RunStart(r4) + RunIn(2, sig) +
                                         EncodeRecord(client_op::kRunGone | 0x10, "") + RunIn(1, cancel) +
                                         Agent(Exited("r2", 1, 0)));
  }
  {
    v1::TaskSpec g = Spec("g", "any", {"train"});
    g.set_shards(3);
    g.set_gang(true);
    v1::TaskSpec n = Spec("n", "p");
    n.set_shards(2);
    v1::TaskSpec d = Spec("d", "p");
    d.add_after("n");
    d.add_after_success("g");
    v1::TaskSpec bad = Spec("bad", "p");
    bad.set_kind(static_cast<v1::TaskKind>(9));
    bad.set_priority(-5);
    bad.set_retries(3);
    bad.set_retry_on_failure(true);
    bad.set_timeout_ms(1);
    v1::TaskSpec child = Spec("c", "");
    child.set_parent("n/0");
    v1::ListTasksRequest weird;
    weird.set_state(static_cast<v1::TaskState>(42));
    weird.set_limit(-1);
    Write(client_dir, "trees", Submit(g) + Submit(n) + Submit(d) + Submit(bad) + Submit(child) +
                                   Agent(Exited("n/0", 1, 0)) + Agent(Exited("g/0", 1, 1)) + C(client_op::kListTasks, weird) +
                                   Id(client_op::kCancelTask, "g") + Id(client_op::kWatch, "d") + Id(client_op::kGetTask, "n/1"));
  }
  {
    v1::ListPoolsRequest lp;
    Write(client_dir, "pools", C(client_op::kListPools, lp) + Id(client_op::kGetPool, "p") + Id(client_op::kGetPool, "local") +
                                   Id(client_op::kGetPool, "nope") + Id(client_op::kListWorkers, "") +
                                   Id(client_op::kListWorkers, "q") + Submit(Spec("busy", "q")) +
                                   Id(client_op::kDrainWorker, "w2") + Id(client_op::kDrainWorker, "w1") +
                                   Id(client_op::kDeleteWorker, "w1") + Id(client_op::kDeleteWorker, "ghost") +
                                   Submit(Spec("l", "local")) + Id(client_op::kCancelTask, "l"));
  }
  std::printf("wrote seeds to %s and %s\n", agent_dir.c_str(), client_dir.c_str());
  return 0;
}
