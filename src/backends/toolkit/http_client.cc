// HttpClient on libcurl's easy interface: one handle per request.
#include "backends/toolkit/http_client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

#include "backends/backend.h"

namespace tidepool::backends {

namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  const std::function<bool(std::string_view)>* on_data = nullptr;
  CURL* curl = nullptr;
  HttpResponse* response = nullptr;
  const std::atomic<bool>* abandoned = nullptr;
  bool stopped_by_receiver = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (t->on_data) {
    long code = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
      if (!(*t->on_data)(std::string_view(data, len))) {
        t->stopped_by_receiver = true;
        return 0;  // ends the transfer (CURLE_WRITE_ERROR, recognised below)
      }
      return len;
    }
  }
  if (t->response->body.size() + len > (size_t{256} << 20)) return 0;  // no API answers 256 MiB
  t->response->body.append(data, len);
  return len;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  std::string_view line(data, len);
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();  // a new response (after a 100 Continue or a redirect)
    return len;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
  t->response->headers[name] = std::string(value);
  return len;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->abandoned->load() ? 1 : 0;  // non-zero aborts with CURLE_ABORTED_BY_CALLBACK
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

void SetBlob(CURL* curl, CURLoption option, const std::string& pem) {
  curl_blob blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
  curl_easy_setopt(curl, option, &blob);
}

}  // namespace

HttpClient::HttpClient() { GlobalInit(); }

Result<HttpResponse> HttpClient::Do(const HttpRequest& request) { return Perform(request, nullptr); }

Result<HttpResponse> HttpClient::Stream(const HttpRequest& request, const std::function<bool(std::string_view)>& on_data) {
  return Perform(request, &on_data);
}

Result<HttpResponse> HttpClient::Perform(const HttpRequest& request, const std::function<bool(std::string_view)>* on_data) {
  const std::string host = UrlHost(request.url);
  if (abandoned_) return Status(StatusCode::kCancelled, "the server is stopping: no request to " + host);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(request.deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return DeadlineExceeded("no time left for a request to " + host);

  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return Internal("curl_easy_init failed");
  CURL* c = curl.get();
  HttpResponse response;
  Transfer t{on_data, c, &response, &abandoned_};
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<int64_t>(left.count(), 30000)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");  // whatever curl can decode

  if (request.tls.insecure) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!request.tls.ca_pem.empty()) {
    SetBlob(c, CURLOPT_CAINFO_BLOB, request.tls.ca_pem);
  }
  if (!request.tls.client_cert_pem.empty()) {
    SetBlob(c, CURLOPT_SSLCERT_BLOB, request.tls.client_cert_pem);
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    SetBlob(c, CURLOPT_SSLKEY_BLOB, request.tls.client_key_pem);
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
  }

  std::unique_ptr<curl_slist, SlistDeleter> headers;
  for (const auto& [k, v] : request.headers) {
    std::string line = k + ": " + v;
    curl_slist* l = curl_slist_append(headers.get(), line.c_str());
    if (!l) return Internal("curl_slist_append failed");
    headers.release();
    headers.reset(l);
  }
  // No "Expect: 100-continue" round trip for bodies.
  if (curl_slist* l = curl_slist_append(headers.get(), "Expect:")) {
    headers.release();
    headers.reset(l);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  if (request.method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT" || request.method == "PATCH") {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
  }

  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  if (rc == CURLE_WRITE_ERROR && t.stopped_by_receiver) return response;
  if (rc == CURLE_OK) return response;
  std::string words = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
  while (!words.empty() && (words.back() == '\n' || words.back() == '\r')) words.pop_back();
  if (rc == CURLE_ABORTED_BY_CALLBACK) return Status(StatusCode::kCancelled, "the server is stopping: request to " + host + " cut");
  if (rc == CURLE_PEER_FAILED_VERIFICATION) {
    // The server is not who the CA says it should be: asking again will not change that.
    return MakeError(ErrorClass::kBadRequest, fmt::format("{}: {} (the server's certificate is not trusted)", host, words));
  }
  if (!request.tls.client_cert_pem.empty()) {
    // A TLS alert about the certificate we presented: the server refused this credential.
    for (const char* alert : {"alert unknown ca", "alert bad certificate", "alert certificate required",
                              "alert certificate expired", "alert certificate revoked", "alert certificate unknown",
                              "alert access denied"}) {
      if (words.find(alert) != std::string::npos) {
        return MakeError(ErrorClass::kAuth, fmt::format("{}: {} (the server refused the client certificate)", host, words));
      }
    }
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    // A stream that ran until its deadline with a good status ended normally for the caller.
    if (on_data && response.status >= 200 && response.status < 300) return response;
    return DeadlineExceeded(fmt::format("{}: {}", host, words));
  }
  return Unavailable(fmt::format("{}: {}", host, words));
}

std::string UrlHost(std::string_view url) {
  auto scheme = url.find("://");
  size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
  size_t end = url.find_first_of("/?#", start);
  return std::string(url.substr(0, end == std::string_view::npos ? url.size() : end));
}

std::string UrlEscape(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

}  // namespace tidepool::backends
