// PoolService: pools, workers and the server's own info.
#include <unistd.h>

#include "server/services.h"

namespace tidepool::server {

namespace {

grpc::Status NotStarted() { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is starting"); }

// Runs `fn(core, caller)` if the core is up and the caller known, then finishes the call.
template <class Fn>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, CoreRef* ref, const Authenticator* auth, Fn fn) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = ref->load();
  if (!core) {
    reactor->Finish(NotStarted());
    return reactor;
  }
  auto caller = auth->Identify(ctx);
  reactor->Finish(caller.ok() ? ToGrpc(fn(core, *caller)) : ToGrpc(caller.status()));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* PoolService::ListPools(grpc::CallbackServerContext* ctx, const v1::ListPoolsRequest*,
                                                 v1::ListPoolsResponse* resp) {
  return Unary(ctx, core_, auth_, [&](Core* core, const Caller& caller) {
    for (auto& p : core->ListPools(caller)) *resp->add_pools() = std::move(p);
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::GetPool(grpc::CallbackServerContext* ctx, const v1::GetPoolRequest* req,
                                               v1::PoolDetail* resp) {
  return Unary(ctx, core_, auth_, [&](Core* core, const Caller& caller) {
    auto d = core->GetPool(req->name(), caller);
    if (!d.ok()) return d.status();
    *resp = std::move(d).value();
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* req,
                                                   v1::ListWorkersResponse* resp) {
  return Unary(ctx, core_, auth_, [&](Core* core, const Caller& caller) {
    for (auto& w : core->ListWorkers(req->pool(), caller)) *resp->add_workers() = std::move(w);
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::DrainWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                                   v1::WorkerResponse* resp) {
  return Unary(ctx, core_, auth_, [&](Core* core, const Caller& caller) {
    auto w = core->DrainWorker(req->name(), caller);
    if (!w.ok()) return w.status();
    *resp->mutable_worker() = std::move(w).value();
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::DeleteWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                                    v1::WorkerResponse* resp) {
  return Unary(ctx, core_, auth_, [&](Core* core, const Caller& caller) {
    auto w = core->DeleteWorker(req->name(), req->force(), caller);
    if (!w.ok()) return w.status();
    *resp->mutable_worker() = std::move(w).value();
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::GetServerInfo(grpc::CallbackServerContext* ctx, const v1::ServerInfoRequest*,
                                                     v1::ServerInfo* resp) {
  auto* reactor = ctx->DefaultReactor();
  resp->set_version(info_.version);
  resp->set_listen(info_.listen);
  resp->set_data_dir(info_.data_dir);
  resp->set_pid(getpid());
  resp->set_started_at_ms(info_.started_at_ms);
  reactor->Finish(core_->load() ? grpc::Status::OK : NotStarted());
  return reactor;
}

}  // namespace tidepool::server
