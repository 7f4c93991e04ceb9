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
// Tasks get a task token (TIDEPOOL_TOKEN in their environment) so that `vbatch` inside a task
// works without the user's own token. It is bound to its task (issue 17):
//   - it sees, cancels and submits under that task's own tree only (the task and its
//     descendants); a submission must name a parent in the tree (clients do, from
//     $TIDEPOOL_TASK_ID), so it never makes a top-level task;
//   - it acts with its owner's roles capped at submit: it never manages workers or others' tasks;
//   - it dies when its task ends.
// On the worker, only the task's own Unix user can read it (agent/task_users.h).
// Tokens are compared in constant time and never logged.
#pragma once

#include <algorithm>
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
  std::string tree;            // a task token's task: the caller is held to that task's tree
  Role cap = Role::kManage;    // the most the caller may do anywhere (a task token: submit)
  bool Can(const std::string& pool, Role needed) const {
    return !user || std::min(user->RoleOn(pool), cap) >= needed;
  }
  // True unless the caller is held to a tree that `task_id` is outside of.
  bool InTree(const std::string& task_id) const {
    return tree.empty() || task_id == tree || (task_id.size() > tree.size() && task_id.compare(0, tree.size(), tree) == 0 &&
                                               task_id[tree.size()] == '/');
  }
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
