#include "workspace/manifest_delta.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

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

// ApplyDelta, checked against ApplyDeltaToBytes (what the server and the agents use): the same
// serialization, or the same error.
Result<v1::WorkspaceManifest> Apply(const v1::WorkspaceManifest& base, const v1::ManifestDelta& d) {
  std::string base_bytes;
  ManifestHash(base, &base_bytes);
  auto parsed = ApplyDelta(base, d);
  auto bytes = ApplyDeltaToBytes(base_bytes, d);
  EXPECT_EQ(parsed.ok(), bytes.ok());
  if (parsed.ok() && bytes.ok()) {
    std::string want;
    ManifestHash(*parsed, &want);
    EXPECT_TRUE(want == *bytes) << "the spliced serialization differs from the parsed one's";
  } else if (!parsed.ok() && !bytes.ok()) {
    EXPECT_EQ(parsed.status().message(), bytes.status().message());
  }
  // And root by root, in place (what the workspace daemon does with a rescan's changes).
  for (int i = 0; parsed.ok() && i < d.roots_size(); ++i) {
    const v1::RootDelta& rd = d.roots(i);
    const v1::WorkspaceRoot* from = nullptr;
    for (const auto& r : base.roots()) {
      if (r.path() == rd.path()) from = &r;
    }
    if (rd.whole() || !from) continue;
    v1::WorkspaceRoot in_place = *from;
    EXPECT_TRUE(ApplyRootDelta(&in_place, rd).ok());
    std::string got, want;
    in_place.SerializeToString(&got);
    parsed->roots(i).SerializeToString(&want);
    EXPECT_TRUE(got == want) << "root " << rd.path() << " applied in place differs";
  }
  return parsed;
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
  auto made = Apply(base, d);
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
  auto made = Apply(v1::WorkspaceManifest(), *d);
  ASSERT_TRUE(made.ok()) << made.status().message();
  EXPECT_EQ(ManifestHash(*made), hash);
  // A root not marked whole has nothing to come from.
  d->mutable_roots(1)->set_whole(false);
  EXPECT_FALSE(Apply(v1::WorkspaceManifest(), *d).ok());
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
  auto made = Apply(base, d);
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
  auto made = Apply(base, d);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("removes paths its base lacks"), std::string::npos);
  v1::WorkspaceRoot in_place = base.roots(0);
  EXPECT_FALSE(ApplyRootDelta(&in_place, *rd).ok());
  EXPECT_EQ(in_place.SerializeAsString(), base.roots(0).SerializeAsString()) << "a refused delta changed the root";

  rd->clear_removed();
  *rd->add_put() = Entry("../escape", WorkspaceEntry::FILE, "x");
  made = Apply(base, d);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("not a workspace path"), std::string::npos);
  EXPECT_FALSE(ApplyRootDelta(&in_place, *rd).ok());

  // A damaged base (the client's saved copy) is not a manifest: no delta, the whole goes instead.
  std::string good;
  ManifestHash(base, &good);
  auto garbled = MakeDelta("b", good.substr(0, good.size() / 2) + "\xff\xff", "n", good);
  EXPECT_FALSE(garbled.ok());

  v1::ManifestDelta other;
  other.add_roots()->set_path("/elsewhere");
  made = Apply(base, other);
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("no root /elsewhere"), std::string::npos);
}

// Random trees and random edits: the delta made from the two serializations, applied to the base's
// bytes, is the next manifest's serialization byte for byte (so it hashes as the whole).
TEST(ManifestDelta, SplicedBytesAreTheSerializationOfTheNextManifest) {
  std::mt19937 rng(7);
  auto tree = [&](int n) {
    v1::WorkspaceManifest m;
    for (int r = 0; r < 2; ++r) {
      v1::WorkspaceRoot* root = m.add_roots();
      root->set_path(r == 0 ? "/w" : "/x");
      std::set<std::string> paths{""};
      while (static_cast<int>(paths.size()) < n) paths.insert(std::string(1, "abc"[rng() % 3]) + "/" + std::to_string(rng() % 40));
      for (const std::string& p : paths) {
        *root->add_entries() = p.size() <= 1 ? Entry(p, WorkspaceEntry::DIR)
                                             : Entry(p, WorkspaceEntry::FILE, std::to_string(rng() % 3), rng() % 2);
      }
    }
    return m;
  };
  for (int round = 0; round < 200; ++round) {
    const v1::WorkspaceManifest base = tree(20 + static_cast<int>(rng() % 30));
    const v1::WorkspaceManifest next = round % 10 == 0 ? base : tree(20 + static_cast<int>(rng() % 30));
    std::string b, n;
    const std::string bh = ManifestHash(base, &b), nh = ManifestHash(next, &n);
    auto d = MakeDelta(bh, b, nh, n);
    ASSERT_TRUE(d.ok());
    auto bytes = ApplyDeltaToBytes(b, *d);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message();
    ASSERT_TRUE(*bytes == n) << "round " << round;
    v1::WorkspaceManifest in_place = base;
    for (int i = 0; i < d->roots_size(); ++i) ASSERT_TRUE(ApplyRootDelta(in_place.mutable_roots(i), d->roots(i)).ok());
    ASSERT_EQ(ManifestHash(in_place), nh) << "round " << round;
  }
  EXPECT_FALSE(ApplyDeltaToBytes("\xff\xff", v1::ManifestDelta()).ok());  // not a manifest
}

}  // namespace
}  // namespace tidepool::workspace
