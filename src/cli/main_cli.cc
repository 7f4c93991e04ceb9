#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "agent/agent_cli.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/workspace_daemon.h"

namespace tidepool::cli {

namespace {

// vrun/vbatch: options come first, then the command, whose own arguments must not be read as
// ours (`vrun ls -la`). Splits `args` (the words after the subcommand) at the first word that
// is not an option of `sub` (or at `--`). An unknown option is a usage error, not a command.
bool SplitCommand(CLI::App* sub, const std::vector<std::string>& args, std::vector<std::string>* options,
                  std::vector<std::string>* command, std::string* error) {
  auto takes_value = [](const CLI::Option* o) { return o->get_type_size() != 0 && o->get_expected_min() > 0; };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      command->assign(args.begin() + static_cast<long>(i) + 1, args.end());
      return true;
    }
    if (a.size() < 2 || a[0] != '-') {
      command->assign(args.begin() + static_cast<long>(i), args.end());
      return true;
    }
    options->push_back(a);
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(0, a.find('='));
      const CLI::Option* o = sub->get_option_no_throw(name);
      if (!o && (name == "--help" || name == "--help-all")) continue;
      if (!o) {
        *error = fmt::format("unknown option {}", name);
        return false;
      }
      if (takes_value(o) && a.find('=') == std::string::npos && i + 1 < args.size()) options->push_back(args[++i]);
      continue;
    }
    // -X, -Xvalue, or a cluster of flags like -Iq.
    for (size_t k = 1; k < a.size(); ++k) {
      std::string name = std::string("-") + a[k];
      const CLI::Option* o = sub->get_option_no_throw(name);
      if (!o && name == "-h") break;
      if (!o) {
        *error = fmt::format("unknown option {}", name);
        return false;
      }
      if (takes_value(o)) {
        if (k + 1 == a.size() && i + 1 < args.size()) options->push_back(args[++i]);
        break;  // the rest of the word is the value
      }
    }
  }
  return true;  // no command: the handler says so
}

}  // namespace

int Main(int argc, char** argv) {
  // vrun and vbatch are links to this binary: they behave as `tidepool run` / `tidepool batch`.
  std::string self = argv[0];
  std::string base = self.substr(self.rfind('/') == std::string::npos ? 0 : self.rfind('/') + 1);
  std::vector<std::string> args(argv, argv + argc);
  if (base == "vrun" || base == "vbatch") args.insert(args.begin() + 1, base == "vrun" ? "run" : "batch");
  if (args.size() > 1 && args[1] == "agent") agent::ExecLeanAgentIfPlain(args);

  CLI::App app("Tidepool: pools of compute workers, and your commands on them", "tidepool");
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every command");
  int rc = 0;
  std::vector<std::string> command;
  AddRunCommand(app, &rc, &command);
  AddBatchCommand(app, &rc, &command);
  AddTaskCommands(app, &rc);
  AddPoolCommands(app, &rc);
  AddAdminCommands(app, &rc);
  AddWorkspaceDaemonCommand(app, &rc);

  if (args.size() > 1 && (args[1] == "run" || args[1] == "batch")) {
    CLI::App* sub = app.get_subcommand(args[1]);
    std::vector<std::string> options;
    std::string error;
    std::string shown = base == "vrun" || base == "vbatch" ? base : "tidepool " + args[1];
    if (!SplitCommand(sub, std::vector<std::string>(args.begin() + 2, args.end()), &options, &command, &error)) {
      fmt::print(stderr, "{}: {}\nRun '{} --help' for usage.\n", shown, error, shown);
      return kExitUsage;
    }
    options.insert(options.begin(), args.begin(), args.begin() + 2);
    args = std::move(options);
  }

  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  try {
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::ParseError& e) {
    // Report against the deepest subcommand reached, so its usage is the one shown.
    CLI::App* usage_of = &app;
    for (CLI::App* sub = &app;;) {
      auto subs = sub->get_subcommands();
      if (subs.empty()) break;
      sub = subs.front();
      usage_of = sub;
    }
    if (base == "vrun" || base == "vbatch") usage_of->name(base);
    return ParseFailure(*usage_of, e);
  }
  return rc;
}

}  // namespace tidepool::cli
