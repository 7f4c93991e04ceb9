#include "workspace/manifest_delta.h"

#include <gtest/gtest.h>

#include "workspace/hash.h"
#include "workspace/scan.h"

namespace tidepool::workspace {
namespace {

using v1::WorkspaceEntry;

WorkspaceEntry Entry(const std::string& path, WorkspaceEntry::Kind kind, const std::string& content = "", int64_t mtime = 1) {
  WorkspaceEntry e;
  e.set_path(path);
  e.set_kind(kind);
  e.set_mode(kind == WorkspaceEntry::DIR ? 0755 : 0644);
  if (kind == WorkspaceEntry::FILE) {
    e.set_size(content.size());
    e.set_hash(Sha256Hex(content));
    e.set_mtime_ns(mtime);
  }
  if (kind == WorkspaceEntry::SYMLINK) e.set_target(content);
  return e;
}

v1::WorkspaceManifest Base() {
  v1::WorkspaceManifest m;
  v1::WorkspaceRoot* r = m.add_roots();
  r->set_path("/home/u/proj");
  *r->add_entries() = Entry("", WorkspaceEntry::DIR);
  *r->add_entries() = Entry("a.txt", WorkspaceEntry::FILE, "alpha");
  *r->add_entries() = Entry("b.txt", WorkspaceEntry::FILE, "beta");
  *r->add_entries() = Entry("d", WorkspaceEntry::DIR);
  *r->add_entries() = Entry("d/c.txt", WorkspaceEntry::FILE, "gamma");
  *r->add_entries() = Entry("d/link", WorkspaceEntry::SYMLINK, "../a.txt");
  v1::WorkspaceRoot* extra = m.add_roots();
  extra->set_path("/opt/venv");
  *extra->add_entries() = Entry("", WorkspaceEntry::DIR);
  return m;
}

// The delta of two manifests, made as the client makes it: from their serializations.
v1::ManifestDelta DeltaOf(const v1::WorkspaceManifest& base, const v1::WorkspaceManifest& next) {
  std::string b, n;
  const std::string bh = ManifestHash(base, &b), nh = ManifestHash(next, &n);
  auto d = MakeDelta(bh, b, nh, n);
  EXPECT_TRUE(d.ok()) << d.status().message();
  return d.ok() ? *d : v1::ManifestDelta();
}

TEST(ManifestDelta, OneChangedFileTravelsAsOneEntryAndTheResultHashesAsTheWhole) {
  const v1::WorkspaceManifest base = Base();
  v1::WorkspaceManifest next = base;
  *next.mutable_roots(0)->mutable_entries(4) = Entry("d/c.txt", WorkspaceEntry::FILE, "GAMMA");
  const std::string nh = ManifestHash(next);
  v1::ManifestDelta d = DeltaOf(base, next);
  ASSERT_EQ(d.roots_size(), 2);
  EXPECT_EQ(d.roots(0).put_size(), 1);
  EXPECT_EQ(d.roots(0).removed_size(), 0);
  EXPECT_EQ(d.roots(1).put_size(), 0);
  EXPECT_EQ(DeltaContent(d), std::set<std::string>{Sha256Hex("GAMMA")});
  auto made = ApplyDelta(base, d);
  ASSERT_TRUE(made.ok()) << made.status().message();
  EXPECT_EQ(ManifestHash(*made), nh);
}

// A manifest sent whole as a delta from nothing (base ""): every root whole, every entry put.
TEST(ManifestDelta, FromNothingEveryRootIsWholeAndTheResultIsTheManifest) {
  const v1::WorkspaceManifest m = Base();
  std::string bytes;
  const std::string hash = ManifestHash(m, &bytes);
  auto d = MakeDelta("", "", hash, bytes);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->base(), "");
  ASSERT_EQ(d->roots_size(), 2);
  for (const auto& rd : d->roots()) EXPECT_TRUE(rd.whole()) << rd.path();
  EXPECT_EQ(d->roots(0).put_size(), 6);
  auto made = ApplyDelta(v1::WorkspaceManifest(), *d);
  ASSERT_TRUE(made.ok()) << made.status().message();
  EXPECT_EQ(ManifestHash(*made), hash);
  // A root not marked whole has nothing to come from.
  d->mutable_roots(1)->set_whole(false);
  EXPECT_FALSE(ApplyDelta(v1::WorkspaceManifest(), *d).ok());
}

TEST(ManifestDelta, CreationsDeletionsAnMtimeAloneAndRootsComeAndGo) {
  const v1::WorkspaceManifest base = Base();
  v1::WorkspaceManifest next;
  v1::WorkspaceRoot* r = next.add_roots();
  r->set_path("/home/u/proj");
  *r->add_entries() = Entry("", WorkspaceEntry::DIR);
  *r->add_entries() = Entry("a.txt", WorkspaceEntry::FILE, "alpha", 2);  // touched: the hash of the whole sees it
  *r->add_entries() = Entry("aa", WorkspaceEntry::DIR);                 // between two kept entries
  *r->add_entries() = Entry("aa/new", WorkspaceEntry::FILE, "new");
  *r->add_entries() = Entry("d", WorkspaceEntry::DIR);                  // b.txt, d/c.txt, d/link gone
  *r->add_entries() = Entry("z", WorkspaceEntry::FILE, "last");         // after every base entry
  v1::WorkspaceRoot* data = next.add_roots();                            // /opt/venv gone, /data new
  data->set_path("/data");
  *data->add_entries() = Entry("", WorkspaceEntry::DIR);
  *data->add_entries() = Entry("x", WorkspaceEntry::FILE, "x");
  const std::string nh = ManifestHash(next);
  v1::ManifestDelta d = DeltaOf(base, next);
  EXPECT_TRUE(d.roots(1).whole());
  EXPECT_EQ(d.roots(0).removed_size(), 3);
  auto made = ApplyDelta(base, d);
  ASSERT_TRUE(made.ok()) << made.status().message();
  EXPECT_EQ(ManifestHash(*made), nh);
  EXPECT_EQ(made->roots_size(), 2);
}

TEST(ManifestDelta, ADeltaThatDoesNotFitItsBaseIsRefusedNamingWhy) {
  const v1::WorkspaceManifest base = Base();
  v1::ManifestDelta d;
  d.set_base(ManifestHash(base));
  v1::RootDelta* rd = d.add_roots();
  rd->set_path("/home/u/proj");
  rd->add_removed("no/such/file");
  auto made = ApplyDelta(base, d);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("removes paths its base lacks"), std::string::npos);

  rd->clear_removed();
  *rd->add_put() = Entry("../escape", WorkspaceEntry::FILE, "x");
  made = ApplyDelta(base, d);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("not a workspace path"), std::string::npos);

  // A damaged base (the client's saved copy) is not a manifest: no delta, the whole goes instead.
  std::string good;
  ManifestHash(base, &good);
  auto garbled = MakeDelta("b", good.substr(0, good.size() / 2) + "\xff\xff", "n", good);
  EXPECT_FALSE(garbled.ok());

  v1::ManifestDelta other;
  other.add_roots()->set_path("/elsewhere");
  made = ApplyDelta(base, other);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("no root /elsewhere"), std::string::npos);
}

}  // namespace
}  // namespace tidepool::workspace
