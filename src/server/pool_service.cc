// PoolService: pools, workers and the server's own info.
#include <unistd.h>

#include "server/services.h"

namespace tidepool::server {

namespace {

grpc::Status NotStarted() { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is starting"); }

// Runs `fn(core)` if the core is up, then finishes the call with its status.
template <class Fn>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, CoreRef* ref, Fn fn) {
  auto* reactor = ctx->DefaultReactor();
  Core* core = ref->load();
  reactor->Finish(core ? ToGrpc(fn(core)) : NotStarted());
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* PoolService::ListPools(grpc::CallbackServerContext* ctx, const v1::ListPoolsRequest*,
                                                 v1::ListPoolsResponse* resp) {
  return Unary(ctx, core_, [&](Core* core) {
    for (auto& p : core->ListPools()) *resp->add_pools() = std::move(p);
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::GetPool(grpc::CallbackServerContext* ctx, const v1::GetPoolRequest* req,
                                               v1::PoolDetail* resp) {
  return Unary(ctx, core_, [&](Core* core) {
    auto d = core->GetPool(req->name());
    if (!d.ok()) return d.status();
    *resp = std::move(d).value();
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* req,
                                                   v1::ListWorkersResponse* resp) {
  return Unary(ctx, core_, [&](Core* core) {
    for (auto& w : core->ListWorkers(req->pool())) *resp->add_workers() = std::move(w);
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::DrainWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                                   v1::WorkerResponse* resp) {
  return Unary(ctx, core_, [&](Core* core) {
    auto w = core->DrainWorker(req->name());
    if (!w.ok()) return w.status();
    *resp->mutable_worker() = std::move(w).value();
    return Status::Ok();
  });
}

grpc::ServerUnaryReactor* PoolService::DeleteWorker(grpc::CallbackServerContext* ctx, const v1::WorkerRequest* req,
                                                    v1::WorkerResponse* resp) {
  return Unary(ctx, core_, [&](Core* core) {
    auto w = core->DeleteWorker(req->name(), req->force());
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
