#include "cli/client.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tidepool::cli {

void AddClientOptions(CLI::App* app, ClientOptions* opts) {
  app->add_option("--server", opts->server, "server address HOST:PORT (default $TIDEPOOL_SERVER, else 127.0.0.1:7700)");
  app->add_option("--token", opts->token, "credentials (default $TIDEPOOL_TOKEN, else ~/.config/tidepool/token)");
  app->add_option("--tls-ca", opts->tls_ca, "use TLS, trusting this CA certificate (default $TIDEPOOL_TLS_CA)");
}

Client::Client(const ClientOptions& opts) {
  address_ = ResolveServer(opts.server);
  token_ = ResolveToken(opts.token);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  // A server that restarts is dialled again within 2 s (vrun reattaching: run.cc), not after
  // gRPC's default backoff of up to 2 minutes.
  // (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays: it is also the connect timeout, and a frozen server
  // must be waited for: cli/unanswered.h.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::string ca_path = ResolveTlsCa(opts.tls_ca);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!ca_path.empty()) {
    grpc::SslCredentialsOptions ssl;
    std::ifstream in(ca_path);
    std::stringstream ca;
    ca << in.rdbuf();
    ssl.pem_root_certs = ca.str();
    creds = grpc::SslCredentials(ssl);
  }
  channel_ = grpc::CreateCustomChannel(address_, creds, args);
  tasks_ = v1::TaskService::NewStub(channel_);
  pools_ = v1::PoolService::NewStub(channel_);
  workspace_ = v1::WorkspaceService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Client::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  return ctx;
}

int Client::Fail(const grpc::Status& s) const {
  return ReportFailure(static_cast<int>(s.error_code()), s.error_message(), address_);
}

int ParseFailure(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
    // --help
    fmt::print("{}", app.help());
    return 0;
  }
  fmt::print(stderr, "{}: {}\n", app.get_name(), e.what());
  fmt::print(stderr, "Run '{} --help' for usage.\n", app.get_name());
  return kExitUsage;
}

}  // namespace tidepool::cli
