"""Typed, validated instructions (BuildKit's frontend/dockerfile/instructions): each keyword's
flags and forms checked, its fields raw (as written) until `expanded(env, escape)`
substitutes variables exactly where the legacy builder does: ADD COPY ENV EXPOSE FROM LABEL
STOPSIGNAL USER VOLUME WORKDIR ARG, and the values of RUN --mount (as BuildKit). RUN CMD
ENTRYPOINT SHELL HEALTHCHECK ONBUILD MAINTAINER are left to the image's shell or later.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sampan.build.dockerfile.arguments import (
    BOOL, STRING, STRINGS, check_flags, cmdline, exactly_one, name_values, parse_duration, parse_mount,
    whitespace_words, words)
from sampan.build.dockerfile.parser import Heredoc, Instruction, instruction_from_line
from sampan.build.dockerfile.shell import DockerfileError, Lexer, expand

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
_HEREDOC_WORD = re.compile(r"^\d*<<-?[^<]+$")
NETWORK_MODES = ("default", "none", "host")


@dataclass
class Command:
    ins: Instruction

    def expanded(self, env: Mapping[str, str], escape: str) -> "Command":
        """A copy with variables substituted where the builder substitutes them."""
        try:
            return self._expanded(_Expander(env, escape))
        except DockerfileError as exc:
            raise exc.at(self.ins.line) from None

    def _expanded(self, x: "_Expander") -> "Command":
        return self  # nothing of this instruction is substituted


class _Expander:
    def __init__(self, env: Mapping[str, str], escape: str) -> None:
        self.env = env
        self.escape = escape

    def __call__(self, word: str) -> str:
        return expand(word, self.env, self.escape)

    def opt(self, word: str | None) -> str | None:
        return None if word is None else self(word)

    def all(self, words: list[str]) -> list[str]:
        return [self(w) for w in words]

    def pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(self(k), self(v)) for k, v in pairs]

    def heredocs(self, docs: list[Heredoc]) -> list[Heredoc]:
        # Bodies are scripts or file contents: only $ is special there (BuildKit's ExpandRaw).
        return [dataclasses.replace(d, content=expand(d.content, self.env, "\\", quotes=False))
                if d.expand else d for d in docs]


@dataclass
class From(Command):
    base: str
    name: str | None
    platform: str | None

    def _expanded(self, x: _Expander) -> "From":
        return dataclasses.replace(self, base=x(self.base), platform=x.opt(self.platform))


@dataclass
class Run(Command):
    # Shell form with heredocs: args is the line as written ("<<EOF", "python3 <<EOF"); when
    # it is one heredoc alone, BuildKit runs that body as the script, else feeds it as a file.
    args: list[str]
    shell_form: bool
    mounts: list[dict[str, Any]]
    network: str | None
    security: str | None
    heredocs: list[Heredoc]

    def _expanded(self, x: _Expander) -> "Run":
        raw = [v for k, v in self.ins.flags if k == "mount"]
        return dataclasses.replace(self, mounts=[parse_mount(m, x) for m in raw])  # type: ignore[arg-type]


@dataclass
class Cmd(Command):
    args: list[str]
    shell_form: bool


@dataclass
class Entrypoint(Command):
    args: list[str]
    shell_form: bool


@dataclass
class Env(Command):
    pairs: list[tuple[str, str]]

    def _expanded(self, x: _Expander) -> "Env":
        return dataclasses.replace(self, pairs=x.pairs(self.pairs))


@dataclass
class Label(Command):
    pairs: list[tuple[str, str]]

    def _expanded(self, x: _Expander) -> "Label":
        return dataclasses.replace(self, pairs=x.pairs(self.pairs))


@dataclass
class Expose(Command):
    ports: list[str]

    def _expanded(self, x: _Expander) -> "Expose":
        return dataclasses.replace(self, ports=x.all(self.ports))


@dataclass
class Copy(Command):
    sources: list[str]          # context (or --from) paths; heredoc sources are in `heredocs`
    dest: str
    chown: str | None
    chmod: str | None
    from_: str | None
    link: bool
    parents: bool
    exclude: list[str]
    heredocs: list[Heredoc]     # COPY <<EOF /dest: the files written from the Dockerfile

    def _expanded(self, x: _Expander) -> "Copy":
        return dataclasses.replace(
            self, sources=x.all(self.sources), dest=x(self.dest), chown=x.opt(self.chown),
            chmod=x.opt(self.chmod), from_=x.opt(self.from_), exclude=x.all(self.exclude),
            heredocs=x.heredocs(self.heredocs))


@dataclass
class Add(Copy):
    checksum: str | None = None
    keep_git_dir: bool = False

    def _expanded(self, x: _Expander) -> "Add":
        copied = super()._expanded(x)
        return dataclasses.replace(copied, checksum=x.opt(self.checksum))  # type: ignore[return-value]


@dataclass
class Volume(Command):
    paths: list[str]

    def _expanded(self, x: _Expander) -> "Volume":
        return dataclasses.replace(self, paths=x.all(self.paths))


@dataclass
class User(Command):
    user: str

    def _expanded(self, x: _Expander) -> "User":
        return dataclasses.replace(self, user=x(self.user))


@dataclass
class Workdir(Command):
    path: str

    def _expanded(self, x: _Expander) -> "Workdir":
        return dataclasses.replace(self, path=x(self.path))


@dataclass
class Arg(Command):
    pairs: list[tuple[str, str | None]]   # (name, default or None)

    def _expanded(self, x: _Expander) -> "Arg":
        return dataclasses.replace(self, pairs=[(x(k), x.opt(v)) for k, v in self.pairs])


@dataclass
class Onbuild(Command):
    expression: str   # the trigger as written (heredoc bodies appended), stored in the image


@dataclass
class Stopsignal(Command):
    signal: str

    def _expanded(self, x: _Expander) -> "Stopsignal":
        return dataclasses.replace(self, signal=x(self.signal))


@dataclass
class Healthcheck(Command):
    test: list[str] | None          # None for HEALTHCHECK NONE, else ["CMD", ...] / ["CMD-SHELL", s]
    interval: float | None = None   # seconds
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None


@dataclass
class Shell(Command):
    args: list[str]


@dataclass
class Maintainer(Command):
    name: str


# --- one parser per keyword ----------------------------------------------------------------------

def _from(ins: Instruction) -> From:
    f = check_flags(ins, {"platform": STRING})
    args = whitespace_words(ins.rest)
    name = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise DockerfileError(f'invalid name for build stage: "{args[2]}", name can\'t start with a number '
                                  "or contain symbols", ins.line)
    elif len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments", ins.line)
    return From(ins, base=args[0], name=name, platform=f["platform"])


def _run(ins: Instruction) -> Run:
    f = check_flags(ins, {"mount": STRINGS, "network": STRING, "security": STRING})
    args, shell_form = cmdline(ins)
    if not args:
        raise DockerfileError("RUN requires at least one argument", ins.line)
    if f["network"] is not None and f["network"] not in NETWORK_MODES:
        raise DockerfileError(f'unsupported network mode "{f["network"]}"', ins.line)
    if f["security"] is not None and f["security"] not in ("sandbox", "insecure"):
        raise DockerfileError(f'unsupported security mode "{f["security"]}"', ins.line)
    try:
        mounts = [parse_mount(m) for m in f["mount"]]
    except DockerfileError as exc:
        raise exc.at(ins.line) from None
    return Run(ins, args=args, shell_form=shell_form, mounts=mounts, network=f["network"],
               security=f["security"], heredocs=list(ins.heredocs) if shell_form else [])


def _cmd(ins: Instruction) -> Cmd:
    check_flags(ins, {})
    return Cmd(ins, *cmdline(ins))


def _entrypoint(ins: Instruction) -> Entrypoint:
    check_flags(ins, {})
    return Entrypoint(ins, *cmdline(ins))


def _env(ins: Instruction) -> Env:
    check_flags(ins, {})
    return Env(ins, pairs=name_values(ins))


def _label(ins: Instruction) -> Label:
    check_flags(ins, {})
    return Label(ins, pairs=name_values(ins))


def _expose(ins: Instruction) -> Expose:
    check_flags(ins, {})
    ports = whitespace_words(ins.rest)
    if not ports:
        raise DockerfileError("EXPOSE requires at least one argument", ins.line)
    return Expose(ins, ports=sorted(ports))


def _sources_and_dest(ins: Instruction) -> tuple[list[str], str, list[Heredoc]]:
    args = list(ins.json) if ins.json is not None else whitespace_words(ins.rest)
    if len(args) < 2:
        raise DockerfileError(f"{ins.keyword} requires at least two arguments, but only one was provided. "
                              "Destination could not be determined.", ins.line)
    *sources, dest = args
    if ins.json is None and _HEREDOC_WORD.match(dest):
        raise DockerfileError(f"{ins.keyword} cannot accept a heredoc as a destination", ins.line)
    by_name = {doc.name: doc for doc in ins.heredocs}
    paths: list[str] = []
    docs: list[Heredoc] = []
    for source in sources:
        name = re.sub(r"^\d*<<-?", "", source)
        if ins.json is None and _HEREDOC_WORD.match(source) and _unquoted(name) in by_name:
            docs.append(by_name[_unquoted(name)])
        else:
            paths.append(source)
    return paths, dest, docs


def _unquoted(word: str) -> str:
    return Lexer(skip_unset=True).word(word, {})


COPY_FLAGS = {"chown": STRING, "chmod": STRING, "from": STRING, "link": BOOL, "parents": BOOL,
              "exclude": STRINGS}
ADD_FLAGS = {"chown": STRING, "chmod": STRING, "link": BOOL, "checksum": STRING, "keep-git-dir": BOOL,
             "exclude": STRINGS}


def _copy(ins: Instruction) -> Copy:
    f = check_flags(ins, COPY_FLAGS)
    sources, dest, docs = _sources_and_dest(ins)
    return Copy(ins, sources=sources, dest=dest, chown=f["chown"], chmod=f["chmod"], from_=f["from"],
                link=f["link"], parents=f["parents"], exclude=f["exclude"], heredocs=docs)


def _add(ins: Instruction) -> Add:
    f = check_flags(ins, ADD_FLAGS)
    sources, dest, docs = _sources_and_dest(ins)
    return Add(ins, sources=sources, dest=dest, chown=f["chown"], chmod=f["chmod"], from_=None,
               link=f["link"], parents=False, exclude=f["exclude"], heredocs=docs,
               checksum=f["checksum"], keep_git_dir=f["keep-git-dir"])


def _volume(ins: Instruction) -> Volume:
    check_flags(ins, {})
    paths = list(ins.json) if ins.json is not None else whitespace_words(ins.rest)
    if not paths:
        raise DockerfileError("VOLUME requires at least one argument", ins.line)
    paths = [p.strip() for p in paths]
    if "" in paths:
        raise DockerfileError("VOLUME specified can not be an empty string", ins.line)
    return Volume(ins, paths=paths)


def _user(ins: Instruction) -> User:
    check_flags(ins, {})
    return User(ins, user=exactly_one(ins))


def _workdir(ins: Instruction) -> Workdir:
    check_flags(ins, {})
    return Workdir(ins, path=exactly_one(ins))


def _stopsignal(ins: Instruction) -> Stopsignal:
    check_flags(ins, {})
    return Stopsignal(ins, signal=exactly_one(ins))


def _maintainer(ins: Instruction) -> Maintainer:
    check_flags(ins, {})
    return Maintainer(ins, name=exactly_one(ins))


def _arg(ins: Instruction) -> Arg:
    check_flags(ins, {})
    arg_words = words(ins.rest, ins.escape)
    if not arg_words:
        raise DockerfileError("ARG requires at least one argument", ins.line)
    pairs: list[tuple[str, str | None]] = []
    for word in arg_words:
        key, eq, value = word.partition("=")
        if not key:
            raise DockerfileError("ARG names can not be blank", ins.line)
        pairs.append((key, value if eq else None))
    return Arg(ins, pairs=pairs)


def _onbuild(ins: Instruction) -> Onbuild:
    check_flags(ins, {})
    if not ins.rest:
        raise DockerfileError("ONBUILD requires at least one argument", ins.line)
    trigger = ins.rest.split(None, 1)[0].upper()
    if trigger == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", ins.line)
    if trigger in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger", ins.line)
    inner = instruction_from_line(ins.rest, ins.line, ins.end_line, ins.escape)
    inner.heredocs = list(ins.heredocs)
    command(inner)  # the trigger must be a valid instruction now, not when a child image builds
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", ins.original)
    for doc in ins.heredocs:
        expression += "\n" + doc.content + doc.name
    return Onbuild(ins, expression=expression)


def _interval(ins: Instruction, name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise DockerfileError(str(exc), ins.line) from None
    if seconds != 0 and seconds < 0.001:
        raise DockerfileError(f'Interval "{name}" cannot be less than 1ms', ins.line)
    return seconds


def _healthcheck(ins: Instruction) -> Healthcheck:
    parts = ins.rest.split(None, 1)
    if not parts:
        raise DockerfileError("HEALTHCHECK requires at least one argument", ins.line)
    kind, args = parts[0].upper(), (parts[1] if len(parts) == 2 else "")
    if kind == "NONE":
        check_flags(ins, {})
        if args:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments", ins.line)
        return Healthcheck(ins, test=None)
    f = check_flags(ins, {"interval": STRING, "timeout": STRING, "start-period": STRING,
                     "start-interval": STRING, "retries": STRING})
    if kind != "CMD":
        raise DockerfileError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)', ins.line)
    test = ["CMD", *ins.json] if ins.json is not None else ["CMD-SHELL", args]
    if len(test) == 1 or test == ["CMD-SHELL", ""]:
        raise DockerfileError("Missing command after HEALTHCHECK CMD", ins.line)
    retries = None
    if f["retries"]:
        try:
            retries = int(f["retries"])
        except ValueError:
            raise DockerfileError(f'strconv.ParseInt: parsing "{f["retries"]}": invalid syntax', ins.line) from None
        if retries < 1:
            raise DockerfileError(f"--retries must be at least 1 (not {retries})", ins.line)
    return Healthcheck(ins, test=test, interval=_interval(ins, "interval", f["interval"]),
                       timeout=_interval(ins, "timeout", f["timeout"]),
                       start_period=_interval(ins, "start-period", f["start-period"]),
                       start_interval=_interval(ins, "start-interval", f["start-interval"]), retries=retries)


def _shell(ins: Instruction) -> Shell:
    check_flags(ins, {})
    if ins.json is None:
        raise DockerfileError("SHELL requires the arguments to be in JSON form", ins.line)
    if not ins.json:
        raise DockerfileError("SHELL requires at least one argument", ins.line)
    return Shell(ins, args=list(ins.json))


_PARSERS: dict[str, Callable[[Instruction], Command]] = {
    "FROM": _from, "RUN": _run, "CMD": _cmd, "ENTRYPOINT": _entrypoint, "ENV": _env, "LABEL": _label,
    "EXPOSE": _expose, "COPY": _copy, "ADD": _add, "VOLUME": _volume, "USER": _user, "WORKDIR": _workdir,
    "STOPSIGNAL": _stopsignal, "MAINTAINER": _maintainer, "ARG": _arg, "ONBUILD": _onbuild,
    "HEALTHCHECK": _healthcheck, "SHELL": _shell,
}


def command(ins: Instruction) -> Command:
    """The typed command of one instruction; DockerfileError naming ins.line if it is malformed."""
    parser = _PARSERS.get(ins.keyword)
    if parser is None:
        raise DockerfileError(f"unknown instruction: {ins.keyword}", ins.line)
    return parser(ins)
