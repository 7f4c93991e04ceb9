#include "cli/client.h"

#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "common/strings.h"

namespace tidepool::cli {

void AddClientOptions(CLI::App* app, ClientOptions* opts) {
  app->add_option("--server", opts->server, "server address HOST:PORT (default $TIDEPOOL_SERVER, else 127.0.0.1:7700)");
  app->add_option("--token", opts->token, "credentials (default $TIDEPOOL_TOKEN, else ~/.config/tidepool/token)");
}

Client::Client(const ClientOptions& opts) {
  address_ = opts.server;
  if (address_.empty()) {
    const char* env = std::getenv("TIDEPOOL_SERVER");
    address_ = env && *env ? env : "127.0.0.1:7700";
  }
  token_ = opts.token;
  if (token_.empty()) {
    if (const char* env = std::getenv("TIDEPOOL_TOKEN"); env && *env) token_ = env;
  }
  if (token_.empty()) {
    if (const char* home = std::getenv("HOME")) {
      std::ifstream in(std::string(home) + "/.config/tidepool/token");
      std::string line;
      if (in && std::getline(in, line)) token_ = std::string(Trim(line));
    }
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  tasks_ = v1::TaskService::NewStub(channel_);
  pools_ = v1::PoolService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Client::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  return ctx;
}

int Client::Fail(const grpc::Status& s) const {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      if (s.error_message().find("starting") != std::string::npos ||
          s.error_message().find("shutting down") != std::string::npos) {
        fmt::print(stderr, "tidepool: the server at {} is {}\n", address_,
                   s.error_message().find("starting") != std::string::npos ? "starting" : "shutting down");
      } else {
        fmt::print(stderr, "tidepool: cannot reach the server at {}\n", address_);
      }
      return kExitTidepoolFailed;
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::ALREADY_EXISTS:
      fmt::print(stderr, "{}\n", s.error_message());
      return 1;
    default:
      fmt::print(stderr, "tidepool: {} (from the server at {})\n", s.error_message(), address_);
      return kExitTidepoolFailed;
  }
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
