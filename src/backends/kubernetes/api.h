// A small Kubernetes REST client: JSON in and out, the API server's own error messages, paging
// and watches. What Tidepool's kubernetes backend and AgentPool controller use, nothing more.
//
// Errors carry the API server's Status message and a class (backends/backend.h):
//   401 Unauthorized        auth (the credentials are re-read and the request tried once more)
//   403 Forbidden           quota when the message says "exceeded quota", else auth (RBAC)
//   404 NotFound            NOT_FOUND (a caller deleting treats it as done)
//   409 AlreadyExists       ALREADY_EXISTS;  409 Conflict: ABORTED (a stale resourceVersion)
//   400, 422 Invalid        bad_request (the message names the field)
//   410 Gone / Expired      ABORTED with reason "Expired" (a watch or continue token too old)
//   429 TooManyRequests     waited out (Retry-After, within the deadline), then transient
//   5xx, transport          transient
// Every message starts with "kubernetes: " and never holds a credential.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/kubernetes/access.h"
#include "backends/toolkit/http_client.h"

namespace tidepool::backends::kube {

using Json = nlohmann::json;

struct ListResult {
  std::vector<Json> items;
  std::string resource_version;  // of the list, to watch from
};

enum class WatchEnd {
  kClosed,   // the server ended the stream (timeoutSeconds, a restart): watch again from *rv
  kExpired,  // 410: *rv is too old; list again
  kStopped,  // the receiver or Abandon ended it
};

class Api {
 public:
  Api(std::shared_ptr<Access> access, std::shared_ptr<HttpClient> http);

  Access& access() { return *access_; }
  HttpClient& http() { return *http_; }

  // path: "/api/v1/namespaces/NS/pods" and the like (the server's prefix is added).
  Result<Json> Get(const std::string& path, Deadline deadline);
  Result<Json> Post(const std::string& path, const Json& body, Deadline deadline);
  Result<Json> Put(const std::string& path, const Json& body, Deadline deadline);
  Result<Json> MergePatch(const std::string& path, const Json& patch, Deadline deadline);
  // Deleting what is not there is NOT_FOUND; `options` is a DeleteOptions (or null).
  Result<Json> Delete(const std::string& path, const Json& options, Deadline deadline);

  // Every item, `page` at a time (limit/continue); a continue token that expired mid-way starts
  // the list again (once).
  Result<ListResult> List(const std::string& path, const std::string& label_selector, Deadline deadline, int page = 500);

  // Watches from `*rv` with bookmarks until the stream ends, the deadline passes or `on_event`
  // returns false. Each event is (type, object): ADDED, MODIFIED, DELETED, BOOKMARK. *rv follows
  // the events. A transport or HTTP error is an error; a 410 (as an HTTP answer or an ERROR
  // event) is kExpired.
  Result<WatchEnd> Watch(const std::string& path, const std::string& label_selector, std::string* rv,
                         const std::function<bool(const std::string& type, const Json& object)>& on_event,
                         Deadline deadline);

 private:
  Result<HttpResponse> Send(const std::string& method, const std::string& path_and_query, const std::string& body,
                            const std::string& content_type, Deadline deadline);

  std::shared_ptr<Access> access_;
  std::shared_ptr<HttpClient> http_;
};

// The error for a non-2xx answer (the classes above).
Status ApiError(long http_status, const std::string& body);
// True for the ABORTED status ApiError makes of a 410 Expired/Gone.
bool IsExpired(const Status& s);

}  // namespace tidepool::backends::kube
