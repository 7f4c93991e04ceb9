#include "common/redact.h"

#include <gtest/gtest.h>

namespace tidepool {
namespace {

TEST(Redactor, NamesThatLookSecretInAnyCase) {
  for (const char* name : {"MY_API_KEY", "api_token", "GITHUB_TOKEN", "Db_Password", "AWS_SECRET_ACCESS_KEY",
                           "secret", "KEYRING"}) {
    EXPECT_TRUE(Redactor::SecretName(name)) << name;
  }
  for (const char* name : {"HOME", "PATH", "TIDEPOOL_POOL", "PASSWD_FILE", "TOKN", ""}) {
    EXPECT_FALSE(Redactor::SecretName(name)) << name;
  }
}

TEST(Redactor, ValuesOfSecretVariablesAndGivenValuesAreReplacedEverywhere) {
  Redactor r;
  r.AddEnvironment({"MY_API_KEY=sk-live-123456", "HOME=/root/keep-me", "db_password=hunter2hunter2", "NOEQUALS",
                    "EMPTY_TOKEN="});
  r.AddValue("config-secret-value");
  EXPECT_EQ(r.Scrub("start failed (exit 1): auth sk-live-123456 refused; key=sk-live-123456\n"
                    "pw hunter2hunter2, conf config-secret-value, home /root/keep-me"),
            "start failed (exit 1): auth [redacted] refused; key=[redacted]\n"
            "pw [redacted], conf [redacted], home /root/keep-me");
  EXPECT_EQ(r.Scrub(""), "");
  EXPECT_EQ(r.Scrub("nothing secret here"), "nothing secret here");
}

TEST(Redactor, TheLongestValueWinsAndTheMarkerIsNeverRescanned) {
  Redactor r;
  r.AddValue("abcdef");
  r.AddValue("abcdefghij");
  r.AddValue("redacted");  // a value that is part of the marker: replaced once, not again
  EXPECT_EQ(r.Scrub("x abcdefghij y abcdefgh z"), "x [redacted] y [redacted]gh z");
  EXPECT_EQ(r.Scrub("redacted"), "[redacted]");
}

TEST(Redactor, ShortValuesAreLeftAlone) {
  Redactor r;
  r.AddEnvironment({"KEY=1", "TOKEN=true", "SECRET=abcde"});
  r.AddValue("");
  EXPECT_EQ(r.Scrub("1 true abcde"), "1 true abcde");
}

TEST(Redactor, ServerTokensAreReplacedByTheirShape) {
  Redactor r;
  std::string worker = "tpw_" + std::string(64, 'a');
  std::string task = "tpt_6162_" + std::string(64, '0');
  EXPECT_EQ(r.Scrub("token " + worker + " and " + task + "."), "token [redacted] and [redacted].");
  // Too short, or not one of ours: kept.
  EXPECT_EQ(r.Scrub("tpw_abc tpx_" + std::string(20, 'a') + " tpw"), "tpw_abc tpx_" + std::string(20, 'a') + " tpw");
}

}  // namespace
}  // namespace tidepool
