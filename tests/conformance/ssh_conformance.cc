// The conformance suite against the `ssh` backend: two real OpenSSH hosts, each in its own
// network, pid and mount namespaces (../integration/ssh_hosts.h), two agents per host; the server
// listens on their network's bridge.
#include <nlohmann/json.hpp>

#include "../integration/harness.h"
#include "../integration/netns.h"
#include "../integration/ssh_hosts.h"
#include "conformance.h"

namespace tidepool::conformance {
namespace {

struct Hosts {
  std::unique_ptr<testing::TestNet> net;
  std::unique_ptr<testing::SshHosts> ssh;
};

BackendEnv SshEnv() {
  BackendEnv env;
  env.name = "ssh";
  env.world = [](std::string* listen, std::string* skip) -> std::shared_ptr<void> {
    auto h = std::make_shared<Hosts>();
    h->net = std::make_unique<testing::TestNet>(2);
    if (!h->net->error().empty()) {
      *skip = "no network namespaces: " + h->net->error();
      return nullptr;
    }
    h->ssh = std::make_unique<testing::SshHosts>(*h->net);
    if (!h->ssh->error().empty()) {
      *skip = h->ssh->error();
      return nullptr;
    }
    *listen = h->net->server_ip() + ":0";
    return h;
  };
  env.block = [](const Setup& s, Variant v) {
    auto* h = static_cast<Hosts*>(s.world.get());
    nlohmann::json block = {
        {"hosts", {"root@" + h->net->ip(0), "root@" + h->net->ip(1)}},
        {"identity_file", h->ssh->client_key()},
        {"known_hosts", h->ssh->known_hosts()},
        // A failing create: a place the agent cannot be installed, and the host says why.
        {"agent_path", v == Variant::kFailing ? "/proc/tidepool/tidepool-agent" : "/opt/tidepool/bin/tidepool-agent"},
        {"workers_per_host", 2},
    };
    return "ssh: " + block.dump();
  };
  env.stop_from_outside = [](const Setup& s, const std::string& worker) {
    auto* h = static_cast<Hosts*>(s.world.get());
    for (int i = 0; i < h->net->hosts(); ++i) {
      if (worker.find("-" + h->net->ip(i) + "-") != std::string::npos) {
        h->ssh->Run(i, "pkill -KILL -f '/" + worker + ".env'");
      }
    }
  };
  env.failing_message = "cannot create directory";
  env.failing_class = backends::ErrorClass::kTransient;
  return env;
}

INSTANTIATE_TEST_SUITE_P(Ssh, Conformance, ::testing::Values(SshEnv()), EnvName);

}  // namespace
}  // namespace tidepool::conformance
