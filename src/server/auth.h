// Users and roles (pools.md, "Security").
//
// With `auth.users_file`, every client call carries a bearer token. A user has a role per pool:
//   view    list and get pools, workers and tasks of the pool
//   submit  run tasks there (and see and cancel their own)
//   manage  drain and delete workers, see and cancel everyone's tasks there
// Each role includes the ones before it. "*" gives a role on every pool; the higher one wins.
//
// The users file (YAML):
//   users:
//     - name: alice
//       token: "a long random string"       # or token_sha256: <hex of SHA-256(token)>
//       roles: { "*": view, gpu: submit, cpu: manage }
//
// Tasks get a task token (TIDEPOOL_TOKEN in their environment) that acts as their owner while
// the task is unfinished, so `vbatch` inside a task works without the user's own token.
// Tokens are compared in constant time and never logged.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tidepool::server {

enum class Role { kNone = 0, kView = 1, kSubmit = 2, kManage = 3 };
const char* RoleName(Role r);

struct User {
  std::string name;
  std::string token_sha256;  // hex
  std::map<std::string, Role> roles;  // pool (or "*") -> role
  Role RoleOn(const std::string& pool) const;
};

// Who is calling. Without auth the caller is trusted (local users on a loopback server).
struct Caller {
  const User* user = nullptr;  // nullptr = auth off
  std::string name;            // the user, or "" without auth
  bool Can(const std::string& pool, Role needed) const { return !user || user->RoleOn(pool) >= needed; }
  // "user bob lacks the submit role on pool gpu"
  Status Denied(const std::string& pool, Role needed) const;
};

class Users {
 public:
  // FILE:LINE:COL errors, all of them.
  static Result<Users> Load(const std::string& path);
  // The user holding `token`, or nullptr.
  const User* Authenticate(const std::string& token) const;
  const User* Find(const std::string& name) const;
  size_t size() const { return users_.size(); }

 private:
  std::vector<User> users_;
};

std::string Sha256Hex(const std::string& data);

}  // namespace tidepool::server
