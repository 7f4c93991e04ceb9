#include "workspace/blob_dir.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "workspace/hash.h"
#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

using testing::TempDir;

TEST(BlobDir, OpenCreatesAPrivateDirectory) {
  TempDir t;
  Result<BlobDir> b = BlobDir::Open(t / "store/blobs");
  ASSERT_TRUE(b.ok()) << b.status().message();
  struct stat st;
  ASSERT_EQ(::stat((t / "store/blobs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(b->dir(), t / "store/blobs");
}

TEST(BlobDir, PutStoresWhatHashesToItsNameAndNothingElse) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  const std::string content = "a manifest made in memory";
  const std::string h = Sha256Hex(content);
  Status wrong = b.Put(h, "other bytes");
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find(h), std::string::npos) << wrong.message();
  EXPECT_FALSE(b.Has(h));
  ASSERT_TRUE(b.Put(h, content).ok());
  EXPECT_TRUE(b.Has(h));
  EXPECT_EQ(*b.Read(h, 0, 100), content);
  ASSERT_TRUE(b.Put(h, content).ok());  // again: already there
  EXPECT_TRUE(std::filesystem::is_empty(t / "partial")) << "Put left a temporary file";
}

TEST(BlobDir, AppendResumesAndCompletesOnlyWhenTheHashMatches) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  const std::string content = "hello, content-addressed world";
  const std::string h = Sha256Hex(content);
  EXPECT_FALSE(b.Has(h));
  EXPECT_EQ(b.PartialSize(h), 0u);
  ASSERT_TRUE(b.Append(h, 0, content.substr(0, 10), false).ok());
  EXPECT_EQ(b.PartialSize(h), 10u);
  EXPECT_FALSE(b.Has(h));  // never visible half-written
  EXPECT_FALSE(b.Read(h, 0, 100).ok());
  // A write past the end (a gap) is refused, naming both.
  Status wrong = b.Append(h, 15, content.substr(15), true);
  EXPECT_EQ(wrong.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong.message().find("offset 15"), std::string::npos) << wrong.message();
  EXPECT_NE(wrong.message().find("10 bytes"), std::string::npos) << wrong.message();
  // A write over what is there (a second writer of the same blob) puts the same bytes again.
  ASSERT_TRUE(b.Append(h, 5, content.substr(5, 10), false).ok());
  EXPECT_EQ(b.PartialSize(h), 15u);
  ASSERT_TRUE(b.Append(h, 0, content.substr(0, 5), false).ok());
  EXPECT_EQ(b.PartialSize(h), 15u);
  // A cut-off write resumes at the end of what is there (another BlobDir: another process).
  BlobDir again = *BlobDir::Open(t.path());
  ASSERT_TRUE(again.Append(h, again.PartialSize(h), content.substr(15), true).ok());
  EXPECT_TRUE(again.Has(h));
  EXPECT_EQ(again.PartialSize(h), 0u);
  EXPECT_EQ(again.PathOf(h), t.path() + "/" + h.substr(0, 2) + "/" + h);
  EXPECT_EQ(testing::ReadAll(again.PathOf(h)), content);
  EXPECT_EQ(*again.SizeOf(h), content.size());
  EXPECT_EQ(*again.Read(h, 0, 5), "hello");
  EXPECT_EQ(*again.Read(h, 7, 1000), content.substr(7));
  EXPECT_EQ(*again.Read(h, 1000, 10), "");
}

TEST(BlobDir, ContentThatHashesToAnotherNameIsDiscarded) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  const std::string h = Sha256Hex("the real content");
  Status s = b.Append(h, 0, "something else", true);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(Sha256Hex("something else")), std::string::npos) << s.message();
  EXPECT_FALSE(b.Has(h));
  EXPECT_EQ(b.PartialSize(h), 0u);  // gone: the next try starts again from 0
  ASSERT_TRUE(b.Append(h, 0, "the real content", true).ok());
  EXPECT_TRUE(b.Has(h));
}

TEST(BlobDir, EmptyBlob) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  ASSERT_TRUE(b.Append(Sha256Hex(""), 0, "", true).ok());
  EXPECT_TRUE(b.Has(Sha256Hex("")));
  EXPECT_EQ(*b.SizeOf(Sha256Hex("")), 0u);
}

TEST(BlobDir, NamesThatAreNotHashesAreRefused) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  for (std::string bad : {std::string("../../etc/passwd"), std::string("partial"), std::string(64, 'A')}) {
    EXPECT_FALSE(b.Has(bad));
    EXPECT_FALSE(b.Append(bad, 0, "x", true).ok());
    EXPECT_FALSE(b.Read(bad, 0, 1).ok());
    EXPECT_FALSE(b.SizeOf(bad).ok());
    EXPECT_FALSE(b.PutFile(bad, "/etc/hostname").ok());
    EXPECT_EQ(b.PartialSize(bad), 0u);
  }
}

TEST(BlobDir, PutFileCopiesAndChecks) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t / "blobs");
  std::string big(3 << 20, 'x');
  big[12345] = 'y';
  testing::WriteFile(t / "f", big);
  ASSERT_TRUE(b.PutFile(Sha256Hex(big), t / "f").ok());
  EXPECT_EQ(testing::ReadAll(b.PathOf(Sha256Hex(big))), big);
  Status s = b.PutFile(Sha256Hex("other"), t / "f");
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(b.Has(Sha256Hex("other")));
  EXPECT_EQ(b.PutFile(Sha256Hex("x"), t / "missing").code(), StatusCode::kNotFound);
}

TEST(BlobDir, EvictRemovesTheLeastRecentlyUsedButNeverTheKeptOnes) {
  TempDir t;
  BlobDir b = *BlobDir::Open(t.path());
  std::vector<std::string> hashes;
  for (int i = 0; i < 4; ++i) {
    std::string c(1000, static_cast<char>('a' + i));
    hashes.push_back(Sha256Hex(c));
    ASSERT_TRUE(b.Append(hashes.back(), 0, c, true).ok());
    testing::Age(b.PathOf(hashes.back()), 100 - i);  // 0 oldest ... 3 newest
  }
  ASSERT_TRUE(b.Append(Sha256Hex("partial"), 0, std::string(5000, 'p'), false).ok());  // not counted
  b.Touch(hashes[0]);  // used now: the newest
  EXPECT_EQ(b.Evict(4000), 0u);
  // Down to 2000: 1 (oldest after the touch) goes, 2 is kept, 3 goes; 0 stays.
  EXPECT_EQ(b.Evict(2000, {hashes[2]}), 2000u);
  EXPECT_TRUE(b.Has(hashes[0]));
  EXPECT_FALSE(b.Has(hashes[1]));
  EXPECT_TRUE(b.Has(hashes[2]));
  EXPECT_FALSE(b.Has(hashes[3]));
  EXPECT_EQ(b.PartialSize(Sha256Hex("partial")), 5000u);
  EXPECT_EQ(b.Evict(0), 2000u);
  EXPECT_FALSE(b.Has(hashes[0]));
}

}  // namespace
}  // namespace tidepool::workspace
