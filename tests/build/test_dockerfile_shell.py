"""Variable substitution as BuildKit's shell lexer does it (frontend/dockerfile/shell/lex.go,
whose test table these cases follow)."""
from __future__ import annotations

import pytest

from sampan.build.dockerfile import DockerfileError, expand, expand_words

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": "", "FILE": "archive.tar.gz",
       "PATHV": "/usr/local/bin:/usr/bin", "SPACED": "a  b"}


@pytest.mark.parametrize("word,expected", [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ('he"ll"o', "hello"),
    ("he\\'llo", "he'llo"),
    ("'$PWD'", "$PWD"),
    ('"$PWD"', "/home"),
    ("$PWD", "/home"),
    ("${PWD}", "/home"),
    ("\\$PWD", "$PWD"),
    ('"\\$PWD"', "$PWD"),
    ('"\\a"', "\\a"),  # inside double quotes \ only escapes " $ and itself
    ('"\\\\"', "\\"),
    ("$PWD/x", "/home/x"),
    ("${PWD}x", "/homex"),
    ("$PWDx", ""),
    ("$", "$"),
    ("a$", "a$"),
    ("$1", ""),
    ("$KOREAN", "한국어"),
    ("${UNSET:-default}", "default"),
    ("${NULL:-default}", "default"),
    ("${NULL-default}", ""),
    ("${UNSET-default}", "default"),
    ("${PWD:-default}", "/home"),
    ("${PWD:+alt}", "alt"),
    ("${NULL:+alt}", ""),
    ("${NULL+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-${SHELL}}", "bash"),
    ("${UNSET:-'a b'}", "a b"),
    ("${UNSET:-a\\}b}", "a}b"),
    ("${FILE#*.}", "tar.gz"),
    ("${FILE##*.}", "gz"),
    ("${FILE%.*}", "archive.tar"),
    ("${FILE%%.*}", "archive"),
    ("${FILE#archive}", ".tar.gz"),
    ("${FILE#nomatch}", "archive.tar.gz"),
    ("${FILE%.g?}", "archive.tar"),
    ("${PATHV#*:}", "/usr/bin"),
    ("${PATHV%:*}", "/usr/local/bin"),
    ("${UNSET#x}", ""),
    ("${FILE/tar/zip}", "archive.zip.gz"),
    ("${PATHV//\\/usr/X}", "X/local/bin:X/bin"),
    ("${SPACED}", "a  b"),
])
def test_expand(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


@pytest.mark.parametrize("text,expected", [
    ("a b  c", ["a", "b", "c"]),
    ("'a b' c", ["a b", "c"]),
    ('"a $SPACED" c', ["a a  b", "c"]),
    ("$SPACED", ["a", "b"]),  # an unquoted value is split too
    ("x${NULL}y z", ["xy", "z"]),
    ("''", []),
    ("a\\ b", ["a b"]),
])
def test_expand_words(text: str, expected: list[str]) -> None:
    assert expand_words(text, ENV) == expected


def test_backtick_escape() -> None:
    assert expand("`$PWD", ENV, "`") == "$PWD"
    assert expand("C:\\path", ENV, "`") == "C:\\path"
    assert expand('"a`"b"', ENV, "`") == 'a"b'


def test_heredoc_body_keeps_quotes() -> None:
    assert expand("echo '$PWD' \"$SHELL\"\n", ENV, quotes=False) == "echo '/home' \"bash\"\n"


@pytest.mark.parametrize("word,message", [
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${NULL:?}", "NULL: is not allowed to be empty"),
    ("${UNSET:?you must set it}", "UNSET: you must set it"),
    ("${PWD", "syntax error: missing '}'"),
    ("${PWD:-x", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:x}", "syntax error: bad substitution"),
    ("${PWD!x}", "unsupported modifier (!) in substitution"),
    ("${PWD:#x}", "unsupported modifier (:#) in substitution"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        expand(word, ENV)
    assert str(caught.value).endswith(message)
    assert str(caught.value).startswith("failed to process ")
    assert "\n" not in str(caught.value)


def test_null_is_not_unset_for_question_mark() -> None:
    assert expand("${NULL?}", ENV) == ""
