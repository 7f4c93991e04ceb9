// tidepool admin check: the full integrity check of a store, run against the database file
// directly (no server: it takes the file's lock, so it refuses while a server has it open).
#include <fmt/format.h>

#include "cli/client_env.h"
#include "cli/commands.h"
#include "server/server.h"
#include "store/store.h"
#include "store/wal_check.h"

namespace tidepool::cli {

namespace {

int Check(const server::ServerFlags& flags) {
  std::optional<server::Settings> s = server::ResolveSettings(flags);
  if (!s) return kExitUsage;
  const std::string& path = s->sqlite_path;
  // Opening checks the write-ahead log (store/wal_check.h) before SQLite replays it.
  auto store = store::OpenSqliteStore(path, {.quick_check = false, .create = false});
  if (!store.ok()) {
    fmt::print(stderr, "tidepool: {}\n", store.status().message());
    if (store.status().message().find("in use by another server") != std::string::npos) {
      fmt::print(stderr, "tidepool: admin check runs offline, on the file alone: stop that server first\n");
    }
    return 1;
  }
  if (Status st = (*store)->CheckIntegrity(true); !st.ok()) {
    fmt::print(stderr, "tidepool: {}\n", st.message());
    return 1;
  }
  fmt::print("store {}: ok (write-ahead log and PRAGMA integrity_check)\n", path);
  return 0;
}

}  // namespace

void AddAdminStoreCommands(CLI::App& app, int* rc) {
  CLI::App* admin = app.add_subcommand("admin", "Maintenance of a server's store");
  admin->require_subcommand(1);
  auto f = std::make_shared<server::ServerFlags>();
  CLI::App* sub = admin->add_subcommand(
      "check", "Check a store offline: its write-ahead log and SQLite's full integrity_check; exit 1 if damaged");
  sub->add_option("--config", f->config_path, "the server's configuration (for server.data_dir / server.db)");
  sub->add_option("--data-dir", f->data_dir, "the server's data dir (the store is DATA_DIR/tidepool.db)");
  sub->add_option("--db", f->db, "sqlite:PATH of the store");
  sub->callback([f, rc] { *rc = Check(*f); });
}

}  // namespace tidepool::cli
