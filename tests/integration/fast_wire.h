// What the fast-path tests share (fastpath_test.cc, fastpath_hostile_test.cc): the clients run
// with their trace on, a raw TCP client that speaks the fast protocol's frames by hand, and the
// fixture with one real server.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"

namespace tidepool::testing {

inline constexpr char kFast[] = "tidepool-client: fast path";
inline constexpr char kFallback[] = "tidepool-client: fallback";

inline std::map<std::string, std::string> Traced(std::map<std::string, std::string> env) {
  env["TIDEPOOL_CLIENT_TRACE"] = "1";
  return env;
}

inline ProcResult Client(Server& server, const std::string& bin, const std::vector<std::string>& args,
               std::map<std::string, std::string> extra_env = {}, const std::string& stdin_data = "") {
  std::vector<std::string> argv;
  if (bin == "tidepool run" || bin == "tidepool batch") {
    argv = {BinDir() + "/tidepool", bin.substr(9)};
  } else {
    argv = {BinDir() + "/" + bin};
  }
  argv.insert(argv.end(), args.begin(), args.end());
  auto env = server.ClientEnv();
  for (auto& [k, v] : extra_env) env[k] = v;
  return RunProcess(argv, env, server.dir(), stdin_data);
}

// ---- a raw TCP client for the hostile-input tests ----

class Raw {
 public:
  explicit Raw(const std::string& address) {
    auto colon = address.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    inet_pton(AF_INET, address.substr(0, colon).c_str(), &a.sin_addr);
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  }
  ~Raw() { close(fd_); }
  void Send(const std::string& bytes) { EXPECT_EQ(send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size())); }
  void CloseWrite() { shutdown(fd_, SHUT_WR); }
  // Reads until `done(received)` holds (or the deadline); what was received.
  std::string ReadUntil(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds deadline = 30s) {
    std::string got;
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!done(got) && std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  // Everything until the server closes its side (or `deadline`); `closed` says whether it did.
  std::string ReadToEnd(bool* closed, std::chrono::milliseconds deadline = 30s) {
    std::string got;
    auto end = std::chrono::steady_clock::now() + deadline;
    *closed = false;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        *closed = true;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }

 private:
  int fd_ = -1;
};

inline std::string Frame(uint8_t type, const std::string& payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  std::string f = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n),
                   static_cast<char>(type)};
  return f + payload;
}
inline const std::string kHello = std::string("TPF1") + Frame(1, "{\"v\":1}");

// The complete frames at the start of `bytes`: (type, payload).
inline std::vector<std::pair<uint8_t, std::string>> Frames(const std::string& bytes) {
  std::vector<std::pair<uint8_t, std::string>> out;
  size_t at = 0;
  while (bytes.size() - at >= 5) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + i])); };
    uint32_t len = b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
    if (bytes.size() - at - 5 < len) break;
    out.emplace_back(static_cast<uint8_t>(bytes[at + 4]), bytes.substr(at + 5, len));
    at += 5 + len;
  }
  return out;
}

// The FINISH frame's message in what the server sent, "" if none.
inline std::string FinishMessage(const std::string& reply) {
  size_t at = reply.find("\"message\":\"");
  if (at == std::string::npos) return "";
  at += 11;
  return reply.substr(at, reply.find('"', at) - at);
}

class FastPath : public ::testing::Test {
 protected:
  Server server;
};

}  // namespace tidepool::testing
