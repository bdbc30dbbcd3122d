"""Path patterns as Docker reads them: ``.dockerignore`` files (moby/patternmatcher's
``ignorefile.ReadAll`` and ``Matcher``, also used for COPY/ADD ``--exclude``) and Go's
``filepath.Match`` globs for COPY/ADD sources.

A ``.dockerignore`` pattern is cleaned (``./a`` → ``a``, ``/a`` → ``a``), ``**`` matches any
number of directories, a ``!`` line re-includes what earlier lines excluded (the last line
that matches wins), and a pattern matching a directory excludes everything under it. Paths
are relative to the context root, with ``/`` separators.
"""
from __future__ import annotations

import os
import posixpath
import re
from typing import Iterable

from .. import errors

_UTF8_BOM = "\ufeff"
# Characters that mean something in a regular expression but nothing in a Go glob: escaped
# when a pattern becomes a regular expression (moby/patternmatcher's shouldEscape).
_REGEX_ONLY = set(".+()|{}$")


class PatternError(errors.Invalid):
    """A malformed pattern (an unclosed ``[``, a trailing ``\\``); one line."""


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` for ``/`` paths (posixpath.normpath keeps a leading ``//``)."""
    out = posixpath.normpath(path) if path else "."
    return "/" + out.lstrip("/") if out.startswith("//") else out


# ----------------------------------------------------------------------------- Go globs

def _class_end(pattern: str, start: int) -> tuple[str, int]:
    """The regular expression for the ``[...]`` class opening at ``start`` and the index
    after it; Go's rules: ``^`` negates, ranges ``lo-hi``, ``\\`` escapes, no empty class."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[str] = []
    count = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and count:
            return ("[^" if negated else "[") + "".join(ranges) + "]" if ranges else \
                ("[\\s\\S]" if negated else "(?!)"), i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if i < len(pattern) and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        if lo <= hi:  # Go accepts an inverted range; it matches nothing
            ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
        count += 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise PatternError(f"syntax error in pattern: {pattern}")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise PatternError(f"syntax error in pattern: {pattern}")
    return pattern[i], i + 1


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match(pattern, name)`` as a compiled regular expression: ``*`` and
    ``?`` never match ``/``; raises PatternError where Go returns ErrBadPattern."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            cls, i = _class_end(pattern, i)
            out.append(cls)
        elif ch == "\\":
            if i + 1 >= len(pattern):
                raise PatternError(f"syntax error in pattern: {pattern}")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def has_wildcards(path: str) -> bool:
    """Whether a COPY source is a glob (moby's containsWildcards: ``\\`` escapes one char)."""
    i = 0
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] in "*?[":
            return True
        i += 1
    return False


# ----------------------------------------------------------------------------- .dockerignore

class _Pattern:
    """One cleaned pattern and how it matches: exactly, by prefix (``a/**``), by suffix
    (``**/a``) or by regular expression — moby's matchType, kept because the prefix and
    suffix kinds match a little more than their regular expression would (``**a`` matches
    ``ba``)."""

    __slots__ = ("text", "exception", "kind", "regex")

    def __init__(self, text: str, exception: bool) -> None:
        self.text = text
        self.exception = exception
        glob_regex(text)  # Go's syntax check (filepath.Match(p, ".")) before use
        self.kind, self.regex = _compile(text)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """moby/patternmatcher's Pattern.compile: the match kind and, for "regex", the expression."""
    out = ["^"]
    kind = "exact"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        first = i == 0
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":  # `**/` is taken as `**`
                    i += 1
                if i >= n:  # a trailing `**` accepts everything, as .gitignore
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regex"
                else:
                    out.append("(.*/)?")
                    kind = "regex"
                if first:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch in _REGEX_ONLY:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
                kind = "regex"
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regex"
        else:
            out.append(ch)  # raw, as moby passes it to Go's regexp (`^` inside a class negates)
    if kind != "regex":
        return kind, None
    try:
        return kind, re.compile("".join(out) + "$", re.DOTALL)
    except re.error:
        raise PatternError(f"syntax error in pattern: {pattern}") from None


def _normalise(line: str) -> str | None:
    """A pattern as ignorefile.ReadAll and patternmatcher.New leave it; None for nothing."""
    p = line.strip()
    if not p:
        return None
    exception = p.startswith("!")
    if exception:
        p = p[1:].strip()
        if not p:
            raise PatternError('illegal exclusion pattern: "!"')
    p = clean(p)
    if len(p) > 1 and p.startswith("/"):
        p = p[1:]
    return "!" + p if exception else p


class Matcher:
    """A list of patterns; ``matches(path)`` is moby's MatchesOrParentMatches: the last
    pattern that matches the path or one of its parent directories decides."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: list[_Pattern] = []
        for line in patterns:
            p = _normalise(line)
            if p is None:
                continue
            exception = p.startswith("!")
            self.patterns.append(_Pattern(p[1:] if exception else p, exception))
        self.has_exceptions = any(p.exception for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """Whether the context path (``a/b``) is excluded."""
        if not self.patterns:
            return False
        path = clean(path)
        if path == ".":
            return False  # the context root itself is never excluded
        parents: list[str] = []
        head = path
        while True:
            head = posixpath.dirname(head)
            if not head:
                break
            parents.append(head)
        parents.reverse()
        matched = False
        for pattern in self.patterns:
            if pattern.exception != matched:
                continue  # only an exception can change an excluded path, only an inclusion an included one
            hit = pattern.match(path) or any(pattern.match(parent) for parent in parents)
            if hit:
                matched = not pattern.exception
        return matched

    def step(self, path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
        """Whether ``path`` is excluded, given what its parent directory's call returned
        (None for a top-level name): moby's MatchesUsingParentResults, the variant the docker
        CLI's archive walk uses to decide what the context holds. Returns the per-pattern
        results its children need."""
        matched = False
        info = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit:
                if pattern.exception != matched:
                    continue
                hit = pattern.match(path)
            info[i] = hit
            if hit:
                matched = not pattern.exception
        return matched, info

    def prunes(self, directory: str) -> bool:
        """Whether an excluded directory can be skipped whole: no exception pattern names
        a path under it (moby's archive walk descends into it otherwise, for the files an
        exception re-includes)."""
        if not self.has_exceptions:
            return True
        prefix = clean(directory) + "/"
        return not any(p.exception and (p.text + "/").startswith(prefix) for p in self.patterns)


def read_dockerignore(root: str, name: str = ".dockerignore") -> list[str]:
    """The patterns of ``root/.dockerignore`` (none if it is missing), normalised as
    ignorefile.ReadAll does: BOM and comment lines dropped, ``!`` kept, paths cleaned."""
    try:
        with open(os.path.join(root, name), encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise PatternError(f"cannot read {name}: {e.strerror}") from None
    if text.startswith(_UTF8_BOM):
        text = text[1:]
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        p = _normalise(line)
        if p is not None:
            out.append(p)
    return out
