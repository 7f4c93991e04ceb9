// What every client command shares: finding the server, credentials, and turning RPC failures
// into one clear line and the exit statuses cli.md fixes (255: Tidepool itself failed).
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "cli/client_env.h"
#include "tidepool/v1/pool.grpc.pb.h"
#include "tidepool/v1/task.grpc.pb.h"
#include "tidepool/v1/workspace.grpc.pb.h"

namespace tidepool::cli {

struct ClientOptions {
  std::string server;  // --server
  std::string token;   // --token
  std::string tls_ca;  // --tls-ca: talk TLS, trusting this CA (default $TIDEPOOL_TLS_CA)
};

// Adds --server and --token to a (sub)command.
void AddClientOptions(CLI::App* app, ClientOptions* opts);

class Client {
 public:
  explicit Client(const ClientOptions& opts);
  const std::string& address() const { return address_; }
  const std::string& token() const { return token_; }
  v1::TaskService::Stub& tasks() { return *tasks_; }
  v1::PoolService::Stub& pools() { return *pools_; }
  v1::WorkspaceService::Stub& workspace() { return *workspace_; }
  // A context carrying the credentials.
  std::unique_ptr<grpc::ClientContext> Context() const;
  // Prints the failure of a call ("tidepool: MESSAGE") and returns the exit status for it.
  int Fail(const grpc::Status& status) const;

 private:
  std::string address_;
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::PoolService::Stub> pools_;
  std::unique_ptr<v1::WorkspaceService::Stub> workspace_;
};

// Prints a CLI11 parse error the way every command does (usage on stderr, exit 2), or help.
int ParseFailure(CLI::App& app, const CLI::ParseError& e);

}  // namespace tidepool::cli
