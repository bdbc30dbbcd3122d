"""The Dockerfile parser: text to a list of instructions, as BuildKit's parser package
(frontend/dockerfile/parser) reads it, which the legacy builder uses too.

Physical lines become instructions: parser directives at the top, comments dropped, the
escape character at the end of a line continues it (comment and blank lines inside a
continued instruction are skipped), builder flags (`--from=x`) split from the arguments,
JSON exec forms recognised, heredoc bodies (`<<EOF` … `EOF`) read after the line naming
them. What each instruction's arguments mean is commands.py's business.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from sampan.build.dockerfile.shell import DockerfileError, Lexer

KEYWORDS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
# Instructions whose arguments may be a JSON array (BuildKit's parseMaybeJSON[ToList]).
JSON_FORMS = frozenset({"ADD", "COPY", "CMD", "ENTRYPOINT", "RUN", "SHELL", "VOLUME"})
HEREDOC_FORMS = frozenset({"ADD", "COPY", "RUN"})
DIRECTIVES = frozenset({"syntax", "escape", "check"})

_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
SPACES = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str   # the body, each line with its newline; leading tabs already gone if chomp
    expand: bool   # False when the delimiter was quoted (<<'EOF'): no substitution
    chomp: bool    # <<-EOF


@dataclass
class Instruction:
    keyword: str                          # upper case, e.g. "COPY"
    rest: str                             # the arguments after the flags, continuations joined
    flags: list[tuple[str, str | None]]   # ("from", "builder"), ("link", None), in order
    json: list[str] | None                # the exec form when `rest` is a JSON array of strings
    heredocs: list[Heredoc]
    line: int                             # 1-based, first physical line
    end_line: int                         # last physical line (heredoc bodies included)
    original: str                         # what the legacy builder prints after "Step N/M : "
    escape: str = "\\"                    # the file's escape character (ENV/LABEL/ARG words)


@dataclass
class Dockerfile:
    directives: dict[str, str]
    escape: str
    instructions: list[Instruction]
    warnings: list[str] = field(default_factory=list)


class _Directives:
    """The parser directives at the top of the file; the first line that is not one ends them."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}
        self.escape = "\\"
        self.done = False
        self._set_continuation()

    def _set_continuation(self) -> None:
        # The escape character as the last non-blank one continues the line, unless it is
        # itself escaped (BuildKit's regexp, which cannot see an escaped escape before that).
        e = re.escape(self.escape)
        self.continuation = re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")

    def offer(self, text: str, line: int) -> None:
        if self.done:
            return
        if not text.startswith("#"):
            self.done = True
            return
        match = _DIRECTIVE.match(text[1:].lstrip())
        key = match.group(1).lower() if match else ""
        if key not in DIRECTIVES:
            self.done = True  # an unknown directive is a comment and ends the directives
            return
        if key in self.found:
            raise DockerfileError(f"only one {key} parser directive can be used", line)
        value = match.group(2)  # type: ignore[union-attr]
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\", line)
            self.escape = value
            self._set_continuation()
        self.found[key] = value

    def strip_continuation(self, text: str) -> tuple[str, bool]:
        """(text without its continuation character, whether the instruction ends here)."""
        if self.continuation.search(text):
            return self.continuation.sub(r"\1", text), False
        return text, True


def _is_comment(raw: str) -> bool:
    return raw.rstrip("\r\n").lstrip().startswith("#")


def _strip_comment(text: str) -> str:
    return "" if text.startswith("#") else text


def split_flags(text: str) -> tuple[list[str], str]:
    """The leading `--flag[=value]` words of `text` (quotes and \\ escapes removed) and the
    rest; `--` alone ends the flags. BuildKit's extractBuilderFlags."""
    words: list[str] = []
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return words, ""
        if not text.startswith("--", pos):
            return words, text[pos:]
        word: list[str] = []
        quote = ""
        while pos < n:
            ch = text[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(text[pos])
                elif ch != "\\":
                    word.append(ch)
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word.append(text[pos])
            else:
                word.append(ch)
            pos += 1
        flag = "".join(word)
        if flag == "--":
            return words, text[pos:].strip()
        words.append(flag)


def parse_json_array(text: str) -> list[str] | None:
    """The JSON array of strings `text` starts with, or None when it is not JSON (shell form
    then). Like Go's json.Decoder, what follows the first value is ignored."""
    text = text.lstrip()
    if not text.startswith("["):
        return None
    try:
        value, _end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError(NOT_STRING_ARRAY)
    return value


def _heredocs_named(line: str) -> list[Heredoc]:
    """The heredocs a line opens (`<<EOF`, `<<-EOF`, `<<'EOF'`, several per line), without
    their bodies. BuildKit lexes the line keeping quotes and escapes, then each word."""
    try:
        words = Lexer(raw_quotes=True, raw_escapes=True, skip_unset=True).words(line, {})
    except DockerfileError:
        return []
    found = []
    for word in words:
        match = _HEREDOC.match(word)
        if not match or not match.group(3):
            continue
        rest = match.group(3)
        plain = Lexer(skip_unset=True).words(rest, {})
        if len(plain) != 1:
            continue
        raw = Lexer(skip_unset=True, raw_quotes=True).words(rest, {})
        quoted = raw[0].count("'") + raw[0].count('"') != plain[0].count("'") + plain[0].count('"')
        found.append(Heredoc(name=plain[0], content="", expand=not quoted, chomp=match.group(2) == "-"))
    return found


def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = SPACES.split(line.strip(), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    flags, rest = split_flags(parts[1])
    return parts[0], flags, rest.strip()


def _flag_pairs(words: list[str]) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, eq, value = word[2:].partition("=")
        pairs.append((name, value if eq else None))
    return pairs


def _json_of(keyword: str, rest: str, line: int) -> list[str] | None:
    if keyword == "HEALTHCHECK":
        # HEALTHCHECK [flags] CMD ["exec", "form"]: the array after the type word.
        parts = rest.split(None, 1)
        rest = parts[1] if len(parts) == 2 else ""
    elif keyword not in JSON_FORMS:
        return None
    try:
        return parse_json_array(rest)
    except ValueError as exc:
        raise DockerfileError(str(exc), line) from None


def instruction_from_line(text: str, line: int, end_line: int, escape: str) -> Instruction:
    """One logical line (continuations joined) as an Instruction without heredoc bodies."""
    word, flag_words, rest = _split_command(text)
    keyword = word.upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(f"unknown instruction: {keyword}", line)
    return Instruction(keyword=keyword, rest=rest, flags=_flag_pairs(flag_words),
                       json=_json_of(keyword, rest, line), heredocs=[], line=line,
                       end_line=end_line, original=text.strip(), escape=escape)


def _may_have_heredocs(ins: Instruction) -> bool:
    keyword, rest = ins.keyword, ins.rest
    if keyword == "ONBUILD":
        trigger = _split_command(rest) if rest else ("", [], "")
        keyword, rest = trigger[0].upper(), trigger[2]
        if keyword in JSON_FORMS and _safe_json(rest) is not None:
            return False
        return keyword in HEREDOC_FORMS
    return keyword in HEREDOC_FORMS and ins.json is None


def _safe_json(rest: str) -> list[str] | None:
    try:
        return parse_json_array(rest)
    except ValueError:
        return None


def _physical_lines(text: str) -> list[str]:
    """The lines with their endings; only \n ends a line (a lone \r or \f does not, as in Go)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def parse(text: bytes | str) -> Dockerfile:
    """A Dockerfile's text as its directives and instructions; DockerfileError names the line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    lines = _physical_lines(text)
    directives = _Directives()
    instructions: list[Instruction] = []
    warnings: list[str] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        start = i
        first = raw.rstrip("\r\n").lstrip()
        directives.offer(first, start)
        logical, ended = directives.strip_continuation(_strip_comment(first))
        if ended and logical == "":
            continue
        empty_continuation = False
        while not ended and i < len(lines):
            raw = lines[i]
            i += 1
            body = raw.rstrip("\r\n")
            directives.offer(body, i)
            if _is_comment(raw):
                continue
            if not body.strip():
                empty_continuation = True
                continue
            more, ended = directives.strip_continuation(body)
            logical += more
        if empty_continuation:
            warnings.append(f"[WARNING]: Empty continuation line found in:\n    {logical}")
        ins = instruction_from_line(logical, start, i, directives.escape)
        if _may_have_heredocs(ins):
            for doc in _heredocs_named(logical):
                body_lines: list[str] = []
                while True:
                    if i >= len(lines):
                        raise DockerfileError("unterminated heredoc", start)
                    raw = lines[i]
                    i += 1
                    candidate = raw.rstrip("\r\n")
                    if (candidate.lstrip("\t") if doc.chomp else candidate) == doc.name:
                        break
                    body_lines.append(raw)
                content = "".join(body_lines)
                if doc.chomp:
                    content = _LEADING_TABS.sub("", content)
                ins.heredocs.append(Heredoc(doc.name, content, doc.expand, doc.chomp))
            ins.end_line = i
        instructions.append(ins)
    if warnings:
        warnings.append("[WARNING]: Empty continuation lines will become errors in a future release.")
    if not instructions:
        raise DockerfileError("file with no instructions", max(len(lines), 1))
    return Dockerfile(directives=dict(directives.found), escape=directives.escape,
                      instructions=instructions, warnings=warnings)
