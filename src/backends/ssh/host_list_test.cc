#include "backends/ssh/host_list.h"

#include <gtest/gtest.h>

namespace tidepool::backends::ssh {
namespace {

TEST(SshHostList, StringsMappingsAndDefaults) {
  auto hosts = ParseHosts(nlohmann::json::parse(R"({
    "hosts": ["gpu1", "ops@gpu2:2222", "[fd00::7]:23",
              {"host": "gpu4", "port": 2200, "user": "svc", "identity_file": "/k", "labels": {"gpu": "a100"}, "slots": 2}],
    "user": "ubuntu", "identity_file": "/etc/key", "port": 2022})"));
  ASSERT_TRUE(hosts.ok()) << hosts.status().message();
  ASSERT_EQ(hosts->size(), 4u);
  const auto& h = *hosts;
  EXPECT_EQ(h[0].Display(), "ubuntu@gpu1:2022");  // the block's defaults
  EXPECT_EQ(h[0].identity_file, "/etc/key");
  EXPECT_EQ(h[1].Display(), "ops@gpu2:2222");
  EXPECT_EQ(h[2].host, "fd00::7");
  EXPECT_EQ(h[2].port, 23);
  EXPECT_EQ(h[3].Display(), "svc@gpu4:2200");
  EXPECT_EQ(h[3].identity_file, "/k");
  EXPECT_EQ(h[3].slots, 2);
  EXPECT_EQ(h[3].labels.at("gpu"), "a100");
  EXPECT_EQ(h[0].NameStem("p"), "p-gpu1-p2022");
  EXPECT_EQ(h[2].NameStem("p"), "p-fd00--7-p23");
}

TEST(SshHostList, BadEntriesNameTheEntryAndWhy) {
  auto err = [](const char* json) { return ParseHosts(nlohmann::json::parse(json)).status().message(); };
  EXPECT_EQ(err(R"({"hosts": []})"), "hosts: an ssh pool needs at least one host");
  EXPECT_EQ(err(R"({"hosts": ["a", "b:99999"]})"), "hosts[1]: \"b:99999\": the port must be 1-65535");
  EXPECT_EQ(err(R"({"hosts": ["-oProxyCommand=x"]})"), "hosts[0]: \"-oProxyCommand=x\": not a host name or address");
  EXPECT_EQ(err(R"({"hosts": ["a b"]})"), "hosts[0]: \"a b\": not a host name or address");
  EXPECT_EQ(err(R"({"hosts": [{"host": "a", "colour": "red"}]})"),
            "hosts[0]: unknown field \"colour\" (host, port, user, identity_file, labels, slots)");
  EXPECT_EQ(err(R"({"hosts": [{"port": 22}]})"), "hosts[0]: a mapping needs host: NAME");
  EXPECT_EQ(err(R"({"hosts": ["a", "a:22"]})"),
            "hosts[1]: a is listed twice (use workers_per_host for more agents on one host)");
  EXPECT_EQ(err(R"({"hosts": [7]})"), "hosts[0]: expected \"user@host:port\" or a mapping with host");
  EXPECT_EQ(err(R"({"hosts": ["x;rm@a"]})"), "hosts[0]: \"x;rm\": not a user name");
}

}  // namespace
}  // namespace tidepool::backends::ssh
