// Api: the Kubernetes REST calls (api.h).
#include "backends/kubernetes/api.h"

#include <thread>

#include <fmt/format.h>

#include "common/strings.h"

namespace tidepool::backends::kube {

namespace {

constexpr const char* kJson = "application/json";

std::string Query(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string q;
  for (const auto& [k, v] : params) {
    q += q.empty() ? '?' : '&';
    q += k + "=" + UrlEscape(v);
  }
  return q;
}

}  // namespace

Status ApiError(long http_status, const std::string& body) {
  Json st = Json::parse(body, nullptr, false);
  std::string message, reason;
  if (st.is_object()) {
    message = st.value("message", "");
    reason = st.value("reason", "");
  }
  if (message.empty()) {
    std::string_view b = Trim(body);
    message = b.empty() ? "no message" : std::string(b.substr(0, 300));
  }
  std::string text = fmt::format("kubernetes: {} ({}{}{})", message, http_status, reason.empty() ? "" : " ", reason);
  switch (http_status) {
    case 400:
    case 422: return MakeError(ErrorClass::kBadRequest, text);
    case 401: return Status(StatusCode::kUnauthenticated, text);
    case 403:
      if (message.find("exceeded quota") != std::string::npos) return MakeError(ErrorClass::kQuota, text);
      return MakeError(ErrorClass::kAuth, text);
    case 404: return Status(StatusCode::kNotFound, text);
    case 409:
      return reason == "AlreadyExists" ? Status(StatusCode::kAlreadyExists, text) : Status(StatusCode::kAborted, text);
    case 410: return Status(StatusCode::kAborted, text);
    default: return MakeError(ErrorClass::kTransient, text);
  }
}

bool IsExpired(const Status& s) {
  return s.code() == StatusCode::kAborted && s.message().find("(410") != std::string::npos;
}

Api::Api(std::shared_ptr<Access> access, std::shared_ptr<HttpClient> http)
    : access_(std::move(access)), http_(std::move(http)) {}

Result<HttpResponse> Api::Send(const std::string& method, const std::string& path_and_query, const std::string& body,
                               const std::string& content_type, Deadline deadline) {
  for (int attempt = 0;; ++attempt) {
    auto creds = access_->Current(deadline);
    if (!creds.ok()) return creds.status();
    HttpRequest req;
    req.method = method;
    req.url = access_->server() + path_and_query;
    req.body = body;
    req.deadline = deadline;
    req.tls = creds->tls;
    req.headers.emplace_back("Accept", kJson);
    req.headers.emplace_back("User-Agent", "tidepool");
    if (!content_type.empty()) req.headers.emplace_back("Content-Type", content_type);
    if (!creds->bearer.empty()) req.headers.emplace_back("Authorization", "Bearer " + creds->bearer);
    auto resp = http_->Do(req);
    if (!resp.ok()) return Status(resp.status().code(), "kubernetes: " + resp.status().message());
    if (resp->status == 401 && attempt == 0) {
      access_->Refused();  // a rotated token or an expired exec credential: read it again, once
      continue;
    }
    if (resp->status == 429 && attempt < 5) {
      int after = std::atoi(resp->Header("retry-after").c_str());
      auto wake = std::chrono::steady_clock::now() + std::chrono::seconds(std::clamp(after, 1, 10));
      if (wake < deadline) {
        std::this_thread::sleep_until(wake);
        continue;
      }
    }
    return resp;
  }
}

namespace {

Result<Json> ParseAnswer(Result<HttpResponse> resp) {
  if (!resp.ok()) return resp.status();
  if (resp->status < 200 || resp->status >= 300) return ApiError(resp->status, resp->body);
  Json j = Json::parse(resp->body, nullptr, false);
  if (j.is_discarded()) return Unavailable(fmt::format("kubernetes: an answer that is not JSON ({} bytes)", resp->body.size()));
  return j;
}

}  // namespace

Result<Json> Api::Get(const std::string& path, Deadline deadline) {
  return ParseAnswer(Send("GET", path, "", "", deadline));
}

Result<Json> Api::Post(const std::string& path, const Json& body, Deadline deadline) {
  return ParseAnswer(Send("POST", path, body.dump(), kJson, deadline));
}

Result<Json> Api::Put(const std::string& path, const Json& body, Deadline deadline) {
  return ParseAnswer(Send("PUT", path, body.dump(), kJson, deadline));
}

Result<Json> Api::MergePatch(const std::string& path, const Json& patch, Deadline deadline) {
  return ParseAnswer(Send("PATCH", path, patch.dump(), "application/merge-patch+json", deadline));
}

Result<Json> Api::Delete(const std::string& path, const Json& options, Deadline deadline) {
  return ParseAnswer(Send("DELETE", path, options.is_null() ? "" : options.dump(), options.is_null() ? "" : kJson, deadline));
}

Result<ListResult> Api::List(const std::string& path, const std::string& label_selector, Deadline deadline, int page) {
  for (int round = 0;; ++round) {
    ListResult out;
    std::string cont;
    Status failed;
    do {
      std::vector<std::pair<std::string, std::string>> q{{"limit", std::to_string(page)}};
      if (!label_selector.empty()) q.emplace_back("labelSelector", label_selector);
      if (!cont.empty()) q.emplace_back("continue", cont);
      auto j = ParseAnswer(Send("GET", path + Query(q), "", "", deadline));
      if (!j.ok()) {
        failed = j.status();
        break;
      }
      if (j->contains("items") && (*j)["items"].is_array()) {
        for (auto& item : (*j)["items"]) out.items.push_back(std::move(item));
      }
      const Json& meta = j->value("metadata", Json::object());
      if (out.resource_version.empty()) out.resource_version = meta.value("resourceVersion", "");
      cont = meta.value("continue", "");
    } while (!cont.empty());
    if (failed.ok()) return out;
    if (IsExpired(failed) && round == 0) continue;  // the continue token expired: from the start
    return failed;
  }
}

Result<WatchEnd> Api::Watch(const std::string& path, const std::string& label_selector, std::string* rv,
                            const std::function<bool(const std::string& type, const Json& object)>& on_event,
                            Deadline deadline) {
  auto creds = access_->Current(deadline);
  if (!creds.ok()) return creds.status();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(deadline - std::chrono::steady_clock::now()).count();
  std::vector<std::pair<std::string, std::string>> q{{"watch", "true"}, {"allowWatchBookmarks", "true"}};
  if (!label_selector.empty()) q.emplace_back("labelSelector", label_selector);
  if (!rv->empty()) q.emplace_back("resourceVersion", *rv);
  // The server ends the stream a little before our own deadline would cut it.
  q.emplace_back("timeoutSeconds", std::to_string(std::max<int64_t>(1, secs - 2)));
  HttpRequest req;
  req.url = access_->server() + path + Query(q);
  req.deadline = deadline;
  req.tls = creds->tls;
  req.headers.emplace_back("Accept", kJson);
  req.headers.emplace_back("User-Agent", "tidepool");
  if (!creds->bearer.empty()) req.headers.emplace_back("Authorization", "Bearer " + creds->bearer);

  std::string pending;
  WatchEnd end = WatchEnd::kClosed;
  auto resp = http_->Stream(req, [&](std::string_view data) {
    pending.append(data);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (Trim(line).empty()) continue;
      Json ev = Json::parse(line, nullptr, false);
      if (!ev.is_object()) continue;
      std::string type = ev.value("type", "");
      const Json& obj = ev.contains("object") ? ev["object"] : Json();
      if (type == "ERROR") {
        if (obj.is_object() && obj.value("code", 0) == 410) {
          end = WatchEnd::kExpired;
          return false;
        }
        continue;
      }
      if (obj.is_object() && obj.contains("metadata")) {
        std::string v = obj["metadata"].value("resourceVersion", "");
        if (!v.empty()) *rv = v;
      }
      if (!on_event(type, obj)) {
        end = WatchEnd::kStopped;
        return false;
      }
    }
    return true;
  });
  if (!resp.ok()) {
    if (resp.status().code() == StatusCode::kCancelled) return WatchEnd::kStopped;
    return Status(resp.status().code(), "kubernetes: watch: " + resp.status().message());
  }
  if (resp->status == 410) return WatchEnd::kExpired;
  if (resp->status == 401) access_->Refused();
  if (resp->status < 200 || resp->status >= 300) return ApiError(resp->status, resp->body);
  return end;
}

}  // namespace tidepool::backends::kube
