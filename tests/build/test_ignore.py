"""build.ignore: .dockerignore patterns with moby/patternmatcher's semantics, Go globs."""
from __future__ import annotations

import pytest

from sampan.build.ignore import Matcher, PatternError, glob_regex, has_wildcards, read_dockerignore

# (pattern, path, excluded) — cases from moby/patternmatcher's own table
PATTERN_CASES = [
    ("**", "file", True), ("**", "dir/file", True), ("**/", "dir/file", True), ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True), ("dir/**", "dir/dir2/file", True), ("**/dir", "dir", True),
    ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False),
    ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    # a pattern naming a directory excludes what is under it; leading / and ./ are cleaned
    ("dir", "dir/sub/file", True), ("/dir", "dir/file", True), ("./dir/", "dir/file", True),
    ("*", "a/b", True), ("*.go", "a/b.go", False), ("**suffix", "xsuffix", True),
]


@pytest.mark.parametrize("pattern,path,excluded", PATTERN_CASES)
def test_patterns_match_as_moby(pattern: str, path: str, excluded: bool) -> None:
    assert Matcher([pattern]).matches(path) is excluded


def test_exceptions_the_last_matching_line_wins() -> None:
    m = Matcher(["*.md", "!README.md", "docs", "!docs/keep/**", "docs/keep/secret"])
    assert m.matches("CHANGES.md")
    assert not m.matches("README.md")
    assert m.matches("docs/a.txt")
    assert not m.matches("docs/keep/b.txt")
    assert m.matches("docs/keep/secret")
    m = Matcher(["!a", "a"])  # an exception before its exclusion changes nothing
    assert m.matches("a")


def test_root_is_never_excluded_and_empty_lines_skip() -> None:
    m = Matcher(["**", "", "   "])
    assert not m.matches(".")
    assert len(m.patterns) == 1
    assert not Matcher([])
    assert not Matcher([]).matches("anything")


def test_prunes_only_without_exception_below() -> None:
    m = Matcher(["sub", "!sub/keep"])
    assert not m.prunes("sub")
    assert m.prunes("other")
    m = Matcher(["*", "!*.go"])  # an exception not spelled under the directory: skipped whole
    assert m.prunes("sub")
    assert Matcher(["x"]).prunes("x")


def test_step_gives_the_archive_walks_answer() -> None:
    m = Matcher(["dir", "!dir/keep"])
    excluded, info = m.step("dir", None)
    assert excluded
    assert m.step("dir/keep", info)[0] is False
    assert m.step("dir/other", info)[0] is True


def test_bad_patterns_are_one_line_errors() -> None:
    for bad in ("[", "a[", "[]", "a\\", "[a-]", "[-a]"):
        with pytest.raises(PatternError, match="syntax error in pattern"):
            Matcher([bad])
    with pytest.raises(PatternError, match='illegal exclusion pattern: "!"'):
        Matcher(["!"])


def test_read_dockerignore(tmp_path) -> None:
    assert read_dockerignore(str(tmp_path)) == []
    (tmp_path / ".dockerignore").write_text(
        "\ufeff# a comment\n*.log\n\n  /abs/path  \n./rel//x/../y\n! keep.log\n #not a comment\n")
    assert read_dockerignore(str(tmp_path)) == ["*.log", "abs/path", "rel/y", "!keep.log", "#not a comment"]


@pytest.mark.parametrize("pattern,name,matched", [
    ("*.txt", "a.txt", True), ("*.txt", "d/a.txt", False), ("?.txt", "ab.txt", False), ("[a-c]x", "bx", True),
    ("[^a-c]x", "bx", False), ("[^a-c]x", "dx", True), ("\\*", "*", True), ("\\*", "a", False),
    ("d/*", "d/x", True), ("[\\]]", "]", True), ("a[z-a]", "ab", False),
])
def test_go_globs(pattern: str, name: str, matched: bool) -> None:
    assert (glob_regex(pattern).match(name) is not None) is matched


def test_wildcard_detection_honours_escapes() -> None:
    assert has_wildcards("a*")
    assert has_wildcards("a[b]")
    assert has_wildcards("a?")
    assert not has_wildcards("plain/name")
    assert not has_wildcards("a\\*")
