#include "backends/ssh/host_list.h"

#include <fmt/format.h>

namespace tidepool::backends::ssh {

namespace {

bool ParsePort(const std::string& s, int* port) {
  if (s.empty() || s.size() > 5) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < 1 || v > 65535) return false;
  *port = v;
  return true;
}

// A host name or address ssh may be given: no spaces, no option-looking leading '-', no shell or
// ssh-config metacharacters.
bool SaneHost(const std::string& h) {
  if (h.empty() || h.size() > 253 || h[0] == '-') return false;
  for (unsigned char c : h) {
    if (!(isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':')) return false;
  }
  return true;
}

bool SaneUser(const std::string& u) {
  if (u.empty() || u.size() > 64 || u[0] == '-') return false;
  for (unsigned char c : u) {
    if (!(isalnum(c) || c == '.' || c == '-' || c == '_')) return false;
  }
  return true;
}

}  // namespace

std::string Host::Display() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return (user.empty() ? "" : user + "@") + h + (port == 22 ? "" : fmt::format(":{}", port));
}

std::string Host::NameStem(const std::string& pool) const {
  std::string out = pool + "-";
  for (char c : host) out += (isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '-';
  if (port != 22) out += fmt::format("-p{}", port);
  return out;
}

Result<Host> ParseHostString(const std::string& entry) {
  Host h;
  std::string rest = entry;
  if (size_t at = rest.find('@'); at != std::string::npos) {
    h.user = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (!SaneUser(h.user)) return InvalidArgument(fmt::format("\"{}\": not a user name", h.user));
  }
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    size_t close = rest.find(']');
    if (close == std::string::npos) return InvalidArgument(fmt::format("\"{}\": no closing ]", entry));
    h.host = rest.substr(1, close - 1);
    std::string after = rest.substr(close + 1);
    if (!after.empty() && (after[0] != ':' || !ParsePort(after.substr(1), &h.port))) {
      return InvalidArgument(fmt::format("\"{}\": the port must be 1-65535", entry));
    }
  } else if (size_t colon = rest.find(':'); colon != std::string::npos && rest.find(':', colon + 1) == std::string::npos) {
    h.host = rest.substr(0, colon);
    if (!ParsePort(rest.substr(colon + 1), &h.port)) {
      return InvalidArgument(fmt::format("\"{}\": the port must be 1-65535", entry));
    }
  } else {
    h.host = rest;
  }
  if (!SaneHost(h.host)) return InvalidArgument(fmt::format("\"{}\": not a host name or address", entry));
  h.port = h.port ? h.port : 22;
  return h;
}

Result<std::vector<Host>> ParseHosts(const nlohmann::json& fields) {
  std::vector<Host> out;
  auto hosts = fields.find("hosts");
  if (hosts == fields.end() || !hosts->is_array() || hosts->empty()) {
    return InvalidArgument("hosts: an ssh pool needs at least one host");
  }
  std::string user = fields.value("user", "");
  std::string key = fields.value("identity_file", "");
  int port = fields.value("port", 22);
  if (!user.empty() && !SaneUser(user)) return InvalidArgument(fmt::format("user: \"{}\" is not a user name", user));
  for (size_t i = 0; i < hosts->size(); ++i) {
    const nlohmann::json& e = (*hosts)[i];
    auto where = [&](const std::string& why) { return InvalidArgument(fmt::format("hosts[{}]: {}", i, why)); };
    Host h;
    bool port_given = false;
    if (e.is_string()) {
      auto parsed = ParseHostString(e.get<std::string>());
      if (!parsed.ok()) return where(parsed.status().message());
      h = *parsed;
      port_given = e.get<std::string>().find(':') != std::string::npos;
    } else if (e.is_object()) {
      for (const auto& [k, v] : e.items()) {
        if (k != "host" && k != "port" && k != "user" && k != "identity_file" && k != "labels" && k != "slots") {
          return where(fmt::format("unknown field \"{}\" (host, port, user, identity_file, labels, slots)", k));
        }
      }
      if (!e.contains("host") || !e["host"].is_string()) return where("a mapping needs host: NAME");
      h.host = e["host"].get<std::string>();
      if (!SaneHost(h.host)) return where(fmt::format("\"{}\": not a host name or address", h.host));
      if (e.contains("port")) {
        if (!e["port"].is_number_integer() || e["port"].get<int>() < 1 || e["port"].get<int>() > 65535) {
          return where("port must be 1-65535");
        }
        h.port = e["port"].get<int>();
        port_given = true;
      }
      if (e.contains("user")) {
        if (!e["user"].is_string() || !SaneUser(e["user"].get<std::string>())) return where("user: not a user name");
        h.user = e["user"].get<std::string>();
      }
      if (e.contains("identity_file")) {
        if (!e["identity_file"].is_string()) return where("identity_file must be a path");
        h.identity_file = e["identity_file"].get<std::string>();
      }
      if (e.contains("labels")) {
        if (!e["labels"].is_object()) return where("labels must be a mapping");
        for (const auto& [k, v] : e["labels"].items()) {
          if (!v.is_string()) return where(fmt::format("labels.{} must be a string", k));
          h.labels[k] = v.get<std::string>();
        }
      }
      if (e.contains("slots")) {
        if (!e["slots"].is_number_integer() || e["slots"].get<int>() < 1) return where("slots must be at least 1");
        h.slots = e["slots"].get<int>();
      }
    } else {
      return where("expected \"user@host:port\" or a mapping with host");
    }
    if (!port_given) h.port = port;
    if (h.user.empty()) h.user = user;
    if (h.identity_file.empty()) h.identity_file = key;
    for (const Host& seen : out) {
      if (seen.host == h.host && seen.port == h.port && seen.user == h.user) {
        return where(fmt::format("{} is listed twice (use workers_per_host for more agents on one host)", h.Display()));
      }
    }
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace tidepool::backends::ssh
