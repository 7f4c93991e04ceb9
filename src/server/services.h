// The gRPC services: thin adapters between the wire and Core. They translate, validate the
// shape of what arrives (the first message of a stream, sizes), and hold no state of their own
// beyond one stream.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "server/auth.h"
#include "server/core.h"
#include "tidepool/v1/agent.grpc.pb.h"
#include "tidepool/v1/pool.grpc.pb.h"
#include "tidepool/v1/task.grpc.pb.h"
#include "tidepool/v1/workspace.grpc.pb.h"

namespace tidepool::server {

// The core the services talk to; null until the server has started (calls then get UNAVAILABLE).
using CoreRef = std::atomic<Core*>;

grpc::Status ToGrpc(const Status& s);

// What every call gets before the core is published.
inline Status ServerStarting() { return Unavailable("the server is starting"); }

// Who is calling: with users configured, the bearer token in the `authorization` metadata (a
// user's token, or a task token acting as the task's owner); without, everyone is trusted.
class Authenticator {
 public:
  Authenticator(const Users* users, CoreRef* core) : users_(users), core_(core) {}
  Result<Caller> Identify(const grpc::ServerContextBase* ctx) const;
  // The same for a bearer token given directly ("" = none), as the fast protocol's hello carries it.
  Result<Caller> IdentifyToken(const std::string& token) const;

 private:
  const Users* users_;  // nullptr = auth off
  CoreRef* core_;
};

struct ServerInfoSource {
  std::string version;
  std::string listen;
  std::string data_dir;
  int64_t started_at_ms = 0;
};

// One message of an agent's stream after its hello: task output is stored and acknowledged
// (through the link), everything else goes to the core. The gRPC stream and the fast protocol's
// agent connections (fast_service.cc) both deliver through this.
void DeliverAgentMessage(Core* core, AgentLink* link, const v1::AgentMessage& m);

class AgentService final : public v1::AgentService::CallbackService {
 public:
  // need_certificates: mTLS is on (server.tls.client_ca): agents must present a verified certificate.
  AgentService(CoreRef* core, bool need_certificates) : core_(core), need_certificates_(need_certificates) {}
  grpc::ServerBidiReactor<v1::AgentMessage, v1::ServerMessage>* Connect(grpc::CallbackServerContext* ctx) override;

 private:
  CoreRef* core_;
  bool need_certificates_;
};

// Workspaces: settings, and content into and out of the caller's store (workspace_service.cc).
// A synchronous service (its calls are file I/O, kept off the callback threads).
class WorkspaceService final : public v1::WorkspaceService::Service {
 public:
  WorkspaceService(CoreRef* core, const Authenticator* auth) : core_(core), auth_(auth) {}
  grpc::Status Settings(grpc::ServerContext* ctx, const v1::SettingsRequest* req, v1::WorkspaceSettings* resp) override;
  grpc::Status Missing(grpc::ServerContext* ctx, const v1::MissingRequest* req, v1::MissingResponse* resp) override;
  grpc::Status Upload(grpc::ServerContext* ctx, grpc::ServerReader<v1::BlobChunk>* reader,
                      v1::UploadResponse* resp) override;
  grpc::Status Download(grpc::ServerContext* ctx, const v1::DownloadRequest* req,
                        grpc::ServerWriter<v1::BlobChunk>* writer) override;
  grpc::Status PutManifest(grpc::ServerContext* ctx, const v1::ManifestDelta* req, v1::UploadResponse* resp) override;

 private:
  // The caller's store (its owner's, for a task token), or the error.
  Result<workspace::BlobDir*> StoreOf(grpc::ServerContext* ctx, Core** core);
  CoreRef* core_;
  const Authenticator* auth_;
};

// An agent's blob requests (BlobFetch, BlobQuery, BlobPut): answered on its link, from and into
// the store of the owner of the task they name, which must be that agent's (agent_blobs.cc).
void ServeAgentBlobs(Core* core, AgentLink* link, const v1::AgentMessage& m);

class TaskService final : public v1::TaskService::CallbackService {
 public:
  TaskService(CoreRef* core, const Authenticator* auth) : core_(core), auth_(auth) {}
  grpc::ServerBidiReactor<v1::RunRequest, v1::RunEvent>* Run(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx, const v1::SubmitRequest* req,
                                   v1::SubmitResponse* resp) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx, const v1::ListTasksRequest* req,
                                      v1::ListTasksResponse* resp) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx, const v1::GetTaskRequest* req,
                                    v1::Task* resp) override;
  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx, const v1::CancelTaskRequest* req,
                                       v1::CancelTaskResponse* resp) override;
  grpc::ServerWriteReactor<v1::LogChunk>* StreamLogs(grpc::CallbackServerContext* ctx,
                                                     const v1::StreamLogsRequest* req) override;
  grpc::ServerWriteReactor<v1::Task>* WatchTask(grpc::CallbackServerContext* ctx,
                                                const v1::WatchTaskRequest* req) override;

 private:
  CoreRef* core_;
  const Authenticator* auth_;
};

class PoolService final : public v1::PoolService::CallbackService {
 public:
  PoolService(CoreRef* core, const Authenticator* auth, ServerInfoSource info)
      : core_(core), auth_(auth), info_(std::move(info)) {}
  // Set once, before the core is published (calls are refused until then).
  void set_listen(const std::string& listen) { info_.listen = listen; }
  grpc::ServerUnaryReactor* ListPools(grpc::CallbackServerContext* ctx, const v1::ListPoolsRequest* req,
                                      v1::ListPoolsResponse* resp) override;
  grpc::ServerUnaryReactor* GetPool(grpc::CallbackServerContext* ctx, const v1::GetPoolRequest* req,
                                    v1::PoolDetail* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* DrainWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                        v1::WorkerResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                         v1::WorkerResponse* resp) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx, const v1::ServerInfoRequest* req,
                                          v1::ServerInfo* resp) override;

 private:
  CoreRef* core_;
  const Authenticator* auth_;
  ServerInfoSource info_;
};

}  // namespace tidepool::server
