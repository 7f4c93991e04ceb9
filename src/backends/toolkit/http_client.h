// The one HTTPS client for backends that speak to an API (Kubernetes, the clouds), on libcurl.
//
//   * Every request carries a deadline (the backend call's): past it the transfer is cut and the
//     answer is DEADLINE_EXCEEDED naming the URL's host.
//   * TLS is verified against the CA given (PEM in memory, as kubeconfigs carry it), else the
//     system's store; client certificates and keys are PEM in memory too. Nothing is written to
//     disk and no secret reaches a command line.
//   * Transport failures (refused, reset, TLS) are UNAVAILABLE with curl's words, but a server
//     certificate the CA does not vouch for is bad_request, and a TLS alert refusing the client
//     certificate is auth (backend.h's classes); an HTTP answer of any status is a response (the
//     caller reads the API's error body).
//   * Stream() hands the body over as it arrives (a watch), until the server ends it, the
//     receiver says stop, the deadline passes or the client is abandoned.
//   * Abandon() (the server is stopping) cuts every transfer within about a second and refuses
//     new ones.
//
// Thread-safe: requests may run concurrently (one curl handle each).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tidepool::backends {

struct TlsSettings {
  std::string ca_pem;           // trust only this CA ("" = the system's store)
  std::string client_cert_pem;  // mutual TLS, with client_key_pem
  std::string client_key_pem;
  bool insecure = false;        // no verification at all (kubeconfig insecure-skip-tls-verify)
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  TlsSettings tls;
  std::chrono::steady_clock::time_point deadline;
};

struct HttpResponse {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased; the last of repeated ones

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class HttpClient {
 public:
  HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  Result<HttpResponse> Do(const HttpRequest& request);

  // A 2xx answer's body goes to `on_data` piece by piece (HttpResponse::body stays empty);
  // `on_data` returning false ends the transfer (not an error). Any other answer's body is read
  // whole into HttpResponse::body (the API's error).
  Result<HttpResponse> Stream(const HttpRequest& request, const std::function<bool(std::string_view)>& on_data);

  void Abandon() { abandoned_ = true; }
  bool abandoned() const { return abandoned_; }

 private:
  Result<HttpResponse> Perform(const HttpRequest& request, const std::function<bool(std::string_view)>* on_data);

  std::atomic<bool> abandoned_{false};
};

// "https://host:port" of a URL, for messages (never its path or query, which may carry names).
std::string UrlHost(std::string_view url);
// Percent-encodes a query value or path segment.
std::string UrlEscape(std::string_view s);

}  // namespace tidepool::backends
