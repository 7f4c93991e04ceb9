#include "workspace/ignore.h"

#include <gtest/gtest.h>

namespace tidepool::workspace {
namespace {

bool Ignored(const std::string& text, const std::string& path, bool is_dir = false) {
  IgnoreStack s;
  s.Push(IgnoreList::Parse("", text));
  return s.Ignored(path, is_dir);
}

TEST(Ignore, ComponentGlobs) {
  EXPECT_TRUE(MatchComponent("*.o", "a.o"));
  EXPECT_TRUE(MatchComponent("*.o", ".o"));
  EXPECT_FALSE(MatchComponent("*.o", "a.oo"));
  EXPECT_TRUE(MatchComponent("a?c", "abc"));
  EXPECT_FALSE(MatchComponent("a?c", "ac"));
  EXPECT_TRUE(MatchComponent("[a-c]x", "bx"));
  EXPECT_FALSE(MatchComponent("[a-c]x", "dx"));
  EXPECT_TRUE(MatchComponent("[!a-c]x", "dx"));
  EXPECT_FALSE(MatchComponent("[!a-c]x", "ax"));
  EXPECT_TRUE(MatchComponent("\\*", "*"));
  EXPECT_FALSE(MatchComponent("\\*", "a"));
  EXPECT_TRUE(MatchComponent("*a*b*", "xxaxxbxx"));
  EXPECT_FALSE(MatchComponent("*a*b*", "xxbxxaxx"));
  EXPECT_TRUE(MatchComponent("\xff*", "\xff\xfe.bin"));  // bytes, not characters
  EXPECT_TRUE(MatchComponent("[", "["));
}

TEST(Ignore, CommentsBlankLinesAndEscapes) {
  EXPECT_FALSE(Ignored("# a comment\n\n   \n", "# a comment"));
  EXPECT_TRUE(Ignored("\\#file\n", "#file"));
  EXPECT_TRUE(Ignored("\\!important\n", "!important"));
  EXPECT_TRUE(Ignored("trailing   \n", "trailing"));
  EXPECT_TRUE(Ignored("crlf\r\n", "crlf"));
}

TEST(Ignore, UnanchoredMatchesTheNameAtAnyDepth) {
  EXPECT_TRUE(Ignored("*.o\n", "a.o"));
  EXPECT_TRUE(Ignored("*.o\n", "src/deep/a.o"));
  EXPECT_FALSE(Ignored("*.o\n", "src/a.c"));
  EXPECT_TRUE(Ignored("build\n", "x/build", true));
}

TEST(Ignore, NegationLastMatchWins) {
  const std::string rules = "*.log\n!keep.log\n";
  EXPECT_TRUE(Ignored(rules, "a.log"));
  EXPECT_FALSE(Ignored(rules, "keep.log"));
  EXPECT_FALSE(Ignored(rules, "sub/keep.log"));
  EXPECT_TRUE(Ignored("!keep.log\n*.log\n", "keep.log"));  // order matters
}

TEST(Ignore, SlashAnchorsToTheFilesDirectory) {
  EXPECT_TRUE(Ignored("/out\n", "out", true));
  EXPECT_FALSE(Ignored("/out\n", "src/out", true));
  EXPECT_TRUE(Ignored("doc/*.html\n", "doc/a.html"));
  EXPECT_FALSE(Ignored("doc/*.html\n", "x/doc/a.html"));
  EXPECT_FALSE(Ignored("doc/*.html\n", "doc/sub/a.html"));  // '*' never matches '/'
}

TEST(Ignore, TrailingSlashIsDirectoriesOnly) {
  EXPECT_TRUE(Ignored("cache/\n", "cache", true));
  EXPECT_FALSE(Ignored("cache/\n", "cache", false));
  EXPECT_TRUE(Ignored("cache/\n", "a/cache", true));  // still unanchored
}

TEST(Ignore, DoubleStar) {
  EXPECT_TRUE(Ignored("**/foo\n", "foo"));
  EXPECT_TRUE(Ignored("**/foo\n", "a/b/foo"));
  EXPECT_TRUE(Ignored("**/foo/bar\n", "a/foo/bar"));
  EXPECT_TRUE(Ignored("**/foo/bar\n", "foo/bar"));
  EXPECT_FALSE(Ignored("**/foo/bar\n", "foo/x/bar"));
  EXPECT_TRUE(Ignored("abc/**\n", "abc/x"));
  EXPECT_TRUE(Ignored("abc/**\n", "abc/x/y"));
  EXPECT_FALSE(Ignored("abc/**\n", "abc", true));  // what is inside, not abc itself
  EXPECT_TRUE(Ignored("a/**/b\n", "a/b"));
  EXPECT_TRUE(Ignored("a/**/b\n", "a/x/b"));
  EXPECT_TRUE(Ignored("a/**/b\n", "a/x/y/b"));
  EXPECT_FALSE(Ignored("a/**/b\n", "a/x/y/c"));
  EXPECT_FALSE(Ignored("a/**/b\n", "z/a/b"));
}

TEST(Ignore, NestedFilesApplyBelowTheirDirectoryAndWinOverTheirAncestors) {
  IgnoreStack s;
  s.Push(IgnoreList::Parse("", "*.tmp\n"));
  s.Push(IgnoreList::Parse("sub", "!keep.tmp\n/local\n"));
  EXPECT_TRUE(s.Ignored("x.tmp", false));
  EXPECT_TRUE(s.Ignored("sub/x.tmp", false));
  EXPECT_FALSE(s.Ignored("sub/keep.tmp", false));
  EXPECT_TRUE(s.Ignored("keep.tmp", false));      // the nested file says nothing outside sub
  EXPECT_TRUE(s.Ignored("sub/local", true));      // anchored to sub
  EXPECT_FALSE(s.Ignored("local", true));
  EXPECT_FALSE(s.Ignored("sub/deeper/local", true));
  EXPECT_FALSE(s.Ignored("subway/local", true));  // "sub" is a directory name, not a prefix
  s.Truncate(1);
  EXPECT_TRUE(s.Ignored("sub/keep.tmp", false));
}

TEST(Ignore, NothingIsIgnoredByDefaultNotEvenGitButAPatternCanSayIt) {
  IgnoreStack none;
  EXPECT_FALSE(none.Ignored(".git", true));
  EXPECT_FALSE(Ignored("*.o\n", ".git", true));
  EXPECT_TRUE(Ignored(".git\n", ".git", true));
}

}  // namespace
}  // namespace tidepool::workspace
