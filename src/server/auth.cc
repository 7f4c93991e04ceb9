#include "server/auth.h"

#include <openssl/sha.h>
#include <yaml-cpp/yaml.h>

#include <fmt/format.h>

#include "common/crypto.h"
#include "common/fs.h"

namespace tidepool::server {

const char* RoleName(Role r) {
  switch (r) {
    case Role::kView: return "view";
    case Role::kSubmit: return "submit";
    case Role::kManage: return "manage";
    default: return "none";
  }
}

Role User::RoleOn(const std::string& pool) const {
  Role best = Role::kNone;
  for (const std::string& key : {pool, std::string("*")}) {
    auto it = roles.find(key);
    if (it != roles.end() && it->second > best) best = it->second;
  }
  return best;
}

Status Caller::Denied(const std::string& pool, Role needed) const {
  return PermissionDenied(fmt::format("user {} lacks the {} role on pool {}", name, RoleName(needed), pool));
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

Result<Users> Users::Load(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return InvalidArgument(fmt::format("auth.users_file: {}", text.status().message()));
  std::vector<std::string> errors;
  auto err = [&](const YAML::Mark& m, const std::string& msg) {
    errors.push_back(fmt::format("{}:{}:{}: {}", path, m.line + 1, m.column + 1, msg));
  };
  Users users;
  try {
    YAML::Node root = YAML::Load(*text);
    if (!root.IsMap() || !root["users"] || !root["users"].IsSequence()) {
      return InvalidArgument(fmt::format("{}:1:1: expected a top-level `users:` list", path));
    }
    for (const YAML::Node& u : root["users"]) {
      if (!u.IsMap()) {
        err(u.Mark(), "each user is a mapping with name, token and roles");
        continue;
      }
      User user;
      for (const auto& kv : u) {
        std::string key = kv.first.as<std::string>();
        if (key == "name") {
          user.name = kv.second.as<std::string>();
        } else if (key == "token") {
          std::string token = kv.second.as<std::string>();
          if (token.size() < 16) err(kv.second.Mark(), "token: use at least 16 characters");
          user.token_sha256 = Sha256Hex(token);
        } else if (key == "token_sha256") {
          user.token_sha256 = kv.second.as<std::string>();
          if (user.token_sha256.size() != 64) err(kv.second.Mark(), "token_sha256: expected 64 hex characters");
        } else if (key == "roles") {
          if (!kv.second.IsMap()) {
            err(kv.second.Mark(), "roles: expected a mapping of pool (or \"*\") to view|submit|manage");
            continue;
          }
          for (const auto& r : kv.second) {
            std::string role = r.second.as<std::string>();
            Role parsed = role == "view" ? Role::kView : role == "submit" ? Role::kSubmit : role == "manage" ? Role::kManage : Role::kNone;
            if (parsed == Role::kNone) {
              err(r.second.Mark(), fmt::format("unknown role \"{}\" (view, submit, manage)", role));
              continue;
            }
            user.roles[r.first.as<std::string>()] = parsed;
          }
        } else {
          err(kv.first.Mark(), fmt::format("unknown field \"{}\" (name, token, token_sha256, roles)", key));
        }
      }
      if (user.name.empty()) err(u.Mark(), "a user needs a name");
      if (user.token_sha256.empty()) err(u.Mark(), fmt::format("user {} needs a token or token_sha256", user.name));
      for (const User& other : users.users_) {
        if (other.name == user.name) err(u.Mark(), fmt::format("user {} is listed twice", user.name));
        if (!user.token_sha256.empty() && other.token_sha256 == user.token_sha256) {
          err(u.Mark(), fmt::format("users {} and {} have the same token", other.name, user.name));
        }
      }
      users.users_.push_back(std::move(user));
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("{}:{}:{}: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
    return InvalidArgument(all);
  }
  return users;
}

const User* Users::Find(const std::string& name) const {
  for (const User& u : users_) {
    if (u.name == name) return &u;
  }
  return nullptr;
}

const User* Users::Authenticate(const std::string& token) const {
  if (token.empty()) return nullptr;
  std::string digest = Sha256Hex(token);
  const User* found = nullptr;
  for (const User& u : users_) {
    if (ConstantTimeEquals(u.token_sha256, digest)) found = &u;  // no early exit: same time for all
  }
  return found;
}

}  // namespace tidepool::server
