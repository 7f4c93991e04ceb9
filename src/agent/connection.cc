#include "agent/connection.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <spdlog/spdlog.h>

namespace tidepool::agent {

Connection::Connection(std::string server, Callbacks callbacks, int keepalive_ms,
                       std::shared_ptr<grpc::ChannelCredentials> credentials)
    : server_(std::move(server)), cb_(std::move(callbacks)) {
  grpc::ChannelArguments args;
  // Notice a dead server or a cut link even when idle. Rarely needed: a healed link or a
  // restarted server answers the next heartbeat with a reset, which ends the stream at once; but
  // every ping costs the server CPU (P8), so the default period is long.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, std::min(keepalive_ms, 20000));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  channel_ = grpc::CreateCustomChannel(server_, credentials ? credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::AgentService::NewStub(channel_);
}

Connection::~Connection() { Stop(); }

void Connection::Start() { thread_ = std::thread([this] { Run(); }); }

void Connection::Stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (ctx_) ctx_->TryCancel();
    writer_stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Connection::Send(uint64_t generation, v1::AgentMessage m) {
  {
    std::lock_guard lock(mu_);
    if (generation == 0 || generation != generation_) return false;
    outbox_.push_back(std::move(m));
  }
  cv_.notify_one();
  return true;
}

void Connection::CoalesceOutput(v1::AgentMessage* m) {
  // One write is in flight at a time, so while it waits (a slow link, a server behind) a fast
  // task's output piles up here in pipe-sized pieces: send them as one message.
  if (!m->has_output()) return;
  v1::TaskOutput* o = m->mutable_output();
  while (!outbox_.empty() && outbox_.front().has_output() && o->data().size() < kMaxCoalescedOutput) {
    const v1::TaskOutput& next = outbox_.front().output();
    if (next.task_id() != o->task_id() || next.attempt() != o->attempt() || next.stream() != o->stream() ||
        next.offset() != o->offset() + o->data().size()) {
      break;
    }
    o->mutable_data()->append(next.data());
    outbox_.pop_front();
  }
}

void Connection::Writer(uint64_t generation,
                        grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>* stream) {
  while (true) {
    v1::AgentMessage m;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return writer_stop_ || !outbox_.empty(); });
      if (writer_stop_ || generation != generation_) return;
      m = std::move(outbox_.front());
      outbox_.pop_front();
      CoalesceOutput(&m);
    }
    if (!stream->Write(m)) {
      std::lock_guard lock(mu_);
      if (ctx_) ctx_->TryCancel();  // unblocks the reader, which ends this connection
      return;
    }
  }
}

void Connection::Run() {
  std::mt19937 rng(std::random_device{}());
  auto backoff = std::chrono::milliseconds(100);
  uint64_t next_generation = 1;
  while (!stopping_) {
    grpc::ClientContext ctx;
    {
      std::lock_guard lock(mu_);
      ctx_ = &ctx;
    }
    if (stopping_) break;
    auto stream = stub_->Connect(&ctx);
    v1::AgentMessage hello;
    *hello.mutable_hello() = cb_.make_hello();
    v1::ServerMessage first;
    bool ok = stream->Write(hello) && stream->Read(&first) && first.has_welcome();
    if (!ok) {
      stream->WritesDone();
      grpc::Status st = stream->Finish();
      {
        std::lock_guard lock(mu_);
        ctx_ = nullptr;
      }
      if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        cb_.refused(st.error_message());
        return;
      }
      if (!stopping_) {
        spdlog::debug("agent: cannot reach {} ({}); retrying in {} ms", server_, st.error_message(), backoff.count());
        std::uniform_int_distribution<int> jitter(0, static_cast<int>(backoff.count() / 4));
        auto wait = backoff + std::chrono::milliseconds(jitter(rng));
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, wait, [this] { return stopping_.load(); });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      }
      continue;
    }
    backoff = std::chrono::milliseconds(100);
    uint64_t gen = next_generation++;
    {
      std::lock_guard lock(mu_);
      generation_ = gen;
      writer_stop_ = false;
      outbox_.clear();
    }
    std::thread writer([this, gen, s = stream.get()] { Writer(gen, s); });
    cb_.connected(gen, first.welcome());
    v1::ServerMessage msg;
    while (stream->Read(&msg)) cb_.message(gen, std::move(msg));
    {
      std::lock_guard lock(mu_);
      generation_ = 0;
      writer_stop_ = true;
      outbox_.clear();
    }
    cv_.notify_all();
    writer.join();
    cb_.disconnected(gen);
    ctx.TryCancel();
    grpc::Status st = stream->Finish();
    {
      std::lock_guard lock(mu_);
      ctx_ = nullptr;
    }
    if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      cb_.refused(st.error_message());
      return;
    }
    if (!stopping_) spdlog::info("agent: connection to {} lost ({}); reconnecting", server_, st.error_message());
  }
}

}  // namespace tidepool::agent
