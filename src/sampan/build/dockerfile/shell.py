"""Dockerfile variable substitution and word splitting, as BuildKit's shell lexer does it
(frontend/dockerfile/shell/lex.go): quotes, escapes, `$V`, `${V}` and the `${V<op>word}`
forms `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`.

This is not a shell: no command substitution, no arithmetic, no field splitting other than
on unquoted whitespace. The legacy builder and BuildKit run every substituting instruction's
words through it; RUN's text goes to the image's shell untouched.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

from sampan import errors


class DockerfileError(errors.Invalid):
    """A Dockerfile that cannot be parsed or evaluated; str() is one line naming the line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"Dockerfile:{line}: {message}" if line is not None else message)

    def at(self, line: int) -> "DockerfileError":
        """This error located at `line` (errors of the lexer do not know where they are)."""
        return self if self.line is not None else DockerfileError(self.message, line)


def go_quote(text: str) -> str:
    """`text` the way Go's %q prints it, for messages matching Docker's."""
    return json.dumps(text, ensure_ascii=False)


class _Words:
    """Accumulates the fields of ProcessWords: unquoted whitespace separates them; an empty
    quoted string makes no field (as in BuildKit, unlike sh)."""

    def __init__(self) -> None:
        self.buf = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append(self.buf)
                self.buf = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.buf:
            self.words.append(self.buf)
            self.buf = ""
        return self.words


class Lexer:
    """One configuration of the lexer. The options are BuildKit's: `raw_quotes` keeps the
    quote characters in the output, `raw_escapes` keeps escape characters, `skip_unset`
    leaves references to unset variables as written, `quotes=False` treats quotes as
    ordinary characters (heredoc bodies: only `$` is special there)."""

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False, quotes: bool = True) -> None:
        if escape not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.quotes = quotes

    def word(self, text: str, env: Mapping[str, str]) -> str:
        """ProcessWord: `text` with its substitutions made and quotes removed; whitespace kept."""
        return _Scan(self, text, env).run()[0]

    def words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """ProcessWords: the same, split into fields on unquoted whitespace."""
        return _Scan(self, text, env).run()[1]


class _Scan:
    """The state of one pass over one text."""

    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]) -> None:
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env
        self.raw_escapes = lexer.raw_escapes

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def run(self) -> tuple[str, list[str]]:
        try:
            return self.until("", self.lx.raw_escapes)
        except _LexError as exc:
            raise DockerfileError(f"failed to process {go_quote(self.text)}: {exc}") from None

    def until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan to `stop` (consumed) or, with stop "", to the end."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._until(stop)
        finally:
            self.raw_escapes = saved

    def _until(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                value = self.dollar()
                result.append(value)
                words.add_string(value)
            elif self.lx.quotes and ch in "'\"":
                value = self.single_quote() if ch == "'" else self.double_quote()
                result.append(value)
                words.add_raw(value)
            else:
                ch = self.next()
                if ch == self.lx.escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break  # an escape at the very end is dropped
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        quote = self.next()
        out = [quote] if self.lx.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        # Literal except $ and the escape, which only escapes " $ and itself (as sh does).
        quote = self.next()
        out = [quote] if self.lx.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.lx.escape:
                nxt = self.peek()
                if self.raw_escapes:
                    out.append(ch)
                if not nxt:
                    continue
                if nxt in ('"', "$", self.lx.escape):
                    ch = self.next()
                elif self.raw_escapes:
                    continue  # already kept
            out.append(ch)

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lx.skip_unset else ""
            return value
        self.next()  # the {
        first = self.peek()
        if not first:
            raise _LexError("syntax error: missing '}'")
        if first in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if not ch:
            raise _LexError("syntax error: missing '}'")
        if ch == "}":
            value = self.lookup(name)
            if value is None:
                return "${%s}" % name if self.lx.skip_unset else ""
            return value
        if ch == "/":
            return self.replace(name)
        op = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            op += ch
        if not ch or ch not in "+-?#%":
            raise _LexError(f"unsupported modifier ({op}) in substitution")
        pattern_op = ch in "#%"
        if null_is_unset and pattern_op:
            raise _LexError(f"unsupported modifier ({op}) in substitution")
        word = self.closing(pattern_op)
        value = self.lookup(name)
        if value is None and self.lx.skip_unset:
            return "${%s%s%s}" % (name, op, word)
        unset = value is None or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value  # type: ignore[return-value]
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if value is None:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        # % / # remove the shortest matching suffix / prefix, %% / ## the longest.
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        value = value or ""
        if ch == "%":
            return _trim_suffix(word, value, greedy)
        return _trim_prefix(word, value, greedy)

    def closing(self, raw_escapes: bool) -> str:
        """The word of a ${V<op>word}, up to its }."""
        try:
            return self.until("}", raw_escapes)[0]
        except _LexError:
            if not self.peek():
                raise _LexError("syntax error: missing '}'") from None
            raise

    def replace(self, name: str) -> str:
        """${V/pattern/replacement} (first match) and ${V//pattern/replacement} (every one)."""
        every = self.peek() == "/"
        if every:
            self.next()
        try:
            pattern = self.until("/", True)[0]
        except _LexError:
            if not self.peek():
                raise _LexError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self.closing(True)
        value = self.lookup(name)
        if value is None and self.lx.skip_unset:
            return "${%s/%s/%s}" % (name, pattern, replacement)
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        return regex.sub(lambda _m: replacement, value or "", count=0 if every else 1)

    def name(self) -> str:
        """A variable name: letters, digits and _, or all digits, or one special parameter."""
        start = self.pos
        ch = self.peek()
        if ch.isdecimal():
            while self.peek().isdecimal():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in "@*#?-$!0":
            self.next()
            return ch
        while (ch := self.peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.next()
        return self.text[start:self.pos]


class _LexError(Exception):
    """Raised inside a scan; becomes one DockerfileError naming the text."""


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard pattern (`*`, `?`, `\\` escapes; no brackets) as a regular expression."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            nxt = pattern[i] if i < len(pattern) else ""
            if nxt in ("}", "/"):
                continue  # escaped to get through ${...}, not part of the pattern
            if nxt not in ("*", "?", "\\"):
                raise _LexError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append(re.escape(nxt))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))  # no DOTALL: Go's . stops at newlines too


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy=greedy, anchored=True).match(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    """The pattern read backwards, escapes staying in front of what they escape."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i:i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # The shortest rightmost match is the shortest leftmost one of the reversed strings.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def expand(word: str, env: Mapping[str, str], escape: str = "\\", *, quotes: bool = True) -> str:
    """BuildKit's ProcessWord; `quotes=False` for heredoc bodies, where only $ is special."""
    return Lexer(escape, quotes=quotes).word(word, env)


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """BuildKit's ProcessWords: substituted, then split on unquoted whitespace."""
    return Lexer(escape).words(text, env)
