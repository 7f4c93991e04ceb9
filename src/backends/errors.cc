// The error classes and worker states of the contract (backend.h).
#include "backends/backend.h"

namespace tidepool::backends {

std::string_view ErrorClassName(ErrorClass c) {
  switch (c) {
    case ErrorClass::kOutOfCapacity: return "out_of_capacity";
    case ErrorClass::kQuota: return "quota";
    case ErrorClass::kAuth: return "auth";
    case ErrorClass::kBadRequest: return "bad_request";
    case ErrorClass::kTransient: return "transient";
  }
  return "transient";
}

ErrorClass ClassOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kResourceExhausted: return ErrorClass::kOutOfCapacity;
    case StatusCode::kFailedPrecondition: return ErrorClass::kQuota;
    case StatusCode::kPermissionDenied:
    case StatusCode::kUnauthenticated: return ErrorClass::kAuth;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kUnimplemented: return ErrorClass::kBadRequest;
    default: return ErrorClass::kTransient;
  }
}

Status MakeError(ErrorClass c, std::string message) {
  switch (c) {
    case ErrorClass::kOutOfCapacity: return Status(StatusCode::kResourceExhausted, std::move(message));
    case ErrorClass::kQuota: return Status(StatusCode::kFailedPrecondition, std::move(message));
    case ErrorClass::kAuth: return Status(StatusCode::kPermissionDenied, std::move(message));
    case ErrorClass::kBadRequest: return Status(StatusCode::kInvalidArgument, std::move(message));
    case ErrorClass::kTransient: return Status(StatusCode::kUnavailable, std::move(message));
  }
  return Status(StatusCode::kUnavailable, std::move(message));
}

std::string_view WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kPending: return "pending";
    case WorkerState::kRunning: return "running";
    case WorkerState::kStopping: return "stopping";
    case WorkerState::kStopped: return "stopped";
  }
  return "running";
}

}  // namespace tidepool::backends
