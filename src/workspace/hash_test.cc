#include "workspace/hash.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "workspace/test_util.h"

namespace tidepool::workspace {
namespace {

TEST(Hash, PublishedSha256Vectors) {
  // FIPS 180-2 examples.
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // the same in pieces
  h.Update("a");
  h.Update("");
  h.Update("bc");
  EXPECT_EQ(h.FinalHex(), Sha256Hex("abc"));
}

TEST(Hash, IsHashTakesOnly64LowercaseHexDigits) {
  EXPECT_TRUE(IsHash(Sha256Hex("abc")));
  EXPECT_FALSE(IsHash(""));
  EXPECT_FALSE(IsHash(Sha256Hex("abc").substr(1)));
  EXPECT_FALSE(IsHash(Sha256Hex("abc") + "0"));
  std::string upper = Sha256Hex("abc");
  upper[0] = 'B';
  EXPECT_FALSE(IsHash(upper));
  EXPECT_FALSE(IsHash("../" + Sha256Hex("abc").substr(3)));
  EXPECT_FALSE(IsHash(std::string(63, 'a') + "g"));
}

TEST(Hash, HashFdReadsTheWholeFileFromItsStart) {
  testing::TempDir dir;
  std::string content;
  for (int i = 0; i < 3 * 1024 * 1024 + 17; ++i) content += static_cast<char>(i * 7 + (i >> 11));
  testing::WriteFile(dir / "f", content);
  int fd = ::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::read(fd, &c, 1), 1);  // an offset moved by someone else does not matter
  Result<FileHash> h = HashFd(fd);
  ::close(fd);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->size, content.size());
  EXPECT_EQ(h->hash, Sha256Hex(content));
}

TEST(Hash, HashFdOfAnUnreadableDescriptorIsAnError) {
  testing::TempDir dir;
  int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Result<FileHash> h = HashFd(fd);  // EISDIR
  ::close(fd);
  EXPECT_FALSE(h.ok());
}

}  // namespace
}  // namespace tidepool::workspace
