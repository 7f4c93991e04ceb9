#include "agent/grpc/transport_grpc.h"

#include <algorithm>

#include <grpcpp/grpcpp.h>

#include "common/fs.h"
#include "tidepool/v1/agent.grpc.pb.h"

namespace tidepool::agent {

namespace {

class GrpcStream final : public AgentStream {
 public:
  explicit GrpcStream(v1::AgentService::Stub* stub) : stream_(stub->Connect(&ctx_)) {}
  bool Write(const v1::AgentMessage& m) override { return stream_->Write(m); }
  bool Read(v1::ServerMessage* m) override { return stream_->Read(m); }
  void Cancel() override { ctx_.TryCancel(); }
  Status Finish() override {
    stream_->WritesDone();
    grpc::Status st = stream_->Finish();
    if (st.ok()) return Status::Ok();
    return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>> stream_;
};

class GrpcTransport final : public Transport {
 public:
  GrpcTransport(const std::string& server, int keepalive_ms, std::shared_ptr<grpc::ChannelCredentials> credentials) {
    grpc::ChannelArguments args;
    // Notice a dead server or a cut link even when idle. Rarely needed: a healed link or a
    // restarted server answers the next heartbeat with a reset, which ends the stream at once;
    // but every ping costs the server CPU (P8), so the default period is long.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, std::min(keepalive_ms, 20000));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
    channel_ = grpc::CreateCustomChannel(server, std::move(credentials), args);
    stub_ = v1::AgentService::NewStub(channel_);
  }
  std::unique_ptr<AgentStream> Open() override { return std::make_unique<GrpcStream>(stub_.get()); }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

}  // namespace

Result<std::unique_ptr<Transport>> MakeGrpcTransport(const AgentFlags& flags) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!flags.tls_ca.empty() || !flags.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    for (auto [path, out] : {std::pair{&flags.tls_ca, &ssl.pem_root_certs}, {&flags.tls_cert, &ssl.pem_cert_chain},
                             {&flags.tls_key, &ssl.pem_private_key}}) {
      if (path->empty()) continue;
      auto text = ReadFile(*path);
      if (!text.ok()) return text.status();
      *out = std::move(text).value();
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return std::unique_ptr<Transport>(std::make_unique<GrpcTransport>(flags.server, flags.keepalive_ms, credentials));
}

}  // namespace tidepool::agent
